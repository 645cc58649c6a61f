"""Suppressions kept by the host, end to end: a served host with the SendGrid module
enabled, the SendGrid emulator delivering a first campaign and POSTing its Event Webhook
(a hard bounce, a spam complaint, soft bounces) to the tenant's webhook URL. The next
campaign leaves those contacts out and its progress says why; the tenant's suppression
policy (admin API) changes what a soft bounce or a service's re-subscribe does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.modules.test_sendgrid_module import (
    GROUP_ID,
    SENDER_ID,
    SendGridWorld,
    receipts,
    sendgrid_world,
    wait_for,
)

PEOPLE = ["ann", "bob", "cy", "di", "ed"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SendGridWorld]:
    with sendgrid_world(tmp_path, sender_id=SENDER_ID, suppression_group_id=GROUP_ID) as instance:
        instance.state.configure_webhook(instance.hook_url, signed=False)
        added = instance.client.post(
            "/api/v1/tenants/acme/contacts",
            json=[{"id": p, "name": p.title(), "email": f"{p}@example.test"} for p in PEOPLE],
        )
        assert added.is_success, added.text
        yield instance


def send(world: SendGridWorld, **extra: Any) -> dict[str, Any]:
    """A campaign to every contact, through the API; returns it once it is in the service."""
    body = {
        "module": "sendgrid",
        "name": "News",
        "type": "Email",
        "subject": "News",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "contactIds": "all",
        "html": "<p>Hello</p>",
        **extra,
    }
    created = world.client.post("/api/v1/tenants/acme/campaigns", json=body)
    assert created.status_code == 202, created.text
    path = f"/api/v1/tenants/acme/campaigns/{created.json()['id']}"
    campaign = wait_for(world.client, path, lambda c: c["externalId"] or c["status"] == "Failed")
    assert campaign["status"] == "Sending", campaign
    return dict(campaign)


def deliver(world: SendGridWorld, campaign: dict[str, Any], outcomes: dict[str, str]) -> None:
    before = len(world.state.posts)
    world.state.deliver(
        campaign["externalId"], {f"{k}@example.test": v for k, v in outcomes.items()}
    )
    assert [p["status"] for p in world.state.posts[before:]] == [200], receipts(world.host)


def recipients(world: SendGridWorld, campaign: dict[str, Any]) -> list[str]:
    path = f"/api/v1/tenants/acme/campaigns/{campaign['id']}/deliveries"
    return sorted(i["contactId"] for i in world.client.get(path).json()["items"])


def status(world: SendGridWorld, contact: str) -> str:
    return str(world.client.get(f"/api/v1/tenants/acme/contacts/{contact}").json()["status"])


def test_a_campaign_after_a_hard_bounce_and_a_complaint_leaves_both_out(
    world: SendGridWorld,
) -> None:
    first = send(world)
    deliver(world, first, {"bob": "bounce", "cy": "spamreport"})
    assert (status(world, "bob"), status(world, "cy")) == ("Bounced", "Complained")
    assert status(world, "ann") == "Subscribed"

    second = send(world)
    assert recipients(world, second) == ["ann", "di", "ed"]
    single = world.state.single_sends[second["externalId"]]
    (list_id,) = single["send_to"]["list_ids"]
    listed = sorted(c["email"] for c in world.state.contacts.values() if list_id in c["list_ids"])
    assert listed == ["ann@example.test", "di@example.test", "ed@example.test"]
    progress = second["progress"]
    assert (progress["total"], progress["skipped"], progress["prepared"]) == (5, 2, 3)
    assert progress["skippedBy"] == {
        "unsubscribed": 0,
        "bounced": 1,
        "complained": 1,
        "noAddress": 0,
        "category": 0,
    }


def test_a_category_unsubscribe_leaves_the_contact_out_of_that_category_only(
    world: SendGridWorld,
) -> None:
    first = send(world, categoryExternalId="10")
    deliver(world, first, {"di": "group_unsubscribe"})  # SendGrid: asm_group_id 10
    same = send(world, categoryExternalId="10")
    assert recipients(world, same) == ["ann", "bob", "cy", "ed"]
    assert same["progress"]["skippedBy"]["category"] == 1
    other = send(world, categoryExternalId="20")
    assert recipients(world, other) == PEOPLE  # sorted already
    assert other["progress"]["skipped"] == 0


def test_soft_bounces_suppress_after_the_policy_limit_in_a_row(world: SendGridWorld) -> None:
    policy = world.client.put(
        "/api/v1/tenants/acme/suppression-policy", json={"softBounceLimit": 2}
    )
    assert policy.status_code == 200, policy.text
    first = send(world)
    deliver(world, first, {"ed": "blocked", "di": "blocked"})
    assert (status(world, "ed"), status(world, "di")) == ("Subscribed", "Subscribed")
    second = send(world)
    deliver(world, second, {"ed": "blocked"})  # di is delivered: her run of bounces ends
    assert (status(world, "ed"), status(world, "di")) == ("Bounced", "Subscribed")
    third = send(world)
    deliver(world, third, {"di": "blocked"})
    assert status(world, "di") == "Subscribed"  # one in a row since the delivery
    assert "ed" not in recipients(world, third)
    # a replay of the same batch moves no delivery, so it counts no soft bounce again
    world.state.post_events([e for e in world.state.events if e["email"] == "di@example.test"])
    assert status(world, "di") == "Subscribed"


def test_the_policy_api_validates_and_keeps_the_host_serving(world: SendGridWorld) -> None:
    path = "/api/v1/tenants/acme/suppression-policy"
    assert world.client.get(path).json() == {
        "hardBounce": True,
        "complaint": True,
        "softBounceLimit": 3,
        "providerSubscribeLifts": True,
    }
    for bad, field in (
        ({"softBounceLimit": 0}, "softBounceLimit"),
        ({"hardBounce": "maybe"}, "hardBounce"),
        ({"everything": True}, "everything"),
    ):
        answer = world.client.put(path, json=bad)
        assert answer.status_code == 422, answer.text
        assert field in answer.text
    assert world.client.get(path).json()["softBounceLimit"] == 3  # nothing stored
    assert world.client.put("/api/v1/tenants/nobody/suppression-policy", json={}).status_code == 404
    tenant_key = world.client.post("/api/v1/tenants", json={"id": "globex", "name": "G"})
    key = tenant_key.json()["apiKey"]
    with httpx.Client(base_url=world.server.url, timeout=30) as anonymous:
        refused = anonymous.put(path, json={}, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code in (401, 403)
        other = anonymous.get(path, headers={"Authorization": f"Bearer {key}"})
        assert other.status_code in (403, 404)  # another tenant's key reads nothing of acme
    # complaints and hard bounces switched off: the events change deliveries only
    assert world.client.put(path, json={"hardBounce": False, "complaint": False}).is_success
    first = send(world)
    deliver(world, first, {"bob": "bounce", "cy": "spamreport"})
    assert status(world, "bob") == "Subscribed"
    assert status(world, "cy") == "Unsubscribed"  # SendGrid also unsubscribes a spam report
