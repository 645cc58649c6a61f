"""The Delivery rows a campaign's prepare step writes — one ``COPY`` per batch on PostgreSQL,
one executemany on SQLite — hold exactly what the contacts hold (text that COPY must escape
included), and later steps work on them: the send marks them Sent and a webhook moves them
on, through the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from host.api.app import create_app
from host.db.models import Contact, Delivery
from host.marketing.campaigns import CampaignDraft
from host.marketing.job_runner import new_owner
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host

SCRIPT = """\
import json


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "ext-rows"}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_ParseWebhookRequest(request):
    event = json.loads(request["body"])
    return {"actions": [{"type": "UpdateDeliveryStatus", "email": event["email"],
                         "externalId": "ext-rows", "status": "Delivered"}]}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    raise NotImplementedError
"""

#: (id, email_key, phone): tabs, backslashes, quotes, newlines and non-ASCII text are what
#: COPY's text format must escape; a missing phone is its NULL
CONTACTS = [
    ("c1", "plain@example.test", "+15550000001"),
    ("c2", "tab\there\\back'slash@example.test", None),
    ("c3", 'new\nline"quote@example.test', "\\N"),
    ("c4", "ünïcödé@例え.test", "+15550000004"),
    ("c5", "last@example.test", None),
]


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    manifest = email_manifest(id="rows", settings={"type": "object", "properties": {}})
    body = {"manifest": manifest, "script": SCRIPT}
    instance.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    instance.tenants.create("acme", "Acme")
    yield instance
    instance.close()


def test_prepared_deliveries_hold_the_contacts_and_move_on_after_the_send(host: Host) -> None:
    url = host.tenants.configure("acme", "rows", settings={}).webhook_url
    created_at = datetime.now(UTC) - timedelta(seconds=1)
    with host.db.transaction() as session:
        session.execute(
            insert(Contact),
            [
                {"tenant_id": "acme", "id": cid, "name": cid, "email": key, "email_key": key,
                 "phone": phone, "created_at": created_at, "updated_at": created_at}
                for cid, key, phone in CONTACTS
            ],
        )  # fmt: skip
    draft = CampaignDraft(
        module="rows",
        name="Rows",
        type="Email",
        subject="s",
        senderName="n",
        senderEmail="n@acme.test",
        html="<p>x</p>",
        contactIds="all",
        batchSize=2,  # three batches: the last one short
    )
    owner = new_owner()
    created = host.campaigns.create("acme", draft, claim_for=owner)
    before = datetime.now(UTC)
    assert host.campaign_runner.run(created.id, owner=owner) == "done"
    shown = host.campaigns.get("acme", created.id, with_stats=False)
    assert (shown.progress.prepared, shown.progress.batches) == (5, 3)

    with host.db.transaction() as session:
        rows = session.scalars(
            select(Delivery).where(Delivery.campaign_id == created.id).order_by(Delivery.contact_id)
        ).all()
        written = [(d.contact_id, d.email_key, d.phone, d.status) for d in rows]
        histories = [d.history for d in rows]
        stamps = [d.updated_at for d in rows]
    assert written == [(cid, key, phone, "Sent") for cid, key, phone in CONTACTS]
    for history in histories:
        assert [entry["status"] for entry in history] == ["Pending", "Sent"]
        assert datetime.fromisoformat(history[0]["at"]) >= before - timedelta(seconds=1)
    assert all(
        stamp.tzinfo is not None and stamp >= before - timedelta(seconds=1) for stamp in stamps
    )

    with TestClient(create_app(host)) as client:
        path = url.removeprefix("https://crm.example.test")
        answer = client.post(path, content=json.dumps({"email": "plain@example.test"}))
        assert answer.status_code == 200, answer.text
        listed = client.get(
            f"/api/v1/tenants/acme/campaigns/{created.id}/deliveries",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert listed.status_code == 200, listed.text
    items = {item["contactId"]: item for item in listed.json()["items"]}
    assert [h["status"] for h in items["c1"]["history"]] == ["Pending", "Sent", "Delivered"]
    assert items["c1"]["status"] == "Delivered"
    assert {items[cid]["status"] for cid, _, _ in CONTACTS[1:]} == {"Sent"}
    assert [(cid, items[cid]["phone"]) for cid in items] == [(c, p) for c, _, p in CONTACTS]
