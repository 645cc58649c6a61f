"""Tenants and enablement: API keys, pinning, settings validation, secrets kept across
partial updates, rollback, disable, webhook URLs. Every refused change stores nothing."""

from __future__ import annotations

import re

import pytest

from host.db.models import Enablement, Tenant
from host.errors import Conflict, InvalidInput, NotFound
from host.secrets import hash_api_key
from host.settings_schema import SECRET_MARKER
from tests.host.conftest import SECRET_API_KEY, email_manifest, table_dump


@pytest.fixture
def module(upload):
    """Versions 1.0.0 and 1.1.0 of the sample module."""
    upload()
    upload(email_manifest(version="1.1.0"))
    return "sendmail"


# --------------------------------------------------------------------------------- tenants


def test_create_returns_the_key_once_and_stores_its_hash(host) -> None:
    info, key = host.tenants.create("acme", "  Acme Corp ")
    assert (info.id, info.name) == ("acme", "Acme Corp")
    assert key.startswith("crm_") and len(key) > 40
    with host.db.transaction() as session:
        stored = session.get(Tenant, "acme")
        assert stored is not None
        assert stored.api_key_hash == hash_api_key(key)
        assert key not in repr(stored.__dict__)
    assert host.tenants.tenant_for_key(key) == "acme"
    assert host.tenants.tenant_for_key(key + "x") is None
    assert key not in repr(host.tenants.get("acme"))


def test_every_tenant_gets_its_own_key(host) -> None:
    _, first = host.tenants.create("acme", "Acme")
    _, second = host.tenants.create("globex", "Globex")
    assert first != second
    assert host.tenants.tenant_for_key(second) == "globex"


def test_duplicate_tenant_is_a_conflict(host, tenant) -> None:
    before = table_dump(host)
    with pytest.raises(Conflict) as excinfo:
        host.tenants.create("acme", "Another")
    assert excinfo.value.problems[0].location == "id"
    assert table_dump(host) == before


@pytest.mark.parametrize(
    ("tenant_id", "name", "locations"),
    [
        ("Acme", "Acme", ["id"]),
        ("a", "Acme", ["id"]),
        ("1acme", "Acme", ["id"]),
        ("ac me", "Acme", ["id"]),
        ("acme\n", "Acme", ["id"]),
        ("a" * 65, "Acme", ["id"]),
        ("", "", ["id", "name"]),
        ("acme", "   ", ["name"]),
        ("acme", "x" * 201, ["name"]),
    ],
)
def test_invalid_tenant_is_refused(host, tenant_id, name, locations) -> None:
    before = table_dump(host)
    with pytest.raises(InvalidInput) as excinfo:
        host.tenants.create(tenant_id, name)
    assert [p.location for p in excinfo.value.problems] == locations
    assert table_dump(host) == before


def test_list_and_get(host) -> None:
    host.tenants.create("globex", "Globex")
    host.tenants.create("acme", "Acme")
    assert [t.id for t in host.tenants.list()] == ["acme", "globex"]
    with pytest.raises(NotFound, match="tenant nope does not exist"):
        host.tenants.get("nope")


# ------------------------------------------------------------------------------ enablement


def test_enable_latest_version_by_default(host, tenant, module) -> None:
    info = host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    assert (info.version, info.previous_version, info.enabled) == ("1.1.0", None, True)
    assert info.settings == {"api_key": SECRET_MARKER}


def test_pin_a_version(host, tenant, module, upload) -> None:
    info = host.tenants.configure(
        "acme", module, version="1.0.0", settings={"api_key": SECRET_API_KEY}
    )
    assert info.version == "1.0.0"
    assert host.tenants.runtime("acme", module).version == "1.0.0"
    # A later upload does not move the pin.
    upload(email_manifest(version="1.2.0"))
    assert host.tenants.enablement("acme", module).version == "1.0.0"


def test_pin_a_missing_version_names_known_versions(host, tenant, module) -> None:
    before = table_dump(host)
    with pytest.raises(NotFound) as excinfo:
        host.tenants.configure(
            "acme", module, version="2.0.0", settings={"api_key": SECRET_API_KEY}
        )
    assert "no version 2.0.0" in excinfo.value.message
    assert excinfo.value.problems[0].message == "known versions: 1.0.0, 1.1.0"
    assert table_dump(host) == before


def test_repin_a_missing_version_keeps_the_current_pin(host, tenant, module) -> None:
    host.tenants.configure("acme", module, version="1.0.0", settings={"api_key": SECRET_API_KEY})
    before = table_dump(host)
    with pytest.raises(NotFound):
        host.tenants.configure("acme", module, version="3.0.0")
    assert table_dump(host) == before


