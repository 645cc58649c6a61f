"""Webhook batches applied at the same moment (issue 17 item 2): the same batch posted to two
nodes at once, and different events for the same recipients arriving together.

Two real hosts on ONE database (two nodes), each served over HTTP by uvicorn on 127.0.0.1,
with the module running in the sandbox; threads post at the same instant (a barrier),
alternately to both nodes. Whatever the interleaving: every answer is 200 (no "database is
locked", no 500), a delivery only ever moves forward and ends at the highest status any batch
carried, its history holds each move once, and the receipts tell the truth — across all of
them, each move is reported applied exactly once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from emulators.runner import serve
from host.api.app import create_app
from host.db.models import Campaign, Contact, Delivery, OutboxMessage, WebhookReceipt
from host.marketing.lifecycle import DELIVERY_RANK
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import SECRET_API_KEY, email_manifest, json_body, make_host
from tests.host.test_webhooks import WEBHOOK_SCRIPT

RECIPIENTS = 6


@dataclass
class Nodes:
    """Two hosts sharing one database, each behind its own HTTP server."""

    hosts: tuple[Host, Host]
    urls: tuple[str, str]
    hook_path: str


@pytest.fixture
def nodes(db_path: Path, pool: SandboxPool) -> Iterator[Nodes]:
    """Per test, on each database backend (``db_path`` is parametrised: SQLite and
    PostgreSQL), so the row locks and conditional updates are exercised on both."""
    first = make_host(db_path, sandbox=pool)
    first.registry.upload(
        from_json_body(json_body(email_manifest(), WEBHOOK_SCRIPT), max_script_bytes=64 * 1024)
    )
    first.tenants.create("acme", "Acme")
    first.tenants.configure("acme", "sendmail", settings={"api_key": SECRET_API_KEY})
    second = make_host(db_path, sandbox=pool)  # another node: same database, own memory
    hook = first.tenants.enablement("acme", "sendmail").webhook_url
    try:
        with serve(create_app(first)) as one, serve(create_app(second)) as two:
            yield Nodes(
                (first, second), (one.url, two.url), hook.removeprefix(first.settings.public_url)
            )
    finally:
        second.close()
        first.close()


def seed_campaign(host: Host, name: str) -> list[str]:
    """A campaign ``name`` (externalId ``ext-<name>``) with RECIPIENTS recipients, all Sent;
    their email addresses."""
    emails = [f"r{i}-{name}@example.test" for i in range(RECIPIENTS)]
    with host.db.transaction() as session:
        session.add(
            Campaign(
                id=name,
                tenant_id="acme",
                module_id="sendmail",
                module_version="1.0.0",
                type="Email",
                name=name,
                status="Sending",
                stage="done",
                external_id=f"ext-{name}",
            )
        )
        for i, email in enumerate(emails):
            session.add(
                Contact(tenant_id="acme", id=f"{name}-c{i}", name="R", email=email, email_key=email)
            )
        session.flush()
        for i, email in enumerate(emails):
            session.add(
                Delivery(
                    campaign_id=name,
                    contact_id=f"{name}-c{i}",
                    email_key=email,
                    status="Sent",
                    history=[{"status": "Sent", "at": "2026-01-01T00:00:00+00:00"}],
                )
            )
    return emails


def batch(name: str, emails: list[str], status: str, *, event_ids: bool = False) -> dict[str, Any]:
    """One action per recipient; with ``event_ids`` each carries the provider's event id
    (the same ids in every copy of the batch, as a provider's retry brings them)."""
    return {
        "actions": [
            {
                "type": "UpdateDeliveryStatus",
                "email": email,
                "externalId": f"ext-{name}",
                "status": status,
                **({"eventId": f"{name}-{status}-{i}"} if event_ids else {}),
            }
            for i, email in enumerate(emails)
        ]
    }


def post_at_once(nodes: Nodes, batches: list[dict[str, Any]]) -> list[httpx.Response]:
    """Post every batch in its own thread, released together, alternately to both nodes."""
    barrier = threading.Barrier(len(batches))

    def post(index: int) -> httpx.Response:
        with httpx.Client(base_url=nodes.urls[index % 2], timeout=60) as client:
            barrier.wait()
            return client.post(nodes.hook_path, content=json.dumps(batches[index]))

    with ThreadPoolExecutor(len(batches)) as threads:
        return list(threads.map(post, range(len(batches))))


def deliveries(host: Host, name: str) -> dict[str, Delivery]:
    with host.db.transaction() as session:
        rows = session.scalars(select(Delivery).where(Delivery.campaign_id == name))
        return {str(row.email_key): row for row in rows}


def receipts_since(host: Host, last_id: int) -> list[WebhookReceipt]:
    with host.db.transaction() as session:
        return list(
            session.scalars(
                select(WebhookReceipt)
                .where(WebhookReceipt.id > last_id)
                .order_by(WebhookReceipt.id)
            )
        )


def last_receipt_id(host: Host) -> int:
    with host.db.transaction() as session:
        return int(
            session.scalar(select(WebhookReceipt.id).order_by(WebhookReceipt.id.desc())) or 0
        )


def test_the_same_batch_posted_to_both_nodes_at_once_is_applied_once(nodes: Nodes) -> None:
    host = nodes.hosts[0]
    emails = seed_campaign(host, "same")
    before = last_receipt_id(host)
    answers = post_at_once(nodes, [batch("same", emails, "Opened")] * 6)

    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    for row in deliveries(host, "same").values():
        assert row.status == "Opened"
        assert [h["status"] for h in row.history] == ["Sent", "Opened"]  # moved once
    receipts = receipts_since(host, before)
    assert len(receipts) == 6
    assert all(r.status_code == 200 and r.error is None for r in receipts)
    # each recipient's move is reported applied by exactly one receipt, skipped by the rest
    assert sum(r.applied for r in receipts) == RECIPIENTS
    for receipt in receipts:
        assert receipt.applied + len(receipt.skipped) == RECIPIENTS
        assert {s["reason"] for s in receipt.skipped} <= {"no_change"}


def test_the_same_events_arriving_together_are_applied_once_and_nothing_fails(
    nodes: Nodes,
) -> None:
    """A provider's retry overtaking the first delivery: one batch claims the event ids, the
    others see them as repeats; no answer is a 500 from the two inserts meeting."""
    host = nodes.hosts[0]
    emails = seed_campaign(host, "events")
    before = last_receipt_id(host)
    answers = post_at_once(nodes, [batch("events", emails, "Opened", event_ids=True)] * 6)

    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    for row in deliveries(host, "events").values():
        assert [h["status"] for h in row.history] == ["Sent", "Opened"]
    receipts = receipts_since(host, before)
    assert all(r.status_code == 200 and r.error is None for r in receipts)
    assert sum(r.applied for r in receipts) == RECIPIENTS
    duplicates = [s for r in receipts for s in r.skipped if s["reason"] == "duplicate_event"]
    assert len(duplicates) == 5 * RECIPIENTS  # every other copy skipped each event as seen


def test_different_events_for_the_same_recipients_together_keep_the_highest(
    nodes: Nodes,
) -> None:
    host = nodes.hosts[0]
    emails = seed_campaign(host, "mixed")
    before = last_receipt_id(host)
    statuses = ["Delivered", "Clicked", "Opened", "SoftBounced", "Delivered", "Opened"]
    answers = post_at_once(nodes, [batch("mixed", emails, s) for s in statuses])

    assert [a.status_code for a in answers] == [200] * len(statuses), [a.text for a in answers]
    rows = deliveries(host, "mixed")
    for row in rows.values():
        assert row.status == "Clicked"  # the highest rank any batch carried, never lost
        ranks = [DELIVERY_RANK[h["status"]] for h in row.history]
        assert ranks == sorted(set(ranks)), row.history  # only ever forward, each move once
    receipts = receipts_since(host, before)
    assert all(r.status_code == 200 and r.error is None for r in receipts)
    moves = sum(len(row.history) - 1 for row in rows.values())
    assert sum(r.applied for r in receipts) == moves  # what the receipts say happened did


def test_both_nodes_keep_serving_and_agree_afterwards(nodes: Nodes) -> None:
    emails = seed_campaign(nodes.hosts[0], "after")
    answers = post_at_once(nodes, [batch("after", emails, "Delivered")] * 2)
    assert [a.status_code for a in answers] == [200, 200]
    first, second = (deliveries(h, "after") for h in nodes.hosts)
    assert {k: r.status for k, r in first.items()} == {k: r.status for k, r in second.items()}
    assert set(r.status for r in first.values()) == {"Delivered"}


def test_the_same_mail_event_arriving_together_is_queued_once(nodes: Nodes) -> None:
    """An action that locks no existing row (SendEmail): the event id itself must decide
    which of the concurrent copies applies it."""
    host = nodes.hosts[0]
    mail = {
        "actions": [
            {
                "type": "SendEmail",
                "email": "welcome@example.test",
                "subject": "Welcome",
                "html": "<p>Hi</p>",
                "eventId": "mail-1",
            }
        ]
    }
    answers = post_at_once(nodes, [mail] * 6)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    with host.db.transaction() as session:
        queued = session.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == "welcome@example.test")
        ).all()
    assert len(queued) == 1
