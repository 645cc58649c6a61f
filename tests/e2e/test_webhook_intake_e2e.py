"""Webhook intake end to end on the real ``crm-host serve`` with the bundled SendGrid module
uploaded through the API: a batch SendGrid retries applies none of the events already
applied (each action carries ``sg_event_id`` as eventId), and a stored request is listed
masked and replayed — for real through the API (a new receipt naming the one it replays)
and as a dry run through ``crm-host webhooks replay`` (nothing kept)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from host.db.engine import Database
from host.db.models import Campaign, Contact, Delivery, WebhookReceipt, WebhookRequest
from tests.cli_runner import Cli
from tests.e2e.server import RunningHost, running_host

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
API_KEY = "SG.intake-e2e-secret-key"
SINGLE_SEND = "ss-spring"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    workdir = tmp_path_factory.mktemp("intake-e2e")
    with running_host(workdir, CRM_HOST_PLUGINS="") as host:
        yield host


@pytest.fixture(scope="module")
def setup(server: RunningHost) -> dict[str, Any]:
    manifest = json.loads((MODULE_DIR / "manifest.json").read_text())
    script = (MODULE_DIR / "module.py").read_text()
    with server.client() as admin:
        uploaded = admin.post("/api/v1/modules", json={"manifest": manifest, "script": script})
        assert uploaded.status_code == 201, uploaded.text
        api_key = admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).json()[
            "apiKey"
        ]
        assert admin.post("/api/v1/tenants", json={"id": "other", "name": "O"}).status_code == 201
        enabled = admin.put(
            "/api/v1/tenants/acme/modules/sendgrid", json={"settings": {"api_key": API_KEY}}
        )
        assert enabled.status_code == 200, enabled.text
        hook = urlsplit(enabled.json()["webhookUrl"]).path
    people = [{"id": f"c{i}", "name": f"P{i}", "email": f"p{i}@example.test"} for i in range(3)]
    with server.client(api_key) as tenant:
        assert tenant.post("/api/v1/tenants/acme/contacts", json=people).status_code == 200
    db = Database(f"sqlite:///{server.workdir / 'host.db'}")
    with db.transaction() as session:
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
                external_id=SINGLE_SEND,
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
    return {"hook": hook, "api_key": api_key, "db": db}


def event(kind: str, email: str, event_id: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email, "event": kind, "timestamp": 1700000000, **extra}
    if event_id is not None:
        body["sg_event_id"] = event_id
    return body


def deliveries(db: Database) -> dict[str, str]:
    with db.transaction() as session:
        return {d.email_key: d.status for d in session.scalars(select(Delivery))}


def receipt_count(db: Database) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(WebhookReceipt)) or 0


def latest_receipt(server: RunningHost, api_key: str) -> dict[str, Any]:
    with server.client(api_key) as tenant:
        answer = tenant.get("/api/v1/tenants/acme/webhooks/receipts", params={"limit": 1})
    assert answer.status_code == 200
    return dict(answer.json()[0])


def test_a_retried_sendgrid_batch_applies_no_event_twice(
    server: RunningHost, setup: dict[str, Any]
) -> None:
    db, hook = setup["db"], setup["hook"]
    first = [
        event("delivered", "p0@example.test", "evt-d0", singlesend_id=SINGLE_SEND),
        event("group_unsubscribe", "p1@example.test", "evt-g1", asm_group_id=7),
    ]
    with server.client() as client:
        assert client.post(hook, content=json.dumps(first)).status_code == 200
        applied = latest_receipt(server, setup["api_key"])
        assert applied["applied"] == 3 and applied["skipped"] == []  # + campaign Sent
        # SendGrid retries the whole batch (it timed out on its side), with one new event
        retried = [*first, event("open", "p2@example.test", "evt-o2", singlesend_id=SINGLE_SEND)]
        assert client.post(hook, content=json.dumps(retried)).status_code == 200
    receipt = latest_receipt(server, setup["api_key"])
    reasons = {(s["type"], s.get("email")): s["reason"] for s in receipt["skipped"]}
    assert reasons[("UpdateDeliveryStatus", "p0@example.test")] == "duplicate_event"
    assert reasons[("Unsubscribe", "p1@example.test")] == "duplicate_event"
    assert [s["eventId"] for s in receipt["skipped"] if s["reason"] == "duplicate_event"] == [
        "evt-d0",
        "evt-g1",
    ]
    assert receipt["applied"] == 1  # only evt-o2
    assert deliveries(db) == {
        "p0@example.test": "Delivered",
        "p1@example.test": "Sent",
        "p2@example.test": "Opened",
    }
    with server.client() as client:
        assert client.get("/healthz").status_code == 200


def test_a_stored_request_is_listed_masked_and_replayed(
    server: RunningHost, setup: dict[str, Any]
) -> None:
    db, hook, api_key = setup["db"], setup["hook"], setup["api_key"]
    token = hook.rstrip("/").rsplit("/", 1)[1]
    # a complaint about an address the CRM does not know yet (no event id: nothing deduped)
    body = json.dumps([event("spamreport", "late@example.test", None)])
    with server.client() as client:
        sent = client.post(
            hook, content=body, headers={"Authorization": f"Bearer {API_KEY}", "X-Trace": "t1"}
        )
    assert sent.status_code == 200
    original = latest_receipt(server, api_key)
    assert original["skipped"][0]["reason"] == "unknown_contact"
    assert original["requestId"] is not None

    with server.client(api_key) as tenant:
        listed = tenant.get("/api/v1/tenants/acme/webhooks/requests", params={"limit": 1})
        assert listed.status_code == 200
        shown = listed.json()[0]
        assert shown["id"] == original["requestId"] and shown["module"] == "sendgrid"
        assert token not in json.dumps(listed.json()) and API_KEY not in json.dumps(listed.json())
        assert ["authorization", "***"] in shown["headers"] and ["x-trace", "t1"] in shown[
            "headers"
        ]
        assert shown["body"] == body
        with db.transaction() as session:
            sealed = session.get(WebhookRequest, original["requestId"])
            assert sealed is not None and "late@example.test" not in sealed.sealed  # at rest

        # the contact is imported; replaying the stored request now applies the complaint
        late = [{"id": "late", "name": "Late", "email": "late@example.test"}]
        assert tenant.post("/api/v1/tenants/acme/contacts", json=late).status_code == 200
        replay = f"/api/v1/tenants/acme/webhooks/receipts/{original['id']}/replay"
        replayed = tenant.post(replay, json={})
        assert replayed.status_code == 200, replayed.text
        report = replayed.json()
        assert report["dryRun"] is False and report["replayOf"] == original["id"]
        assert [a["type"] for a in report["applied"]] == ["Unsubscribe"]
        new_receipt = latest_receipt(server, api_key)
        assert new_receipt["id"] == report["receipt"] != original["id"]
        assert new_receipt["replayOf"] == original["id"]
        assert new_receipt["requestId"] == original["requestId"]  # not stored a second time

        # bad input: a clear 4xx, nothing run, nothing stored
        before = receipt_count(db)
        assert tenant.post(replay, json={"version": "9.9.9"}).status_code == 404
        assert tenant.post(replay, json={"dryRun": "maybe"}).status_code == 422
        assert tenant.post(replay, json={"bogus": 1}).status_code == 422
        missing = tenant.post("/api/v1/tenants/acme/webhooks/receipts/999999/replay")
        assert missing.status_code == 404
        assert receipt_count(db) == before
    with server.client() as admin:  # another tenant's receipt is not found through it
        foreign = f"/api/v1/tenants/other/webhooks/receipts/{original['id']}/replay"
        assert admin.post(foreign).status_code == 404
    with db.transaction() as session:
        contact = session.scalars(select(Contact).where(Contact.id == "late")).one()
        assert contact.status == "Unsubscribed"

    # the CLI's dry run against the same database: reports, keeps nothing
    cli = Cli.in_dir(server.workdir)
    result = cli.run("webhooks", "replay", "acme", str(original["id"]), "--dry-run")
    assert result.returncode == 0, result.stderr
    dry = json.loads(result.stdout)
    assert dry["dryRun"] is True and dry["receipt"] is None and dry["applied"] == []
    assert [s["reason"] for s in dry["skipped"]] == ["no_change"]
    assert receipt_count(db) == before
    listing = cli.run("webhooks", "list", "acme", "--limit", "2")
    assert listing.returncode == 0 and str(original["requestId"]) in listing.stdout
    unknown = cli.run("webhooks", "replay", "acme", "999999")
    assert unknown.returncode != 0 and "999999" in unknown.stderr
    assert "Traceback" not in unknown.stderr
