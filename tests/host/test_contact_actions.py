"""The host extensions ``Resubscribe`` and ``UpdateContact`` (SPEC §8, not in the original
platform's list), posted through the real webhook endpoint by a sandboxed module that returns
its body as the WebhookResult: a category resubscribe lifts only that category, "all" lifts
the contact's status (Bounced/Complained too, unless the tenant's policy forbids), a profile update
never changes a subscription, a move onto another contact's email is skipped, bad values
are refused with nothing stored, and everything stays within the calling tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from host.api.app import create_app
from host.db.models import Contact
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, SECRET_API_KEY, email_manifest, json_body, make_host
from tests.host.conftest import table_dump as dump
from tests.host.test_webhooks import WEBHOOK_SCRIPT

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db", sandbox=pool)
    instance.registry.upload(
        from_json_body(json_body(email_manifest(), WEBHOOK_SCRIPT), max_script_bytes=64 * 1024)
    )
    for tenant in ("acme", "globex"):
        instance.tenants.create(tenant, tenant.title())
        instance.tenants.configure(tenant, "sendmail", settings={"api_key": SECRET_API_KEY})
    with instance.db.transaction() as session:
        for tenant, cid, email, status in (
            ("acme", "ann", "Ann@Example.test", "Subscribed"),
            ("acme", "bob", "bob@example.test", "Unsubscribed"),
            ("acme", "cat", "cat@example.test", "Complained"),
            ("acme", "dan", "dan@example.test", "Bounced"),
            ("globex", "ann", "ann@example.test", "Unsubscribed"),
        ):
            session.add(
                Contact(
                    tenant_id=tenant,
                    id=cid,
                    name=cid.title(),
                    email=email,
                    email_key=email.lower(),
                    status=status,
                )
            )
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host), raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, host: Host, *actions: dict[str, Any], tenant: str = "acme") -> Any:
    url = host.tenants.enablement(tenant, "sendmail").webhook_url
    return client.post(
        url.removeprefix(host.settings.public_url), content=json.dumps({"actions": list(actions)})
    )


def contact(client: TestClient, contact_id: str, tenant: str = "acme") -> dict[str, Any]:
    reply = client.get(f"/api/v1/tenants/{tenant}/contacts/{contact_id}", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def last_receipt(client: TestClient, tenant: str = "acme") -> dict[str, Any]:
    reply = client.get(f"/api/v1/tenants/{tenant}/webhooks/receipts?limit=1", headers=ADMIN)
    return dict(reply.json()[0])


def contacts_by_email(client: TestClient, host: Host, tenant: str = "acme") -> dict[str, Any]:
    """The tenant's contacts by email, as the contact API shows them (ids from the table)."""
    with host.db.transaction() as session:
        ids = session.scalars(select(Contact.id).where(Contact.tenant_id == tenant)).all()
    return {view["email"]: view for view in (contact(client, i, tenant) for i in ids)}


def unsubscribe(email: str, category: Any) -> dict[str, Any]:
    return {"type": "Unsubscribe", "email": email, "externalId": category}


def resubscribe(email: str, category: Any) -> dict[str, Any]:
    return {"type": "Resubscribe", "email": email, "externalId": category}


def categories(view: dict[str, Any]) -> list[str]:
    return [c["category"] for c in view["unsubscribedCategories"]]


def test_category_resubscribe_lifts_only_that_category(client: TestClient, host: Host) -> None:
    everything = {"all": True}
    assert post(client, host, unsubscribe("ann@example.test", "10")).status_code == 200
    assert post(client, host, unsubscribe("ann@example.test", "20")).status_code == 200
    assert post(client, host, unsubscribe("ann@example.test", everything)).status_code == 200
    assert post(client, host, resubscribe("ANN@example.test", "10")).status_code == 200
    view = contact(client, "ann")
    assert categories(view) == ["20"]
    assert view["status"] == "Unsubscribed"  # a category resubscribe is not "everything"
    # again: nothing left to lift, skipped with a reason
    post(client, host, resubscribe("ann@example.test", "10"))
    assert [s["reason"] for s in last_receipt(client)["skipped"]] == ["no_change"]


def test_resubscribe_all_lifts_only_the_global_unsubscription(
    client: TestClient, host: Host
) -> None:
    post(client, host, unsubscribe("bob@example.test", "10"))
    assert post(client, host, resubscribe("bob@example.test", {"all": True})).status_code == 200
    view = contact(client, "bob")
    assert view["status"] == "Subscribed"
    assert categories(view) == ["10"]  # each category needs its own resubscribe
    assert contact(client, "ann", tenant="globex")["status"] == "Unsubscribed"  # other tenant


@pytest.mark.parametrize("cid", ["cat", "dan"])
def test_resubscribe_all_lifts_a_complaint_or_bounce_by_default(
    client: TestClient, host: Host, cid: str
) -> None:
    """The service's explicit subscribe event for the address lifts Bounced/Complained."""
    assert post(client, host, resubscribe(f"{cid}@example.test", {"all": True})).status_code == 200
    assert contact(client, cid)["status"] == "Subscribed"
    assert last_receipt(client)["skipped"] == []


@pytest.mark.parametrize("cid", ["cat", "dan"])
def test_a_policy_can_keep_complaints_and_bounces_from_a_resubscribe(
    client: TestClient, host: Host, cid: str
) -> None:
    reply = client.put(
        "/api/v1/tenants/acme/suppression-policy",
        json={"providerSubscribeLifts": False},
        headers=ADMIN,
    )
    assert reply.status_code == 200, reply.text
    before = contact(client, cid)
    assert post(client, host, resubscribe(f"{cid}@example.test", {"all": True})).status_code == 200
    assert contact(client, cid)["status"] == before["status"]
    skipped = last_receipt(client)["skipped"]
    assert [s["reason"] for s in skipped] == ["no_change"]
    assert "suppression policy" in skipped[0]["detail"]
    assert post(client, host, resubscribe("bob@example.test", {"all": True})).status_code == 200
    assert contact(client, "bob")["status"] == "Subscribed"  # an unsubscription still lifts


