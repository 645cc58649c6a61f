"""Webhooks end to end: the real ``crm-host serve``, a realistic module uploaded through the
API (a SendGrid-style event webhook with an HMAC signature over the raw body), contacts
through the API, a campaign and its deliveries written as the send job would, then signed
event batches POSTed to the module's webhook URL. A real local SMTP server (aiosmtpd)
receives the mail the module asks the host to send."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from host.db.engine import Database
from host.db.models import Campaign, Delivery, WebhookReceipt
from tests.e2e.server import RunningHost, running_host

WEBHOOK_SECRET = "whsec-e2e-0123456789"

MODULE_SCRIPT = '''\
"""SendGrid-style event webhook: a JSON array of events, signed with HMAC-SHA256."""
import json
import hmac
import hashlib

STATUS = {
    "processed": "Sent", "delivered": "Delivered", "open": "Opened", "click": "Clicked",
    "deferred": "SoftBounced", "bounce": "Bounced", "dropped": "Failed",
    "spamreport": "Complained", "unsubscribe": "Unsubscribed",
}


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "sg-" + request.campaignId}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_ParseWebhookRequest(request):
    raw = request.body.encode(request.headers["x-crm-host-body-encoding"])
    expected = hmac.new(settings["webhook_secret"].encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-twilio-email-event-webhook-signature", "")):
        return {"response": {"status": 401, "body": {"error": "bad signature"}}}
    events = json.loads(request.body)
    actions = []
    for event in events:
        kind = event["event"]
        email = event["email"]
        campaign = event.get("sg_campaign_id", "")
        if kind in STATUS:
            actions.append({"type": "UpdateDeliveryStatus", "email": email,
                            "externalId": campaign, "status": STATUS[kind]})
        if kind == "unsubscribe":
            actions.append({"type": "Unsubscribe", "email": email, "externalId": {"all": True}})
        elif kind == "group_unsubscribe":
            actions.append({"type": "Unsubscribe", "email": email,
                            "externalId": str(event["asm_group_id"])})
        elif kind == "campaign_finished":
            actions.append({"type": "UpdateCampaign", "externalId": campaign, "status": "Sent"})
            actions.append({"type": "UpdateCampaignStats", "externalId": campaign,
                            "stats": event["stats"]})
        elif kind == "confirm_request":
            actions.append({"type": "SendEmail", "email": email, "subject": "Confirm",
                            "html": "<p>Confirm your subscription</p>"})
    return {"actions": actions, "response": {"status": 200, "body": {"received": len(events)}}}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    raise NotImplementedError
'''

MANIFEST = {
    "id": "sgmail",
    "name": "SG Mail",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "description": "SendGrid-style event webhook",
    "egress": ["api.sendgrid.test"],
    "settings": {
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True},
            "webhook_secret": {"type": "string", "writeOnly": True},
        },
        "required": ["api_key", "webhook_secret"],
    },
}


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, smtp: tuple[Inbox, int]
) -> Iterator[RunningHost]:
    workdir = tmp_path_factory.mktemp("webhooks-e2e")
    with running_host(
        workdir,
        CRM_HOST_SMTP_HOST="127.0.0.1",
        CRM_HOST_SMTP_PORT=str(smtp[1]),
        CRM_HOST_SMTP_SENDER="crm@host.test",
        CRM_HOST_WEBHOOK_MAX_BODY_BYTES="65536",
        CRM_HOST_PLUGINS="",
    ) as host:
        yield host


@pytest.fixture(scope="module")
def setup(server: RunningHost) -> dict[str, Any]:
    """Module, tenant, contacts, and a campaign with deliveries (as the send job leaves it)."""
    with server.client() as admin:
        assert (
            admin.post(
                "/api/v1/modules", json={"manifest": MANIFEST, "script": MODULE_SCRIPT}
            ).status_code
            == 201
        )
        api_key = admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).json()[
            "apiKey"
        ]
        enabled = admin.put(
            "/api/v1/tenants/acme/modules/sgmail",
            json={"settings": {"api_key": "SG.key", "webhook_secret": WEBHOOK_SECRET}},
        )
        assert enabled.status_code == 200
    people = [
        {"id": f"c{i}", "name": f"Person {i}", "email": f"Person{i}@Example.test"}
        for i in range(10)
    ]
    with server.client(api_key) as tenant:
        assert tenant.post("/api/v1/tenants/acme/contacts", json=people).status_code == 200
    db = Database(f"sqlite:///{server.workdir / 'host.db'}")
    with db.transaction() as session:
        session.add(
            Campaign(
                id="spring",
                tenant_id="acme",
                module_id="sgmail",
                module_version="1.0.0",
                type="Email",
                name="Spring",
                status="Sending",
                stage="done",  # sent by the send job; the webhook tracks it
                external_id="sg-spring",
            )
        )
        session.flush()
        for i in range(10):
            session.add(
                Delivery(
                    campaign_id="spring",
                    contact_id=f"c{i}",
                    email_key=f"person{i}@example.test",
                    status="Sent",
                    history=[],
                )
            )
    yield {"url": enabled.json()["webhookUrl"], "api_key": api_key, "db": db}
    db.dispose()


def signed_post(
    url: str, events: list[dict[str, Any]], secret: str = WEBHOOK_SECRET
) -> httpx.Response:
    body = json.dumps(events).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-signature": signature,
    }
    return httpx.post(url, content=body, headers=headers, timeout=30)


def event(kind: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "email": f"person{i}@example.test",
        "sg_campaign_id": "sg-spring",
        "timestamp": 1767225600 + i,
        "sg_event_id": f"ev-{kind}-{i}",
        **extra,
    }


def statuses(db: Database) -> dict[str, str]:
    with db.transaction() as session:
        rows = session.query(Delivery).filter_by(campaign_id="spring").all()
        return {row.contact_id: row.status for row in rows}


def test_signed_event_batch_applied(
    setup: dict[str, Any], server: RunningHost, smtp: tuple[Inbox, int]
) -> None:
    url, db = setup["url"], setup["db"]
    batch = [
        event("delivered", 0),
        event("open", 0),
        event("click", 0),
        event("delivered", 1),
        event("bounce", 2),
        event("spamreport", 3),
        event("unsubscribe", 4),
        event("group_unsubscribe", 5, asm_group_id=42),
        event("confirm_request", 6),
        event(
            "campaign_finished",
            0,
            stats={
                "total": 10,
                "sent": 10,
                "delivered": 2,
                "opened": 1,
                "clicked": 1,
                "bounced": 1,
            },
        ),
    ]
    answer = signed_post(url, batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 10}
    got = statuses(db)
    assert (got["c0"], got["c1"], got["c2"], got["c3"], got["c4"]) == (
        "Clicked",
        "Delivered",
        "Bounced",
        "Complained",
        "Unsubscribed",
    )
    with db.transaction() as session:
        spring = session.get(Campaign, "spring")
        assert spring is not None
        assert (spring.status, spring.stats["delivered"]) == ("Sent", 2)
    with server.client(setup["api_key"]) as tenant:
        assert tenant.get("/api/v1/tenants/acme/contacts/c4").json()["status"] == "Unsubscribed"
        five = tenant.get("/api/v1/tenants/acme/contacts/c5").json()
        assert five["status"] == "Subscribed"
        assert "42" in json.dumps(five["unsubscribedCategories"])
    inbox, _ = smtp
    deadline = time.monotonic() + 15
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inbox.messages and inbox.messages[0][0] == ["person6@example.test"]
    assert b"Confirm your subscription" in inbox.messages[0][1]

    # the service retries the same batch, and a late "delivered" arrives: nothing changes
    before = statuses(db)
    assert signed_post(url, batch).status_code == 200
    assert signed_post(url, [event("delivered", 0)]).status_code == 200
    assert statuses(db) == before
    with db.transaction() as session:
        last = session.query(WebhookReceipt).order_by(WebhookReceipt.id.desc()).first()
        assert last is not None and last.applied == 0
        assert last.skipped[0]["reason"] == "no_change"


def test_bad_signature_unknown_url_and_oversized_body(setup: dict[str, Any]) -> None:
    url, db = setup["url"], setup["db"]
    before = statuses(db)
    forged = signed_post(url, [event("click", 9)], secret="not-the-secret")
    assert (forged.status_code, forged.json()) == (401, {"error": "bad signature"})
    assert signed_post(url[:-2] + "xx", [event("click", 9)]).status_code == 404
    assert signed_post(url, [event("click", 9, pad="x" * 70_000)]).status_code == 413
    broken = httpx.post(
        url,
        content=b"[{not json",
        headers={
            "x-twilio-email-event-webhook-signature": hmac.new(
                WEBHOOK_SECRET.encode(), b"[{not json", hashlib.sha256
            ).hexdigest()
        },
        timeout=30,
    )
    assert broken.status_code == 500 and broken.json()["error"] == "script_error"
    assert statuses(db) == before
