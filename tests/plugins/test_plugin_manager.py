"""The plugin manager: hookspecs, built-in plugins first, then entry-point plugins filtered by
the ``CRM_HOST_PLUGINS`` allow-list; the ``/-/plugins`` description; event notification."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import host.plugin_manager as plugin_manager
from host.config import HostSettings
from host.hookspecs import hookimpl
from host.plugin_manager import (
    ENTRY_POINT_GROUP,
    describe_plugins,
    make_plugin_manager,
    notify,
)
from tests.host.conftest import make_host


class AuditPlugin:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def crm_host_module_uploaded(self, module_id: str, version: str, kind: str) -> None:
        self.seen.append(f"{module_id}@{version}")


class MetricsPlugin:
    @hookimpl
    def crm_host_module_disabled(self, tenant_id: str, module_id: str) -> None:
        pass


class FakeEntryPoint:
    def __init__(self, name: str, plugin: object):
        self.name = name
        self.value = f"tests.fake:{name}"
        self.group = ENTRY_POINT_GROUP
        self._plugin = plugin
        self.loaded = False

    def load(self) -> object:
        self.loaded = True
        return self._plugin


@pytest.fixture
def installed(monkeypatch) -> dict[str, FakeEntryPoint]:
    """Two installed entry-point plugins, ``audit`` and ``metrics``."""
    entries = {
        "audit": FakeEntryPoint("audit", AuditPlugin()),
        "metrics": FakeEntryPoint("metrics", MetricsPlugin()),
    }

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        QUERIED.append(group)
        return list(entries.values()) if group == ENTRY_POINT_GROUP else []

    QUERIED.clear()
    monkeypatch.setattr(plugin_manager, "entry_points", fake_entry_points)
    return entries


QUERIED: list[str] = []
"""Entry-point groups asked for since the ``installed`` fixture started."""


def names(manager: Any) -> set[str]:
    return {name for name, _ in manager.list_name_plugin()}


def test_no_allow_list_loads_every_installed_plugin(installed) -> None:
    manager = make_plugin_manager(allow=None)
    assert names(manager) == {"audit", "metrics"}
    assert QUERIED == [ENTRY_POINT_GROUP]


def test_allow_list_filters_entry_points(installed) -> None:
    manager = make_plugin_manager(allow=["audit"])
    assert names(manager) == {"audit"}
    assert installed["audit"].loaded
    assert not installed["metrics"].loaded  # not even imported


def test_empty_allow_list_loads_none(installed) -> None:
    assert names(make_plugin_manager(allow=[])) == set()
    assert not installed["audit"].loaded


def test_allow_list_naming_a_missing_plugin(installed) -> None:
    assert names(make_plugin_manager(allow=["audit", "not-installed"])) == {"audit"}


def test_entry_points_off(installed) -> None:
    assert names(make_plugin_manager(load_entry_points=False)) == set()
    assert QUERIED == []


def test_builtins_first_and_not_replaced_by_entry_points(installed) -> None:
    builtin = AuditPlugin()
    manager = make_plugin_manager([("audit", builtin)], allow=None)
    assert manager.get_plugin("audit") is builtin
    assert not installed["audit"].loaded
    assert names(manager) == {"audit", "metrics"}


def test_allow_list_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CRM_HOST_PLUGINS", "audit, metrics ,")
    assert HostSettings().plugins == ["audit", "metrics"]
    monkeypatch.setenv("CRM_HOST_PLUGINS", "")
    assert HostSettings().plugins == []
    monkeypatch.delenv("CRM_HOST_PLUGINS")
    assert HostSettings().plugins is None


def test_host_loads_allowed_entry_points(installed, tmp_path) -> None:
    from host.platform import Host
    from tests.host.conftest import make_settings

    host = Host(make_settings(tmp_path / "h.db", plugins=["audit"]), load_entry_points=True).open()
    try:
        assert host.hooks.get_plugin("audit") is installed["audit"]._plugin
        assert host.hooks.get_plugin("metrics") is None
        assert {"contract", "invocation_log"} <= names(host.hooks)
    finally:
        host.close()


def test_host_in_tests_loads_no_entry_points(installed, tmp_path) -> None:
    host = make_host(tmp_path / "h.db", plugins=None)
    try:
        assert host.hooks.get_plugin("audit") is None
        assert QUERIED == []
    finally:
        host.close()


def test_describe_plugins() -> None:
    manager = make_plugin_manager([("audit", AuditPlugin()), ("metrics", MetricsPlugin())])
    assert sorted((d.name, d.hooks) for d in describe_plugins(manager)) == [
        ("audit", ["crm_host_module_uploaded"]),
        ("metrics", ["crm_host_module_disabled"]),
    ]


def test_every_contract_function_has_a_hook() -> None:
    from host.contract.functions import HOOK_NAMES

    manager = make_plugin_manager(load_entry_points=False)
    for function, hook in HOOK_NAMES.items():
        assert hasattr(manager.hook, hook), function
    assert HOOK_NAMES["CRM_Marketing_GetTemplateHTML"] == "crm_marketing_get_template_html"
    assert HOOK_NAMES["CRM_Marketing_ImportTemplates"] == "crm_marketing_import_templates"


def test_notify_calls_every_listener_and_survives_failures(caplog) -> None:
    calls: list[str] = []

    class First:
        @hookimpl
        def crm_host_module_disabled(self, tenant_id, module_id):
            calls.append("first")

    class Failing:
        @hookimpl
        def crm_host_module_disabled(self, tenant_id, module_id):
            raise RuntimeError("boom")

    class Last:
        @hookimpl
        def crm_host_module_disabled(self, module_id):  # may take fewer arguments
            calls.append(f"last:{module_id}")

    manager = make_plugin_manager(
        [("first", First()), ("failing", Failing()), ("last", Last())], load_entry_points=False
    )
    with caplog.at_level(logging.ERROR):
        notify(manager, "crm_host_module_disabled", tenant_id="acme", module_id="sendmail")
    assert sorted(calls) == ["first", "last:sendmail"]  # pluggy order: last registered first
    assert "plugin failing failed in crm_host_module_disabled" in caplog.text


def test_upload_event_reaches_an_entry_point_plugin(installed, tmp_path) -> None:
    from host.modules.packages import from_json_body
    from host.platform import Host
    from tests.host.conftest import json_body, make_settings

    host = Host(make_settings(tmp_path / "h.db", plugins=["audit"]), load_entry_points=True).open()
    try:
        host.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
        assert installed["audit"]._plugin.seen == ["sendmail@1.0.0"]
    finally:
        host.close()


def test_plugin_that_fails_to_load_is_a_clear_error(installed) -> None:
    from host.plugin_manager import PluginLoadError

    class Broken(FakeEntryPoint):
        def load(self) -> object:
            raise ImportError("No module named 'missing_dependency'")

    installed["broken"] = Broken("broken", None)
    with pytest.raises(PluginLoadError) as excinfo:
        make_plugin_manager(allow=None)
    message = str(excinfo.value)
    assert "plugin broken (tests.fake:broken) could not be loaded" in message
    assert "missing_dependency" in message
    # left out of the allow-list, it is never imported
    assert names(make_plugin_manager(allow=["audit"])) == {"audit"}


class MisnamedHook:
    """A plugin with a typo in a hook name: pluggy would register it and never call it."""

    @hookimpl
    def crm_host_module_uploded(self, module_id: str, version: str, kind: str) -> None:
        raise AssertionError("never called")


def test_builtin_plugin_with_an_unknown_hook_stops_start_up(tmp_path) -> None:
    from host.platform import Host
    from host.plugin_manager import PluginLoadError
    from tests.host.conftest import make_settings

    with pytest.raises(PluginLoadError) as excinfo:
        Host(make_settings(tmp_path / "h.db"), extra_plugins=[("typo", MisnamedHook())])
    message = str(excinfo.value)
    assert "built-in plugin typo" in message
    assert "crm_host_module_uploded" in message


def test_entry_point_plugin_with_an_unknown_hook_is_refused_and_the_host_starts(
    installed, tmp_path, caplog
) -> None:
    from fastapi.testclient import TestClient

    from host.api.app import create_app
    from host.modules.packages import from_json_body
    from host.platform import Host
    from tests.host.conftest import ADMIN_TOKEN, json_body, make_settings

    installed["typo"] = FakeEntryPoint("typo", MisnamedHook())
    settings = make_settings(tmp_path / "h.db", plugins=["audit", "typo"])
    with caplog.at_level(logging.INFO, logger="host.plugin_manager"):
        host = Host(settings, load_entry_points=True)
    try:
        assert host.hooks.get_plugin("typo") is None
        assert host.hooks.get_plugin("audit") is installed["audit"]._plugin
        refused = [r for r in caplog.records if "typo" in r.getMessage()]
        assert len(refused) == 1
        assert refused[0].levelno == logging.ERROR
        assert refused[0].getMessage() == (
            "refused plugin typo (tests.fake:typo): unknown hook(s) crm_host_module_uploded: "
            "no hookspec declares them"
        )
        with TestClient(create_app(host)) as client:  # the host serves without it
            answer = client.get(
                "/api/v1/modules", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            assert answer.status_code == 200
        host.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
        assert installed["audit"]._plugin.seen == ["sendmail@1.0.0"]  # the others still work
    finally:
        host.close()


def test_entry_point_plugin_with_wrong_hook_arguments_is_refused(installed, caplog) -> None:
    class WrongArguments:
        @hookimpl
        def crm_host_module_disabled(self, tenant: str) -> None:
            pass

    installed["wrong"] = FakeEntryPoint("wrong", WrongArguments())
    with caplog.at_level(logging.ERROR, logger="host.plugin_manager"):
        manager = make_plugin_manager(allow=["wrong", "metrics"])
    assert names(manager) == {"metrics"}
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("refused plugin wrong (tests.fake:wrong): ")
    assert "tenant" in line and "\n" not in line


def test_optional_hooks_of_an_entry_point_plugin_are_allowed(installed) -> None:
    class Optional:
        @hookimpl(optionalhook=True)
        def crm_host_something_newer(self) -> None:
            pass

    installed["optional"] = FakeEntryPoint("optional", Optional())
    assert names(make_plugin_manager(allow=["optional"])) == {"optional"}


def test_every_hook_of_a_contract_function_has_its_parameters() -> None:
    """The specs are built from the contract: pluggy sees each function's own arguments."""
    from host.contract.functions import ALL_FUNCTIONS

    manager = make_plugin_manager(load_entry_points=False)
    for function in ALL_FUNCTIONS.values():
        spec = getattr(manager.hook, function.hook).spec
        assert spec.argnames == ("call", *function.parameters), function.name
        assert spec.opts["firstresult"]
        assert "ModuleResult" in (spec.function.__doc__ or "")
