"""ActionApplier on its own (no HTTP, no sandbox): each action's rules (forward-only
statuses, stats set not added, idempotent unsubscribes, queued mail), lookups scoped to the
tenant AND module, one transaction, and events that fire only after commit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select, update

from host.contract.types import Action
from host.db.models import (
    Campaign,
    Contact,
    ContactUnsubscription,
    Delivery,
    OutboxMessage,
    Tenant,
)
from host.hookspecs import hookimpl
from host.marketing.actions import ActionApplier, ApplyOutcome
from host.marketing.delivery_moves import MovesLost, locked_deliveries, move_forward, write_moves
from host.platform import Host
from tests.host.conftest import make_host

ACTIONS = TypeAdapter(list[Action])


class CommitWitness:
    """An event plugin that looks at the database from its own session when called, to
    prove events fire after the commit (the change is visible to everyone)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def crm_host_campaign_status_changed(
        self, tenant_id: str, campaign_id: str, old_status: str, new_status: str, error: Any
    ) -> None:
        with self.host.db.transaction() as session:
            stored = session.get(Campaign, campaign_id)
            assert stored is not None
            self.seen.append(("campaign", (old_status, new_status, stored.status, error)))

    @hookimpl
    def crm_host_contact_unsubscribed(
        self, tenant_id: str, contact_id: str, email: str, category: Any
    ) -> None:
        with self.host.db.transaction() as session:
            contact = session.get(Contact, (tenant_id, contact_id))
            assert contact is not None
            self.seen.append(("unsubscribed", (contact_id, email, category, contact.status)))

    @hookimpl
    def crm_host_actions_applied(
        self, tenant_id: str, module_id: str, applied: list[Any], skipped: list[Any]
    ) -> None:
        self.seen.append(("applied", (len(applied), [s["reason"] for s in skipped])))
        raise RuntimeError("a broken plugin does not undo the event")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db")
    with instance.db.transaction() as session:
        for tenant in ("acme", "globex"):
            session.add(Tenant(id=tenant, name=tenant, api_key_hash=f"hash-{tenant}"))
        session.flush()
        session.add(
            Contact(
                tenant_id="acme", id="c1", email="Ann@Example.test", email_key="ann@example.test"
            )
        )
        session.add(
            Contact(
                tenant_id="globex", id="g1", email="ann@example.test", email_key="ann@example.test"
            )
        )
        for cid, tenant, module in (
            ("a-send", "acme", "sendmail"),
            ("a-other", "acme", "othermail"),
            ("g-send", "globex", "sendmail"),
        ):
            session.add(
                Campaign(
                    id=cid,
                    tenant_id=tenant,
                    module_id=module,
                    module_version="1.0.0",
                    type="Email",
                    name=cid,
                    status="Sending",
                    stage="done",  # sent by the send job; the webhook tracks it
                    external_id="ext-1",
                )
            )
            session.flush()
            session.add(
                Delivery(
                    campaign_id=cid, contact_id="c1", email_key="ann@example.test", status="Sent"
                )
            )
    yield instance
    instance.close()


@pytest.fixture
def witness(host: Host) -> CommitWitness:
    plugin = CommitWitness(host)
    host.hooks.register(plugin, name="witness")
    return plugin


def apply(host: Host, *actions: dict[str, Any], module: str = "sendmail") -> ApplyOutcome:
    return host.actions.apply("acme", module, ACTIONS.validate_python(list(actions)))


def get(host: Host, model: type[Any], key: Any) -> Any:
    with host.db.transaction() as session:
        return session.get(model, key)


def delivery_action(state: str, email: str = "ann@example.test") -> dict[str, Any]:
    return {"type": "UpdateDeliveryStatus", "email": email, "externalId": "ext-1", "status": state}


def test_delivery_moves_forward_only_with_history_on_each_move(host: Host) -> None:
    for state in ("Delivered", "Opened", "Delivered", "Opened", "Clicked", "Sent"):
        apply(host, delivery_action(state, "  ANN@example.TEST "))
    row = get(host, Delivery, ("a-send", "c1"))
    assert row.status == "Clicked"
    assert [h["status"] for h in row.history] == ["Delivered", "Opened", "Clicked"]
    # a bounce after engagement still wins (the sender must act on it)
    apply(host, delivery_action("Bounced"))
    assert get(host, Delivery, ("a-send", "c1")).status == "Bounced"