@pytest.mark.parametrize(
    ("settings", "locations"),
    [
        ({}, ["settings.api_key"]),
        ({"api_key": "short"}, ["settings.api_key"]),
        ({"api_key": SECRET_API_KEY, "sender_email": "not-an-email"}, ["settings.sender_email"]),
        ({"api_key": SECRET_API_KEY, "batch_size": 0}, ["settings.batch_size"]),
        ({"api_key": SECRET_API_KEY, "unknown": 1}, ["settings.unknown"]),
        ({"api_key": 12345678, "batch_size": "ten"}, ["settings.api_key", "settings.batch_size"]),
    ],
)
def test_settings_failing_the_schema_store_nothing(host, tenant, module, settings, locations):
    before = table_dump(host)
    with pytest.raises(InvalidInput) as excinfo:
        host.tenants.configure("acme", module, settings=settings)
    assert sorted(p.location for p in excinfo.value.problems) == locations
    assert table_dump(host) == before


def test_settings_errors_never_echo_the_value(host, tenant, module) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        host.tenants.configure("acme", module, settings={"api_key": 1, "sender_email": "S3CRET"})
    assert "S3CRET" not in str(excinfo.value)


def test_invalid_update_keeps_stored_settings(host, tenant, module) -> None:
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    before = table_dump(host)
    with pytest.raises(InvalidInput):
        host.tenants.configure("acme", module, settings={"sender_email": "nope"})
    assert table_dump(host) == before


def test_partial_update_keeps_the_secret(host, tenant, module) -> None:
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    info = host.tenants.configure("acme", module, settings={"sender_email": "news@acme.test"})
    assert info.settings == {"api_key": SECRET_MARKER, "sender_email": "news@acme.test"}
    runtime = host.tenants.runtime("acme", module)
    assert runtime.settings == {"api_key": SECRET_API_KEY, "sender_email": "news@acme.test"}
    # the masked value sent back is not stored as the key
    host.tenants.configure("acme", module, settings={"api_key": SECRET_MARKER})
    assert host.tenants.runtime("acme", module).settings["api_key"] == SECRET_API_KEY


def test_secret_can_be_replaced(host, tenant, module) -> None:
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    host.tenants.configure("acme", module, settings={"api_key": "another-key-123"})
    assert host.tenants.runtime("acme", module).settings["api_key"] == "another-key-123"


def test_secret_is_stored_only_encrypted(host, tenant, module) -> None:
    host.tenants.configure(
        "acme", module, settings={"api_key": SECRET_API_KEY, "sender_email": "a@b.test"}
    )
    with host.db.transaction() as session:
        row = session.get(Enablement, ("acme", module))
        assert row is not None
        assert row.settings == {"sender_email": "a@b.test"}
        assert row.secrets_encrypted and SECRET_API_KEY not in row.secrets_encrypted


def test_rollback_pins_the_previous_version(host, tenant, module) -> None:
    host.tenants.configure("acme", module, version="1.0.0", settings={"api_key": SECRET_API_KEY})
    upgraded = host.tenants.configure("acme", module, version="1.1.0")
    assert (upgraded.version, upgraded.previous_version) == ("1.1.0", "1.0.0")
    rolled = host.tenants.rollback("acme", module)
    assert (rolled.version, rolled.previous_version) == ("1.0.0", "1.1.0")
    assert host.tenants.runtime("acme", module).version == "1.0.0"
    assert rolled.settings == {"api_key": SECRET_MARKER}


def test_rollback_without_previous_version_is_a_conflict(host, tenant, module) -> None:
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    before = table_dump(host)
    with pytest.raises(Conflict, match="no previous version"):
        host.tenants.rollback("acme", module)
    assert table_dump(host) == before


def test_settings_update_does_not_move_the_pin(host, tenant, module) -> None:
    host.tenants.configure("acme", module, version="1.0.0", settings={"api_key": SECRET_API_KEY})
    info = host.tenants.configure("acme", module, settings={"batch_size": 10})
    assert (info.version, info.previous_version) == ("1.0.0", None)


def test_disable_and_reenable(host, tenant, module) -> None:
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    info = host.tenants.disable("acme", module)
    assert info.enabled is False
    assert info.settings == {"api_key": SECRET_MARKER}
    with pytest.raises(Conflict, match="disabled"):
        host.tenants.runtime("acme", module)
    again = host.tenants.configure("acme", module, enabled=True)
    assert again.enabled is True
    assert host.tenants.runtime("acme", module).settings["api_key"] == SECRET_API_KEY


def test_enable_disabled_from_the_start(host, tenant, module) -> None:
    info = host.tenants.configure(
        "acme", module, settings={"api_key": SECRET_API_KEY}, enabled=False
    )
    assert info.enabled is False


