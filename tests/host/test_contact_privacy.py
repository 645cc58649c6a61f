"""Contacts through HTTP: listing and search (paging, status and category filters), export
of everything stored about one, and GDPR erasure — checked on the database file itself."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.db.models import (
    Campaign,
    ContactUnsubscription,
    Delivery,
    Invocation,
    OutboxMessage,
    WebhookReceipt,
    utcnow,
)
from host.platform import Host
from tests.host.conftest import checkpoint, database_bytes

BASE = "/api/v1/tenants/acme/contacts"
EMAIL = "Erin.Erased@Example.test"
PHONE = "+1 555 0100"


@pytest.fixture
def people(client: TestClient, admin: dict[str, str], tenant: Any) -> dict[str, str]:
    rows = [
        {"id": "c1", "name": "Erin", "email": EMAIL, "phone": PHONE},
        {"id": "c2", "name": "Kept Person", "email": "kept@example.test"},
        {"id": "c3", "name": "Third", "email": "third@example.test"},
    ]
    assert client.post(BASE, json=rows, headers=admin).status_code == 200
    return {"Authorization": f"Bearer {tenant[1]}"}


def unsubscribe(host: Host, contact_id: str, category: str, status: str | None = None) -> None:
    with host.db.transaction() as session:
        session.add(
            ContactUnsubscription(tenant_id="acme", contact_id=contact_id, category=category)
        )
        if status:
            from host.db.models import Contact

            contact = session.get(Contact, ("acme", contact_id))
            assert contact is not None
            contact.status = status


def test_listing_pages_by_id_and_filters(client: TestClient, host: Host, people: Any) -> None:
    unsubscribe(host, "c2", "news", "Unsubscribed")
    first = client.get(BASE, params={"limit": 2}, headers=people).json()
    assert [c["id"] for c in first["items"]] == ["c1", "c2"] and first["next"] == "c2"
    second = client.get(BASE, params={"limit": 2, "after": "c2"}, headers=people).json()
    assert [c["id"] for c in second["items"]] == ["c3"] and second["next"] is None
    by_status = client.get(BASE, params={"status": "Unsubscribed"}, headers=people).json()
    assert [c["id"] for c in by_status["items"]] == ["c2"]
    assert by_status["items"][0]["unsubscribedCategories"] == ["news"]
    by_category = client.get(BASE, params={"category": "news"}, headers=people).json()
    assert [c["id"] for c in by_category["items"]] == ["c2"]
    found = client.get(BASE, params={"q": "erin.ERASED"}, headers=people).json()
    assert [c["id"] for c in found["items"]] == ["c1"]
    assert client.get(BASE, params={"q": "%"}, headers=people).json()["items"] == []


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"status": "Happy"}, "query.status"),
        ({"limit": "0"}, "query.limit"),
        ({"offset": "10"}, "query.offset"),
        ({"q": ""}, "query.q"),
    ],
)
def test_listing_bad_input_names_the_field(
    client: TestClient, people: Any, params: dict[str, str], location: str
) -> None:
    answer = client.get(BASE, params=params, headers=people)
    assert answer.status_code == 422
    assert [p["location"] for p in answer.json()["problems"]] == [location]


def test_listing_is_per_tenant(client: TestClient, host: Host, admin: Any, people: Any) -> None:
    host.tenants.create("other", "Other")
    assert client.get("/api/v1/tenants/other/contacts", headers=people).status_code == 403
    assert client.get("/api/v1/tenants/other/contacts", headers=admin).json()["items"] == []


def seed_activity(host: Host) -> None:
    """What a contact leaves around the host: a delivery, a receipt, a log, mail."""
    with host.db.transaction() as session:
        session.add(
            Campaign(
                id="camp1",
                tenant_id="acme",
                module_id="m",
                module_version="1.0.0",
                type="Email",
                name="Spring",
                stage="done",
                status="Sent",
            )
        )
        session.flush()
        for contact_id, email in (("c1", EMAIL.lower()), ("c2", "kept@example.test")):
            session.add(
                Delivery(campaign_id="camp1", contact_id=contact_id, email_key=email, status="Sent")
            )
        session.add(
            WebhookReceipt(
                tenant_id="acme",
                module_id="m",
                status_code=200,
                skipped=[{"index": 0, "email": EMAIL, "reason": "unknown_contact"}],
                error=None,
            )
        )
        session.add(
            Invocation(
                tenant_id="acme",
                module_id="m",
                version="1.0.0",
                function="CRM_Marketing_ParseWebhookRequest",
                started_at=utcnow(),
                duration_ms=1.0,
                outcome="ok",
                log=f"event for {EMAIL.upper()} phone {PHONE}",
                error=f"bounced: {EMAIL}",
            )
        )
        session.add(
            OutboxMessage(tenant_id="acme", module_id="m", recipient=EMAIL, subject="Hi", html="x")
        )


def test_export_lists_everything_stored(client: TestClient, host: Host, people: Any) -> None:
    seed_activity(host)
    unsubscribe(host, "c1", "news")
    export = client.get(f"{BASE}/c1/export", headers=people)
    assert export.status_code == 200
    body = export.json()
    assert body["contact"]["email"] == EMAIL and body["contact"]["phone"] == PHONE
    assert [u["category"] for u in body["unsubscriptions"]] == ["news"]
    assert [d["campaignName"] for d in body["deliveries"]] == ["Spring"]
    assert len(body["webhookReceipts"]) == len(body["invocations"]) == len(body["outbox"]) == 1
    other = client.get(f"{BASE}/c3/export", headers=people).json()
    assert other["deliveries"] == other["webhookReceipts"] == other["invocations"] == []
    assert client.get(f"{BASE}/nobody/export", headers=people).status_code == 404


def test_erasure_leaves_no_trace_in_the_database_file(
    client: TestClient, host: Host, db_path: Any, people: Any
) -> None:
    seed_activity(host)
    unsubscribe(host, "c1", "news", "Unsubscribed")
    checkpoint(db_path)  # the contact's pages are in the main file before the erasure
    erased = client.delete(f"{BASE}/c1", headers=people)
    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "id": "c1",
        "erased": True,
        "deliveriesAnonymised": 1,
        "webhookReceiptsRedacted": 1,
        "invocationsRedacted": 1,
        "outboxDeleted": 1,
        "suppressionsKept": 4,  # 2 addresses x (category news + status Unsubscribed)
    }
    assert client.get(f"{BASE}/c1", headers=people).status_code == 404
    assert client.delete(f"{BASE}/c1", headers=people).status_code == 404
    checkpoint(db_path)
    raw = database_bytes(db_path).lower()
    for trace in (EMAIL.lower().encode(), b"erin.erased", b"555 0100"):
        assert trace not in raw
    assert b"kept@example.test" in raw  # the others are untouched (and the grep can see)
    deliveries = client.get("/api/v1/tenants/acme/campaigns/camp1/deliveries", headers=people)
    assert len(deliveries.json()["items"]) == 2  # counts kept, one anonymised
    log = client.get("/api/v1/tenants/acme/invocations", headers=people).json()["items"][0]
    assert "erased" in log["log"] and "[erased]" in log["error"]


def test_an_erased_unsubscriber_stays_unsubscribed_when_imported_again(
    client: TestClient, host: Host, admin: Any, people: Any
) -> None:
    unsubscribe(host, "c1", "news", "Unsubscribed")
    assert client.delete(f"{BASE}/c1", headers=people).status_code == 200
    again = [
        {"name": "Erin again", "email": EMAIL.upper()},
        {"name": "By phone", "phone": "15550100"},
    ]
    ids = client.post(BASE, json=again, headers=people).json()["ids"]
    for contact_id in ids:
        contact = client.get(f"{BASE}/{contact_id}", headers=people).json()
        assert contact["status"] == "Unsubscribed"
        assert [u["category"] for u in contact["unsubscribedCategories"]] == ["news"]
    # per tenant: the same address in another tenant is a new, subscribed contact
    host.tenants.create("other", "Other")
    url = "/api/v1/tenants/other/contacts"
    new_id = client.post(url, json=[again[0]], headers=admin).json()["ids"][0]
    assert client.get(f"{url}/{new_id}", headers=admin).json()["status"] == "Subscribed"


def test_erasure_is_per_tenant(client: TestClient, host: Host, admin: Any, people: Any) -> None:
    host.tenants.create("other", "Other")
    assert client.delete("/api/v1/tenants/other/contacts/c1", headers=admin).status_code == 404
    assert client.delete("/api/v1/tenants/other/contacts/c1", headers=people).status_code == 403
    assert client.get(f"{BASE}/c1", headers=people).status_code == 200