def test_moves_of_one_batch_are_written_once_with_each_step_in_the_history(host: Host) -> None:
    """One batch moving the same delivery several times: decided in memory on the locked
    row, written once at the end, each forward step applied and in the history once."""
    states = ("Delivered", "Opened", "Delivered", "SoftBounced", "Clicked", "Sent")
    outcome = apply(host, *(delivery_action(state) for state in states))
    assert [a["index"] for a in outcome.applied] == [0, 1, 4]
    assert [s["reason"] for s in outcome.skipped] == ["no_change"] * 3
    row = get(host, Delivery, ("a-send", "c1"))
    assert row.status == "Clicked"
    assert [h["status"] for h in row.history] == ["Delivered", "Opened", "Clicked"]
    assert get(host, Contact, ("acme", "c1")).soft_bounces == 0


def test_a_delivery_moved_behind_the_batchs_lock_rolls_the_batch_back(host: Host) -> None:
    """The batch reports as applied what it decided on its locked rows; if a row changed
    anyway (a lock not held), the row count says so and nothing of the batch is kept."""
    moved_behind = update(Delivery).where(Delivery.campaign_id == "a-send").values(status="Clicked")
    with pytest.raises(MovesLost), host.db.write_transaction() as session:
        [row] = locked_deliveries(session, ["a-send"], ["ann@example.test"])
        session.execute(moved_behind)  # what a writer without the lock could do
        assert move_forward(row, "Opened", datetime.now(UTC))
        write_moves(session, [row])
    stored = get(host, Delivery, ("a-send", "c1"))
    assert (stored.status, stored.history) == ("Sent", [])


def test_campaigns_are_looked_up_by_tenant_and_module(host: Host) -> None:
    outcome = apply(host, delivery_action("Opened"), module="othermail")
    assert [a["index"] for a in outcome.applied] == [0]
    assert get(host, Delivery, ("a-other", "c1")).status == "Opened"
    assert get(host, Delivery, ("a-send", "c1")).status == "Sent"
    assert get(host, Delivery, ("g-send", "c1")).status == "Sent"
    skipped = apply(host, delivery_action("Opened"), module="nomail").skipped
    assert [s["reason"] for s in skipped] == ["unknown_campaign"]


