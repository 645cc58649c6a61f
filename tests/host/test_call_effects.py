"""One owner commits a call's effects: a module's storage writes are kept only when the
call succeeded, its value validated and the caller's own effects (a webhook's actions and
receipt, an import page's check) committed with them, in one transaction; a script's
``storage.set(key, value, durable=True)`` commits at once and survives a later failure.
Everything is driven through the public surfaces (the webhook URL, the import route) with a
real sandboxed module, and storage is read back through a second call of the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from host.api.app import create_app
from host.marketing.actions import ActionApplier
from host.marketing.webhooks import ReceiptView
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.errors import LimitExceeded
from sandbox.pool import SandboxPool
from tests.host.conftest import (
    ADMIN_TOKEN,
    EMAIL_SCRIPT,
    SECRET_API_KEY,
    email_manifest,
    json_body,
    make_host,
)

WEBHOOK = """
def CRM_Marketing_ParseWebhookRequest(request):
    mode = request.query.get("mode")
    if mode == "read":
        return {"response": {"status": 200, "body": {
            "seen": storage.get("seen"), "remote": storage.get("remote"),
            "big": storage.get("big") is not None}}}
    storage.set("seen", (storage.get("seen") or 0) + 1)
    if mode == "invalid":
        return {"actions": [{"type": "NoSuchAction"}]}
    if mode == "durable":
        storage.set("remote", "r-" + str(storage.get("seen")), durable=True)
        raise ValueError("the service failed after creating r-1")
    if mode == "durable_then_deleted":
        storage.set("remote", "r-tmp", durable=True)
        storage.delete("remote")
    if mode == "durable_then_restored":
        before = storage.get("remote")
        storage.set("remote", "r-tmp", durable=True)
        storage.set("remote", before)
    if mode == "too_big":
        storage.set("big", "x" * 5000, durable=True)
    if mode == "stats":
        return {"actions": [{"type": "UpdateCampaignStats", "externalId": "ext-1",
                             "stats": {"total": 1}}]}
    return {}
"""

IMPORT = """
def CRM_Marketing_ImportTemplates(offset, limit):
    storage.set("cursor", offset + limit)
    mode = storage.get("mode")
    if mode == "too_many":
        return [{"externalId": "t" + str(i), "name": "T"} for i in range(limit + 1)]
    if mode == "invalid":
        return [{"externalId": "t1"}]
    return [{"externalId": "t1", "name": "T"}]
"""

SCRIPT = EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n", WEBHOOK
)
SCRIPT = (
    SCRIPT[: SCRIPT.index("def CRM_Marketing_ImportTemplates")]
    + SCRIPT[SCRIPT.index("def CRM_Marketing_ExportContacts") :]
)
SCRIPT += IMPORT
assert WEBHOOK in SCRIPT and IMPORT in SCRIPT


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db", sandbox=pool)
    manifest = email_manifest(limits={"timeout_s": 2, "storage_bytes": 4096})
    instance.registry.upload(from_json_body(json_body(manifest, SCRIPT), max_script_bytes=65536))
    instance.tenants.create("acme", "Acme")
    instance.tenants.configure("acme", "sendmail", settings={"api_key": SECRET_API_KEY})
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host), raise_server_exceptions=False) as test_client:
        yield test_client


def hook(host: Host, client: TestClient, mode: str) -> Any:
    url = host.tenants.enablement("acme", "sendmail").webhook_url
    return client.post(url.removeprefix(host.settings.public_url), params={"mode": mode})


def stored(host: Host, client: TestClient) -> dict[str, Any]:
    """The module's storage as the module itself reads it, in a second call."""
    reply = hook(host, client, "read")
    assert reply.status_code == 200, reply.text
    return reply.json()


def latest_receipt(host: Host) -> ReceiptView:
    return host.webhooks.receipts("acme", limit=1)[0]


def test_a_successful_webhook_keeps_its_storage_writes(host: Host, client: TestClient) -> None:
    assert hook(host, client, "ok").status_code == 200
    assert hook(host, client, "ok").status_code == 200
    assert stored(host, client)["seen"] == 2


def test_an_invalid_return_value_keeps_no_storage_writes(host: Host, client: TestClient) -> None:
    assert hook(host, client, "ok").status_code == 200
    reply = hook(host, client, "invalid")
    assert reply.status_code == 500
    assert reply.json()["error"] == "invalid_return"
    receipt = latest_receipt(host)
    assert receipt.status == 500 and receipt.error.startswith("invalid_return:")
    assert stored(host, client)["seen"] == 1  # the failed call's increment is gone
    assert hook(host, client, "ok").status_code == 200  # and the host kept serving
    assert stored(host, client)["seen"] == 2


