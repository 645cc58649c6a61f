"""Acknowledge-first webhook intake on the real ``crm-host serve``: a module whose manifest
says ``"webhook": {"mode": "acknowledge-first"}`` is answered 200 at once (not with the
module's response), its request runs in the background, a failed run is retried, and a
request still pending when the host stops is processed after the restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from host.db.engine import Database
from host.db.models import Contact, WebhookRequest
from tests.e2e.server import RunningHost, running_host

SCRIPT = """\
import json


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ParseWebhookRequest(request):
    event = json.loads(request.body)
    key = "runs:" + event["email"]
    runs = (storage.get(key) or 0) + 1
    storage.set(key, runs, durable=True)  # survives the failed run
    if runs == 1:
        raise RuntimeError("the first run of every event fails")
    return {"actions": [{"type": "UpdateContact", "email": event["email"], "name": "Hooked"}],
            "response": {"status": 418, "body": "the module's own answer"}}
"""
MANIFEST = {
    "id": "quickhook",
    "name": "Quick hook",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "description": "A service that waits 3 s at most for an answer",
    "webhook": {"mode": "acknowledge-first"},
}


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (a liveness bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def receipts(server: RunningHost) -> list[dict[str, Any]]:
    with server.client() as admin:
        answer = admin.get("/api/v1/tenants/acme/webhooks/receipts")
    assert answer.status_code == 200
    return list(reversed(answer.json()))


def hooked(db: Database, email: str) -> bool:
    with db.transaction() as session:
        contact = session.scalars(select(Contact).where(Contact.email == email)).first()
        return contact is not None and contact.name == "Hooked"


def pending(db: Database) -> list[int]:
    with db.transaction() as session:
        return list(session.scalars(select(WebhookRequest.id).where(WebhookRequest.pending)))


def test_acknowledged_at_once_retried_in_the_background_and_resumed_after_a_restart(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'host.db'}")
    with running_host(tmp_path, CRM_HOST_WEBHOOK_RETRY_SECONDS="3600") as server:
        with server.client() as admin:
            created = admin.post("/api/v1/modules", json={"manifest": MANIFEST, "script": SCRIPT})
            assert created.status_code == 201, created.text
            assert admin.get("/api/v1/modules/quickhook/versions/1.0.0").json()["manifest"][
                "webhook"
            ] == {"mode": "acknowledge-first"}
            assert (
                admin.post("/api/v1/tenants", json={"id": "acme", "name": "A"}).status_code == 201
            )
            enabled = admin.put("/api/v1/tenants/acme/modules/quickhook", json={"settings": {}})
            hook = urlsplit(enabled.json()["webhookUrl"]).path
            answer = admin.post(hook, content=json.dumps({"email": "first@example.test"}))
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        failed = wait_for(lambda: [r for r in receipts(server) if r["error"]], "the failed run")
        assert "the first run of every event fails" in failed[0]["error"]
        assert not hooked(db, "first@example.test")
        assert len(pending(db)) == 1  # the retry is an hour away: still pending at shutdown

    with running_host(tmp_path, CRM_HOST_WEBHOOK_RETRY_SECONDS="0.2") as server:
        # resumed at start: the second run succeeds
        wait_for(lambda: hooked(db, "first@example.test"), "the resumed request")
        wait_for(lambda: not pending(db), "the request to be done")
        # a new request: acknowledged, fails once, retried after 0.2 s, applied
        with server.client() as admin:
            answer = admin.post(hook, content=json.dumps({"email": "second@example.test"}))
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        wait_for(lambda: hooked(db, "second@example.test"), "the retried request")
        runs = [
            r
            for r in receipts(server)
            if r["requestId"] == max(x["requestId"] for x in receipts(server))
        ]
        assert [bool(r["error"]) for r in runs] == [True, False]
        assert runs[1]["applied"] == 1 and runs[1]["status"] == 418  # the module's answer, kept
        # bad intake mode: refused at upload with the field named
        with server.client() as admin:
            bad = admin.post(
                "/api/v1/modules",
                json={
                    "manifest": {**MANIFEST, "version": "1.0.1", "webhook": {"mode": "later"}},
                    "script": SCRIPT,
                },
            )
            assert bad.status_code == 422 and "webhook.mode" in bad.text
            assert admin.get("/api/v1/modules/quickhook/versions/1.0.1").status_code == 404