def test_campaign_status_forward_only_and_event_after_commit(
    host: Host, witness: CommitWitness
) -> None:
    apply(host, {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Paused"})
    apply(host, {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Sending"})
    outcome = apply(
        host,
        {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Failed", "error": "quota"},
        {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Sent"},
    )
    assert [s["reason"] for s in outcome.skipped] == ["no_change"]
    stored = get(host, Campaign, "a-send")
    assert (stored.status, stored.error) == ("Failed", "quota")
    assert stored.finished_at is not None
    campaign_events = [payload for name, payload in witness.seen if name == "campaign"]
    assert campaign_events == [
        ("Sending", "Paused", "Paused", None),
        ("Paused", "Sending", "Sending", None),
        ("Sending", "Failed", "Failed", "quota"),
    ]


def test_stats_are_set_not_added(host: Host) -> None:
    stats = {
        "type": "UpdateCampaignStats",
        "externalId": "ext-1",
        "stats": {"sent": 5, "opened": 2},
    }
    apply(host, stats)
    first = get(host, Campaign, "a-send")
    assert apply(host, stats).skipped[0]["reason"] == "no_change"
    again = get(host, Campaign, "a-send")
    assert again.stats == first.stats and again.stats_fetched_at == first.stats_fetched_at
    apply(host, {**stats, "stats": {"sent": 7}})
    assert get(host, Campaign, "a-send").stats == {
        "total": 0,
        "sent": 7,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "bounced": 0,
        "unsubscribed": 0,
        "complained": 0,
        "failed": 0,
    }


def test_unsubscribe_category_then_all_idempotent_with_events(
    host: Host, witness: CommitWitness
) -> None:
    news = {"type": "Unsubscribe", "email": "ann@example.test", "externalId": "news"}
    everything = {"type": "Unsubscribe", "email": "ANN@example.test", "externalId": {"all": True}}
    assert len(apply(host, news, news).applied) == 1  # the second is a replay within the batch
    apply(host, everything)
    assert apply(host, everything, news).skipped[0]["reason"] == "no_change"
    with host.db.transaction() as session:
        rows = session.scalars(select(ContactUnsubscription)).all()
        assert [(r.tenant_id, r.contact_id, r.category, r.module_id) for r in rows] == [
            ("acme", "c1", "news", "sendmail")
        ]
        assert session.get(Contact, ("acme", "c1")).status == "Unsubscribed"
        assert session.get(Contact, ("globex", "g1")).status == "Subscribed"
    unsubscribed = [payload for name, payload in witness.seen if name == "unsubscribed"]
    assert unsubscribed == [
        ("c1", "Ann@Example.test", "news", "Subscribed"),
        ("c1", "Ann@Example.test", None, "Unsubscribed"),
    ]


def test_unsubscribe_category_longer_than_its_column_is_an_invalid_value() -> None:
    # PostgreSQL would refuse to store it (and fail the whole webhook with a bare 500)
    long = {"type": "Unsubscribe", "email": "ann@example.test", "externalId": "c" * 256}
    with pytest.raises(ValidationError, match="at most 255 characters"):
        ACTIONS.validate_python([long])


def test_complained_contact_stays_complained(host: Host) -> None:
    with host.db.transaction() as session:
        session.get(Contact, ("acme", "c1")).status = "Complained"
    outcome = apply(
        host, {"type": "Unsubscribe", "email": "ann@example.test", "externalId": {"all": True}}
    )
    assert outcome.skipped[0]["reason"] == "no_change"
    assert get(host, Contact, ("acme", "c1")).status == "Complained"


def test_send_email_is_queued_once_while_waiting(host: Host) -> None:
    mail = {
        "type": "SendEmail",
        "email": " ann@example.test ",
        "subject": "Confirm\r\nBcc: everyone@example.test",
        "html": "<b>hi</b>",
    }
    woken: list[int] = []
    host.actions.on_mail_queued = lambda: woken.append(1)
    outcome = apply(host, mail, mail)
    assert [s["reason"] for s in outcome.skipped] == ["no_change"]
    assert outcome.queued_mail == 1 and woken == [1]
    with host.db.transaction() as session:
        [row] = session.scalars(select(OutboxMessage)).all()
        assert (row.recipient, row.subject, row.html, row.status, row.attempts) == (
            "ann@example.test",
            "Confirm Bcc: everyone@example.test",
            "<b>hi</b>",
            "queued",
            0,
        )
        row.status = "sent"
    assert len(apply(host, mail).applied) == 1  # once sent, a new SendEmail is a new mail
    assert outcome.applied[0].get("html") is None  # descriptions leave bulky HTML out


def test_send_email_to_an_address_longer_than_its_column_is_skipped(host: Host) -> None:
    # PostgreSQL would refuse to store it (and fail the whole webhook with a bare 500)
    mail = {"type": "SendEmail", "email": "a" * 320 + "@x.test", "subject": "s", "html": "h"}
    assert [s["reason"] for s in apply(host, mail).skipped] == ["invalid_recipient"]


def test_failure_mid_batch_rolls_back_and_fires_nothing(
    host: Host, witness: CommitWitness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ActionApplier, "_send_email", broken)
    with pytest.raises(RuntimeError, match="boom"):
        apply(
            host,
            delivery_action("Clicked"),
            {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Sent"},
            {"type": "SendEmail", "email": "a@b.test", "subject": "s", "html": "h"},
        )
    assert get(host, Delivery, ("a-send", "c1")).status == "Sent"
    assert get(host, Campaign, "a-send").status == "Sending"
    assert witness.seen == []


def test_event_plugin_failure_does_not_undo_the_change(host: Host, witness: CommitWitness) -> None:
    outcome = apply(host, delivery_action("Opened"), delivery_action("Opened", "x@y.test"))
    assert witness.seen == [("applied", (1, ["unknown_recipient"]))]
    assert len(outcome.applied) == 1
    assert get(host, Delivery, ("a-send", "c1")).status == "Opened"


def test_no_actions_no_event(host: Host, witness: CommitWitness) -> None:
    assert apply(host) == ApplyOutcome()
    assert witness.seen == []


def test_large_batch_is_looked_up_in_chunks(host: Host) -> None:
    strangers = [delivery_action("Opened", f"p{i}@example.test") for i in range(1200)]
    outcome = apply(host, *strangers, delivery_action("Clicked"))
    assert len(outcome.skipped) == 1200 and len(outcome.applied) == 1
    assert {s["reason"] for s in outcome.skipped} == {"unknown_recipient"}
    assert get(host, Delivery, ("a-send", "c1")).status == "Clicked"