def test_actions_that_fail_to_apply_roll_back_the_storage_writes(
    host: Host, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_error(self: ActionApplier, session: Any, *args: Any) -> None:
        session.execute(text("INSERT INTO no_such_table VALUES (1)"))  # a real DB error

    monkeypatch.setattr(ActionApplier, "_update_stats", database_error)
    reply = hook(host, client, "stats")
    assert reply.status_code == 500
    assert reply.json()["error"] == "apply_failed"
    receipt = latest_receipt(host)
    assert receipt.status == 500 and "OperationalError" in receipt.error
    assert receipt.applied == 0
    assert stored(host, client)["seen"] is None  # same transaction: storage rolled back too
    monkeypatch.undo()
    assert hook(host, client, "stats").status_code == 200
    assert latest_receipt(host).applied == 0  # no such campaign: skipped, not failed
    assert stored(host, client)["seen"] == 1


def test_a_durable_write_survives_a_later_failure_of_the_call(
    host: Host, client: TestClient
) -> None:
    reply = hook(host, client, "durable")
    assert reply.status_code == 500 and reply.json()["error"] == "script_error"
    assert stored(host, client) == {"seen": None, "remote": "r-1", "big": False}
    assert hook(host, client, "ok").status_code == 200
    # a later successful call's snapshot includes the durable key and keeps it
    assert stored(host, client) == {"seen": 1, "remote": "r-1", "big": False}


def test_a_successful_call_that_undoes_its_durable_write_leaves_it_undone(
    host: Host, client: TestClient
) -> None:
    """The durable value is stored during the call: the call's later delete (or its setting
    the old value back) must still reach the store, not be lost as "no change"."""
    assert hook(host, client, "durable_then_deleted").status_code == 200
    assert stored(host, client) == {"seen": 1, "remote": None, "big": False}
    assert hook(host, client, "durable").status_code == 500  # stores remote = "r-2"
    assert stored(host, client)["remote"] == "r-2"
    assert hook(host, client, "durable_then_restored").status_code == 200
    assert stored(host, client) == {"seen": 2, "remote": "r-2", "big": False}


def test_a_durable_write_over_the_quota_is_refused_and_stores_nothing(
    host: Host, client: TestClient
) -> None:
    reply = hook(host, client, "too_big")
    assert reply.status_code == 500 and reply.json()["error"] == "limit_exceeded"
    assert "storage quota of 4096 bytes" in latest_receipt(host).error
    assert stored(host, client) == {"seen": None, "remote": None, "big": False}


def test_the_host_side_of_a_durable_write_checks_the_quota_itself(host: Host) -> None:
    """The worker checks its own view first, but it is not trusted: the host measures what
    is stored (a concurrent call's keys included) before committing."""
    store = host.module_storage
    store.write_durable("acme", "sendmail", "a", "x" * 100, quota_bytes=200)
    with pytest.raises(LimitExceeded, match="quota of 200 bytes"):
        store.write_durable("acme", "sendmail", "b", "y" * 100, quota_bytes=200)
    assert store.load("acme", "sendmail") == {"a": "x" * 100}


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("too_many", "returned 8 templates for limit 7"),
        ("invalid", "returned an invalid value: 0.name: Field required"),
    ],
)
def test_an_import_whose_page_is_invalid_keeps_no_storage_writes(
    host: Host, client: TestClient, mode: str, message: str
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    path = "/api/v1/tenants/acme/modules/sendmail/templates/import"
    assert client.post(path, headers=headers, params={"pageSize": 5}).status_code == 200
    assert host.module_storage.load("acme", "sendmail") == {"cursor": 5}
    store = host.module_storage
    store.write_durable("acme", "sendmail", "mode", mode, quota_bytes=4096)
    reply = client.post(path, headers=headers, params={"pageSize": 7})
    assert reply.status_code == 502, reply.text
    assert reply.json()["error"] == "invalid_return"
    assert message in reply.json()["message"]
    assert store.load("acme", "sendmail") == {"cursor": 5, "mode": mode}


def test_per_version_things_are_computed_once_per_stored_version(
    host: Host, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits, egress policy, compiled-script key and file name belong to the stored
    version: two calls of it compute them at most once, a new version once more."""
    import host.module_program as program_module
    from sandbox.egress import EgressPolicy

    counts = {"policy": 0, "key": 0}
    real_policy, real_key = EgressPolicy.from_config.__func__, program_module.source_hash  # type: ignore[attr-defined]

    def counted_policy(cls: type[EgressPolicy], *args: Any, **kwargs: Any) -> EgressPolicy:
        counts["policy"] += 1
        return real_policy(cls, *args, **kwargs)

    def counted_key(source: str) -> str:
        counts["key"] += 1
        return real_key(source)

    monkeypatch.setattr(EgressPolicy, "from_config", classmethod(counted_policy))
    monkeypatch.setattr(program_module, "source_hash", counted_key)
    manifest = email_manifest(version="1.0.1", limits={"storage_bytes": 4096})
    host.registry.upload(from_json_body(json_body(manifest, SCRIPT), max_script_bytes=65536))
    host.tenants.configure("acme", "sendmail", version="1.0.1")
    assert hook(host, client, "ok").status_code == 200
    assert counts == {"policy": 1, "key": 1}  # the new version, computed once
    for _ in range(3):
        assert hook(host, client, "ok").status_code == 200
    assert counts == {"policy": 1, "key": 1}  # and never again for its later calls
    assert stored(host, client)["seen"] == 4