def test_resubscribe_of_an_unknown_contact_is_skipped(client: TestClient, host: Host) -> None:
    before = dump(host)["contacts"]
    post(client, host, resubscribe("nobody@example.test", {"all": True}))
    assert [s["reason"] for s in last_receipt(client)["skipped"]] == ["unknown_contact"]
    assert dump(host)["contacts"] == before


def test_update_contact_sets_the_name_and_never_a_subscription(
    client: TestClient, host: Host
) -> None:
    post(client, host, unsubscribe("bob@example.test", "10"))
    update = {"type": "UpdateContact", "email": "BOB@example.test", "name": "Bob Builder"}
    assert post(client, host, update).status_code == 200
    view = contact(client, "bob")
    assert (view["name"], view["email"], view["status"]) == (
        "Bob Builder",
        "bob@example.test",  # kept as the CRM spells it
        "Unsubscribed",
    )
    assert categories(view) == ["10"]
    post(client, host, update)  # a replay changes nothing
    assert [s["reason"] for s in last_receipt(client)["skipped"]] == ["no_change"]


def test_update_contact_creates_a_missing_contact_subscribed(
    client: TestClient, host: Host
) -> None:
    update = {"type": "UpdateContact", "email": "new@example.test", "name": "New Person"}
    then = resubscribe("new@example.test", {"all": True})
    assert post(client, host, update, then).status_code == 200
    created = contacts_by_email(client, host)["new@example.test"]
    assert (created["name"], created["status"]) == ("New Person", "Subscribed")
    # the resubscribe in the same batch saw the contact created just before it
    assert [s["reason"] for s in last_receipt(client)["skipped"]] == ["no_change"]
    assert "new@example.test" not in contacts_by_email(client, host, tenant="globex")


def test_update_contact_moves_the_email_once(client: TestClient, host: Host) -> None:
    move = {"type": "UpdateContact", "email": "ann@example.test", "newEmail": "ann@new.test"}
    assert post(client, host, move).status_code == 200
    view = contact(client, "ann")
    assert (view["email"], view["status"], view["name"]) == ("ann@new.test", "Subscribed", "Ann")
    post(client, host, move)  # replayed: the contact is found at its new address
    assert [s["reason"] for s in last_receipt(client)["skipped"]] == ["no_change"]
    emails = contacts_by_email(client, host)
    assert "ann@example.test" not in emails and emails["ann@new.test"]["id"] == "ann"
    assert contact(client, "ann", tenant="globex")["email"] == "ann@example.test"


def test_one_batch_frees_an_address_and_creates_a_contact_there(
    client: TestClient, host: Host
) -> None:
    """Contacts a batch changes are written at its end, one it creates at once: the move
    away must be written before the new contact takes the address, and the new contact
    must exist before its category unsubscription (a foreign key) is stored."""
    move = {"type": "UpdateContact", "email": "ann@example.test", "newEmail": "ann@new.test"}
    create = {"type": "UpdateContact", "email": "ann@example.test", "name": "Other Ann"}
    then = [unsubscribe("ann@example.test", "news"), unsubscribe("ann@example.test", {"all": True})]
    assert post(client, host, move, create, *then).status_code == 200
    assert last_receipt(client)["applied"] == 4
    emails = contacts_by_email(client, host)
    assert emails["ann@new.test"]["id"] == "ann"
    created = emails["ann@example.test"]
    assert created["id"] != "ann" and created["name"] == "Other Ann"
    assert (created["status"], categories(created)) == ("Unsubscribed", ["news"])
    assert contact(client, "ann")["status"] == "Subscribed"


def test_moving_onto_another_contacts_email_is_skipped(client: TestClient, host: Host) -> None:
    before = dump(host)["contacts"]
    move = {"type": "UpdateContact", "email": "ann@example.test", "newEmail": "Bob@example.test"}
    assert post(client, host, move).status_code == 200
    skipped = last_receipt(client)["skipped"]
    assert [s["reason"] for s in skipped] == ["email_taken"]
    assert "contact bob" in skipped[0]["detail"]
    assert dump(host)["contacts"] == before


def test_update_contact_with_a_malformed_email_is_skipped(client: TestClient, host: Host) -> None:
    before = dump(host)["contacts"]
    post(client, host, {"type": "UpdateContact", "email": "not an email", "name": "X"})
    assert [s["reason"] for s in last_receipt(client)["skipped"]] == ["invalid_email"]
    assert dump(host)["contacts"] == before


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ({"type": "UpdateContact", "email": "a@b.test", "name": "n" * 301}, "name"),
        ({"type": "UpdateContact", "email": "a@b.test", "newEmail": "x" * 321}, "newEmail"),
        ({"type": "UpdateContact", "name": "No email"}, "email"),
        ({"type": "Resubscribe", "email": "a@b.test", "externalId": {"all": False}}, "all"),
    ],
)
def test_invalid_extension_actions_fail_the_call_and_store_nothing(
    client: TestClient, host: Host, action: dict[str, Any], field: str
) -> None:
    before = dump(host)["contacts"]
    reply = post(client, host, action)
    assert reply.status_code == 500
    assert reply.json()["error"] == "invalid_return"
    assert field in last_receipt(client)["error"]  # the details go to the receipt
    assert dump(host)["contacts"] == before
    assert client.get("/healthz").status_code == 200