def test_webhook_url_shape_and_token(host, tenant, module) -> None:
    host.tenants.create("globex", "Globex")
    first = host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    second = host.tenants.configure("globex", module, settings={"api_key": SECRET_API_KEY})
    pattern = re.compile(r"https://crm\.example\.test/hooks/(\w+)/(\w+)/([A-Za-z0-9_-]{40,})")
    match_a = pattern.fullmatch(first.webhook_url)
    match_b = pattern.fullmatch(second.webhook_url)
    assert match_a and match_b
    assert match_a.group(1, 2) == ("acme", "sendmail")
    assert match_a.group(3) != match_b.group(3)
    # the token survives updates, rollbacks and disabling
    host.tenants.configure("acme", module, version="1.0.0")
    assert host.tenants.enablement("acme", module).webhook_url == first.webhook_url
    token = match_a.group(3)
    assert host.tenants.webhook_target("acme", module, token).tenant_id == "acme"
    for args in (("acme", module, token[:-1] + "x"), ("globex", module, token)):
        with pytest.raises(NotFound, match="no such webhook"):
            host.tenants.webhook_target(*args)


def test_unknown_tenant_or_module(host, tenant, module) -> None:
    with pytest.raises(NotFound, match="tenant nope"):
        host.tenants.configure("nope", module, settings={"api_key": SECRET_API_KEY})
    with pytest.raises(NotFound, match="module nope does not exist"):
        host.tenants.configure("acme", "nope", settings={"api_key": SECRET_API_KEY})
    with pytest.raises(NotFound, match="not enabled"):
        host.tenants.enablement("acme", module)
    with pytest.raises(NotFound):
        host.tenants.rollback("acme", module)
    with pytest.raises(NotFound):
        host.tenants.disable("acme", module)
    with pytest.raises(NotFound):
        host.tenants.enablements("nope")


def test_enablements_list(host, tenant, module) -> None:
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    listed = host.tenants.enablements("acme")
    assert [(e.module_id, e.version) for e in listed] == [("sendmail", "1.1.0")]


def test_events_on_enable_disable_and_settings(host, tenant, module) -> None:
    from host.hookspecs import hookimpl

    events: list[tuple] = []

    class Listener:
        @hookimpl
        def crm_host_module_enabled(self, tenant_id, module_id, version):
            events.append(("enabled", tenant_id, module_id, version))

        @hookimpl
        def crm_host_module_disabled(self, tenant_id, module_id):
            events.append(("disabled", tenant_id, module_id))

        @hookimpl
        def crm_host_settings_changed(self, tenant_id, module_id, fields):
            events.append(("settings", tenant_id, module_id, fields))

    host.hooks.register(Listener())
    host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    host.tenants.configure("acme", module, settings={"batch_size": 5})
    host.tenants.disable("acme", module)
    assert events == [
        ("enabled", "acme", "sendmail", "1.1.0"),
        ("settings", "acme", "sendmail", ["api_key"]),
        ("settings", "acme", "sendmail", ["batch_size"]),
        ("disabled", "acme", "sendmail"),
    ]
    assert SECRET_API_KEY not in repr(events)


def test_failing_event_plugin_does_not_fail_the_enable(host, tenant, module, caplog) -> None:
    from host.hookspecs import hookimpl

    class Broken:
        @hookimpl
        def crm_host_module_enabled(self, tenant_id, module_id, version):
            raise RuntimeError("listener exploded")

    host.hooks.register(Broken(), name="broken")
    info = host.tenants.configure("acme", module, settings={"api_key": SECRET_API_KEY})
    assert info.enabled
    assert host.tenants.runtime("acme", module).version == "1.1.0"
    assert "plugin broken failed in crm_host_module_enabled" in caplog.text


def test_put_replaces_non_secret_settings_and_patch_merges(host, tenant, module) -> None:
    host.tenants.configure(
        "acme", module, settings={"api_key": SECRET_API_KEY, "sender_email": "a@acme.test"}
    )
    # PUT semantics: the given settings are the whole set; the omitted secret is kept
    replaced = host.tenants.configure("acme", module, settings={})
    assert replaced.settings == {"api_key": SECRET_MARKER}
    host.tenants.configure("acme", module, settings={"sender_email": "a@acme.test"})
    # PATCH semantics: only the named field changes; null removes it
    host.tenants.update_settings("acme", module, {"sender_email": "b@acme.test"})
    runtime = host.tenants.runtime("acme", module)
    assert runtime.settings == {"api_key": SECRET_API_KEY, "sender_email": "b@acme.test"}
    host.tenants.update_settings("acme", module, {"sender_email": None})
    assert host.tenants.runtime("acme", module).settings == {"api_key": SECRET_API_KEY}


def test_a_concurrent_duplicate_create_is_a_conflict_not_a_crash(host, monkeypatch) -> None:
    from sqlalchemy.orm import Session

    host.tenants.create("acme", "Acme")
    # The other request's row appears between this request's check and its insert.
    monkeypatch.setattr(Session, "get", lambda self, *args, **kwargs: None)
    with pytest.raises(Conflict, match="tenant acme already exists"):
        host.tenants.create("acme", "Acme again")
