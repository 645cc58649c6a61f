"""Calls through ``host.invoker`` with a trusted in-process plugin serving the hook: values
validated by the contract, failures named by kind, one ``invocations`` row per call with
secrets masked, tenants isolated from each other's failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from host.calls import ModuleCall, ModuleResult
from host.contract.types import ImportTemplate
from host.db.models import Invocation
from host.errors import ModuleCallFailed, NotFound
from host.hookspecs import hookimpl
from host.modules.packages import from_json_body
from host.platform import Host
from tests.host.conftest import SECRET_API_KEY, json_body, make_host

IMPORT = "CRM_Marketing_ImportTemplates"


class TemplatesPlugin:
    """Serves ImportTemplates from memory; ``behaviour[tenant]`` says how it answers."""

    def __init__(self) -> None:
        self.behaviour: dict[str, Any] = {}
        self.calls: list[tuple[str, int, int]] = []

    @hookimpl
    def crm_marketing_import_templates(self, call: ModuleCall, offset: int, limit: int) -> Any:
        self.calls.append((call.tenant_id, offset, limit))
        action = self.behaviour.get(call.tenant_id, "ok")
        if action == "ok":
            templates = [{"externalId": f"t{i}", "name": f"T{i}"} for i in range(3)]
            return ModuleResult(templates[offset : offset + limit], log="imported page")
        if action == "none":
            return None
        if action == "crash":
            raise RuntimeError(f"upstream rejected key {call.settings['api_key']}")
        if action == "script_error":
            raise ModuleCallFailed(
                "script_error",
                f"HTTP 401 for key {call.settings['api_key']}",
                module=call.module_ref,
                function=call.function,
                line=12,
            )
        return ModuleResult(action, log=f"sent Authorization: {call.settings['api_key']}")


@pytest.fixture
def plugin() -> TemplatesPlugin:
    return TemplatesPlugin()


def started_host(tmp_path: Path, plugin: TemplatesPlugin, *, bridge: bool) -> Host:
    instance = make_host(tmp_path / "host.db", extra_plugins=[("templates", plugin)])
    if not bridge and instance.hooks.has_plugin("sandbox_bridge"):
        # Only the test plugin serves: what "nobody serves it" means is tested here, not
        # what the sandboxed module does.
        instance.hooks.unregister(name="sandbox_bridge")
    instance.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
    for tenant in ("acme", "globex"):
        instance.tenants.create(tenant, tenant.title())
        instance.tenants.configure(tenant, "sendmail", settings={"api_key": SECRET_API_KEY})
    return instance


@pytest.fixture
def host(db_path: Path, plugin: TemplatesPlugin) -> Iterator[Host]:
    instance = started_host(db_path.parent, plugin, bridge=False)
    yield instance
    instance.close()


@pytest.fixture
def bridged_host(tmp_path: Path, plugin: TemplatesPlugin) -> Iterator[Host]:
    """With the built-in sandbox bridge serving what the test plugin leaves alone."""
    instance = started_host(tmp_path, plugin, bridge=True)
    yield instance
    instance.close()


def rows(host: Host) -> list[Invocation]:
    with host.db.transaction() as session:
        return list(session.scalars(select(Invocation).order_by(Invocation.id)))


def test_served_call_returns_validated_values(host, plugin) -> None:
    value = host.invoker.call("acme", "sendmail", IMPORT, offset=1, limit=10)
    assert value == [
        ImportTemplate(externalId="t1", name="T1"),
        ImportTemplate(externalId="t2", name="T2"),
    ]
    assert all(isinstance(v, ImportTemplate) for v in value)
    assert plugin.calls == [("acme", 1, 10)]


def test_each_call_writes_exactly_one_row(host) -> None:
    host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=2)
    (row,) = rows(host)
    assert (row.tenant_id, row.module_id, row.version, row.function) == (
        "acme",
        "sendmail",
        "1.0.0",
        IMPORT,
    )
    assert row.outcome == "ok"
    assert row.error is None
    assert row.duration_ms >= 0
    assert row.started_at is not None
    assert row.log == "imported page"
    host.invoker.call("globex", "sendmail", IMPORT, offset=0, limit=2)
    assert len(rows(host)) == 2


def test_invalid_return_names_the_field_path(host, plugin) -> None:
    plugin.behaviour["acme"] = [{"externalId": "t1", "name": "ok"}, {"name": "no id"}]
    with pytest.raises(ModuleCallFailed) as excinfo:
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    error = excinfo.value
    assert error.kind == "invalid_return"
    assert error.function == IMPORT
    assert error.module == "sendmail@1.0.0"
    assert f"{IMPORT} returned an invalid value: 1.externalId: Field required" in error.message
    (row,) = rows(host)
    assert row.outcome == "invalid_return"
    assert "1.externalId" in (row.error or "")
    assert SECRET_API_KEY not in (row.log or "")
    assert "***" in (row.log or "")


def test_invalid_return_type(host, plugin) -> None:
    plugin.behaviour["acme"] = {"not": "a list"}
    with pytest.raises(ModuleCallFailed, match="invalid value") as excinfo:
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert excinfo.value.kind == "invalid_return"


def test_no_implementation_is_not_implemented(host, plugin) -> None:
    plugin.behaviour["acme"] = "none"
    with pytest.raises(ModuleCallFailed) as excinfo:
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert excinfo.value.kind == "not_implemented"
    assert excinfo.value.message == f"module sendmail@1.0.0 does not implement {IMPORT}"
    (row,) = rows(host)
    assert (row.outcome, row.error) == ("not_implemented", None)


def test_hook_nobody_implements_is_not_implemented(host) -> None:
    with pytest.raises(ModuleCallFailed) as excinfo:
        host.invoker.call(
            "acme", "sendmail", "CRM_Marketing_GetCampaignStats", campaignExternalId="c"
        )
    assert excinfo.value.kind == "not_implemented"
    (row,) = rows(host)
    assert (row.function, row.outcome) == ("CRM_Marketing_GetCampaignStats", "not_implemented")


def test_function_of_another_kind_is_refused_before_any_call(host) -> None:
    with pytest.raises(NotFound, match="not a function of email modules"):
        host.invoker.call("acme", "sendmail", "CRM_Marketing_GetMessengerBots")
    assert rows(host) == []


def test_failure_of_one_tenant_leaves_the_other_alone(host, plugin) -> None:
    plugin.behaviour["acme"] = "crash"
    with pytest.raises(ModuleCallFailed) as crashed:
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert crashed.value.kind == "plugin_error"
    value = host.invoker.call("globex", "sendmail", IMPORT, offset=0, limit=10)
    assert len(value) == 3
    with pytest.raises(ModuleCallFailed):
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert [(r.tenant_id, r.outcome) for r in rows(host)] == [
        ("acme", "plugin_error"),
        ("globex", "ok"),
        ("acme", "plugin_error"),
    ]


def test_secrets_are_masked_in_the_logged_error(host, plugin) -> None:
    plugin.behaviour["acme"] = "script_error"
    plugin.behaviour["globex"] = "crash"
    with pytest.raises(ModuleCallFailed) as excinfo:
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert excinfo.value.kind == "script_error"
    with pytest.raises(ModuleCallFailed) as crashed:
        host.invoker.call("globex", "sendmail", IMPORT, offset=0, limit=10)
    assert crashed.value.message == "RuntimeError: upstream rejected key ***"
    script_error, crash = rows(host)
    assert script_error.outcome == "script_error"
    assert script_error.error == "HTTP 401 for key ***"
    assert script_error.error_line == 12
    assert crash.outcome == "plugin_error"
    assert crash.error == "RuntimeError: upstream rejected key ***"


def test_disabled_module_is_not_called(host, plugin) -> None:
    host.tenants.disable("acme", "sendmail")
    with pytest.raises(Exception, match="disabled"):
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert plugin.calls == []
    assert rows(host) == []


def test_failing_event_hook_does_not_fail_the_enable(host, caplog) -> None:
    class Exploding:
        @hookimpl
        def crm_host_module_enabled(self, tenant_id, module_id, version):
            raise RuntimeError("event plugin exploded")

    host.hooks.register(Exploding(), name="exploding")
    host.tenants.create("initech", "Initech")
    info = host.tenants.configure("initech", "sendmail", settings={"api_key": SECRET_API_KEY})
    assert info.enabled
    assert host.invoker.call("initech", "sendmail", IMPORT, offset=0, limit=1)
    assert "plugin exploding failed in crm_host_module_enabled" in caplog.text
    assert SECRET_API_KEY not in caplog.text


def test_log_write_failure_does_not_change_the_outcome(host, monkeypatch, caplog) -> None:
    class BrokenDatabase:
        def transaction(self):
            raise RuntimeError("disk full")

    def broken_row(**_columns):
        raise RuntimeError("disk full")

    # a failed call's row is written by the plugin, a successful call's with its effects
    monkeypatch.setattr(host.hooks.get_plugin("invocation_log"), "db", BrokenDatabase())
    monkeypatch.setattr("plugins.invocation_log.Invocation", broken_row)
    assert len(host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)) == 3
    assert "could not write the invocation log" in caplog.text
    with pytest.raises(ModuleCallFailed):
        host.invoker.call(
            "acme", "sendmail", "CRM_Marketing_GetTemplateHTML", templateExternalId="x"
        )
    assert caplog.text.count("could not write the invocation log") == 2


# ------------------------------------------------- with the sandbox bridge behind the plugin


def test_trusted_plugin_serves_before_the_sandbox(bridged_host, plugin) -> None:
    plugin.behaviour["acme"] = [{"externalId": "from-plugin", "name": "P"}]
    value = bridged_host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    assert [t.externalId for t in value] == ["from-plugin"]


def test_sandbox_serves_what_the_plugin_leaves(bridged_host, plugin) -> None:
    plugin.behaviour["acme"] = "none"
    value = bridged_host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=2)
    assert [t.externalId for t in value] == ["t0", "t1"]  # from the sample module's script
    with pytest.raises(ModuleCallFailed) as excinfo:
        bridged_host.invoker.call(
            "acme", "sendmail", "CRM_Marketing_GetTemplateHTML", templateExternalId="x"
        )
    assert excinfo.value.kind == "not_implemented"
    assert [(r.function, r.outcome) for r in rows(bridged_host)] == [
        (IMPORT, "ok"),
        ("CRM_Marketing_GetTemplateHTML", "not_implemented"),
    ]


def test_secret_cut_by_the_error_cap_is_still_masked(host, plugin) -> None:
    """The error text is capped; a secret straddling the cap must not leave its prefix."""
    from plugins.invocation_log import MAX_ERROR_CHARS

    padding = "x" * (MAX_ERROR_CHARS - 10)

    class Verbose:
        @hookimpl(tryfirst=True)
        def crm_marketing_import_templates(self, call, offset, limit):
            raise ModuleCallFailed("script_error", padding + call.settings["api_key"])

    host.hooks.register(Verbose(), name="verbose")
    with pytest.raises(ModuleCallFailed):
        host.invoker.call("acme", "sendmail", IMPORT, offset=0, limit=10)
    (row,) = rows(host)
    assert row.error == padding + "***"
    assert SECRET_API_KEY[:10] not in (row.error or "")
