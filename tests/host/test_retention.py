"""Retention: expired invocation logs, webhook receipts, stored webhook requests (also
above a tenant's byte quota), remembered event ids and deliveries of long-finished
campaigns and settled outbox mail go, recent ones stay, and every purge transaction deletes a bounded number of rows;
through ``crm-host purge`` and the background task of a real ``crm-host serve``."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, update

from host.contract.types import UpdateContactAction
from host.db.models import (
    Campaign,
    Delivery,
    Invocation,
    OutboxMessage,
    WebhookEvent,
    WebhookReceipt,
    WebhookRequest,
)
from host.platform import Host
from host.retention import RetentionPolicy, RetentionPurger
from tests.cli_runner import Cli
from tests.e2e.server import running_host
from tests.host.conftest import make_host

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)
RECENT = NOW - timedelta(days=1)


def _invocation(started_at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "tenant_id": "acme",
        "module_id": "sendmail",
        "version": "1.0.0",
        "function": "CRM_Marketing_ParseWebhookRequest",
        "started_at": started_at,
        "duration_ms": 1.0,
        "outcome": "ok",
        "log": "captured module log line",
        "fetches": [],
        **extra,
    }


def _campaign(campaign_id: str, finished_at: datetime | None) -> dict[str, Any]:
    return {
        "id": campaign_id,
        "tenant_id": "acme",
        "module_id": "sendmail",
        "module_version": "1.0.0",
        "type": "Email",
        "name": campaign_id,
        "request": {},
        "audience": {},
        "stage": "done" if finished_at else "sending",
        "finished_at": finished_at,
    }


def seed(host: Host, *, old: int, recent: int) -> None:
    """``old`` expired and ``recent`` fresh rows of each kind; deliveries in a campaign
    finished long ago, one finished yesterday, and one still running since long ago."""
    host.tenants.create("acme", "Acme")
    with host.db.transaction() as session:
        session.execute(
            insert(Invocation),
            [_invocation(OLD) for _ in range(old)] + [_invocation(RECENT)] * recent,
        )
        receipts = [(OLD, old), (RECENT, recent)]
        session.execute(
            insert(WebhookReceipt),
            [
                {
                    "tenant_id": "acme",
                    "module_id": "sendmail",
                    "received_at": at,
                    "status_code": 200,
                }
                for at, count in receipts
                for _ in range(count)
            ],
        )
        session.execute(
            insert(Campaign),
            [
                _campaign("long-done", OLD),
                _campaign("just-done", RECENT),
                _campaign("running", None),
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "campaign_id": campaign,
                    "contact_id": f"c{i:05d}",
                    "history": [],
                    "updated_at": OLD,
                }
                for campaign, count in (
                    ("long-done", old),
                    ("just-done", recent),
                    ("running", recent),
                )
                for i in range(count)
            ],
        )


def counts(host: Host) -> dict[str, int]:
    with host.db.transaction() as session:
        return {
            "invocations": session.scalar(select(func.count()).select_from(Invocation)) or 0,
            "webhook_receipts": session.scalar(select(func.count()).select_from(WebhookReceipt))
            or 0,
            "deliveries": session.scalar(select(func.count()).select_from(Delivery)) or 0,
            "campaigns": session.scalar(select(func.count()).select_from(Campaign)) or 0,
        }


def test_purge_through_the_cli_deletes_expired_rows_only(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host.db")
    seed(host, old=1200, recent=7)
    host.close()
    cli = Cli.in_dir(tmp_path, CRM_HOST_RETENTION_BATCH_SIZE="500")
    result = cli.run("purge")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "invocations: 1200 deleted (older than 30 days)",
        "webhook_receipts: 1200 deleted (older than 30 days)",
        "webhook_requests: 0 deleted (older than 7 days)",
        "webhook_events: 0 deleted (older than 7 days)",
        "deliveries: 1200 deleted (older than 180 days)",
        "outbox: 0 deleted (older than 30 days)",
    ]
    again = make_host(tmp_path / "host.db")
    try:
        # recent rows, running campaigns' deliveries and the campaigns themselves stay
        assert counts(again) == {
            "invocations": 7,
            "webhook_receipts": 7,
            "deliveries": 14,
            "campaigns": 3,
        }
    finally:
        again.close()
    assert cli.run("purge").stdout.splitlines()[0] == "invocations: 0 deleted (older than 30 days)"


def test_zero_days_keeps_a_kind_forever(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host.db")
    seed(host, old=20, recent=2)
    host.close()
    cli = Cli.in_dir(tmp_path, CRM_HOST_RETENTION_INVOCATIONS_DAYS="0")
    result = cli.run("purge")
    assert result.returncode == 0, result.stderr
    assert "invocations: 0 deleted (kept forever)" in result.stdout
    again = make_host(tmp_path / "host.db")
    try:
        assert counts(again)["invocations"] == 22
        assert counts(again)["webhook_receipts"] == 2
    finally:
        again.close()


def test_every_purge_transaction_deletes_at_most_one_batch(host: Host) -> None:
    seed(host, old=1050, recent=3)
    events: list[tuple[str, int]] = []

    @event.listens_for(host.db.engine, "after_cursor_execute")
    def _statement(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            events.append(("delete", cursor.rowcount))

    @event.listens_for(host.db.engine, "commit")
    def _commit(_conn: Any) -> None:
        events.append(("commit", 0))

    purger = RetentionPurger(host.db, RetentionPolicy(30, 30, 180, batch_size=100), interval_s=3600)
    deleted = purger.purge()
    assert deleted == {
        "invocations": 1050,
        "webhook_receipts": 1050,
        "webhook_requests": 0,
        "webhook_events": 0,
        "deliveries": 1050,
        "outbox": 0,
    }
    deletes = [rows for kind, rows in events if kind == "delete"]
    assert sum(deletes) == 3 * 1050
    assert max(deletes) == 100 and len(deletes) >= 3 * 11
    # between two DELETE statements there is always a commit: one batch per transaction
    for first, second in itertools.pairwise(events):
        assert not (first[0] == "delete" and second[0] == "delete"), events
    assert counts(host)["invocations"] == 3


def test_bad_retention_settings_are_one_line_each(tmp_path: Path) -> None:
    for variable, value in (
        ("CRM_HOST_RETENTION_BATCH_SIZE", "0"),
        ("CRM_HOST_RETENTION_BATCH_SIZE", "100000"),
        ("CRM_HOST_RETENTION_INVOCATIONS_DAYS", "-1"),
        ("CRM_HOST_RETENTION_DELIVERIES_DAYS", "forever"),
    ):
        result = Cli.in_dir(tmp_path, **{variable: value}).run("purge")
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: invalid configuration: {variable}: ")
        assert "Traceback" not in result.stderr


def test_serve_purges_in_the_background(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host.db")
    seed(host, old=300, recent=4)
    host.close()
    with (
        running_host(
            tmp_path, CRM_HOST_RETENTION_INTERVAL_SECONDS="0.2", CRM_HOST_RETENTION_BATCH_SIZE="50"
        ) as served,
        served.client() as client,
    ):
        deadline = time.monotonic() + 60  # a liveness bound, not a timing assertion
        receipts: list[Any] = []
        while time.monotonic() < deadline:
            receipts = client.get(
                "/api/v1/tenants/acme/webhooks/receipts", params={"limit": 1000}
            ).json()
            if len(receipts) == 4:
                break
            time.sleep(0.2)
        assert len(receipts) == 4
        page = client.get("/api/v1/tenants/acme/invocations", params={"limit": 500}).json()
        assert len(page["items"]) == 4
        campaigns = "/api/v1/tenants/acme/campaigns"
        for campaign, left in (("long-done", 0), ("just-done", 4), ("running", 4)):
            deliveries = client.get(f"{campaigns}/{campaign}/deliveries").json()
            assert len(deliveries["items"]) == left, campaign
        # the campaign itself stays, and the server kept serving throughout
        assert client.get(f"{campaigns}/long-done").status_code == 200
    assert "retention purge failed" not in served.output()


def _stored(
    tenant_id: str, received_at: datetime, size: int, *, pending: bool = False
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "module_id": "sendmail",
        "received_at": received_at,
        "size_bytes": size,
        "sealed": "opaque",
        "pending": pending,
    }


def test_stored_requests_go_by_age_and_above_the_tenant_quota_oldest_first(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path / "host.db")
    host.tenants.create("acme", "Acme")
    host.tenants.create("small", "Small")
    hours = [NOW - timedelta(hours=h) for h in (5, 4, 3, 2, 1)]
    with host.db.transaction() as session:
        session.execute(
            insert(WebhookRequest),
            [
                _stored("acme", OLD, 10),
                *(_stored("acme", at, 400) for at in hours),
                _stored("small", RECENT, 100),
            ],
        )
    host.close()
    cli = Cli.in_dir(tmp_path, CRM_HOST_WEBHOOK_REQUESTS_MAX_BYTES_PER_TENANT="1000")
    result = cli.run("purge")
    assert result.returncode == 0, result.stderr
    # one by age; then acme holds 2000 bytes > 1000: its three oldest go
    assert "webhook_requests: 4 deleted (older than 7 days)" in result.stdout.splitlines()
    again = make_host(tmp_path / "host.db")
    with again.db.transaction() as session:
        kept = session.execute(
            select(WebhookRequest.tenant_id, WebhookRequest.received_at).order_by(WebhookRequest.id)
        ).all()
    again.close()
    assert [(t, at) for t, at in kept] == [
        ("acme", hours[3]),
        ("acme", hours[4]),
        ("small", RECENT),
    ]


def test_a_request_acknowledged_but_not_processed_survives_age_and_quota(host: Host) -> None:
    host.tenants.create("acme", "Acme")
    with host.db.transaction() as session:
        session.execute(
            insert(WebhookRequest),
            [
                _stored("acme", OLD, 900, pending=True),
                _stored("acme", OLD, 10),
                _stored("acme", RECENT, 900, pending=True),
                _stored("acme", RECENT, 400),
            ],
        )
    policy = RetentionPolicy(30, 30, 180, batch_size=100, webhook_requests_max_bytes=1000)
    deleted = RetentionPurger(host.db, policy, interval_s=3600).purge(NOW)
    assert deleted["webhook_requests"] == 2  # the old processed one by age, 400 by quota
    with host.db.transaction() as session:
        kept = session.execute(
            select(WebhookRequest.received_at, WebhookRequest.pending).order_by(WebhookRequest.id)
        ).all()
    assert [tuple(row) for row in kept] == [(OLD, True), (RECENT, True)]


def test_an_event_id_past_its_window_is_forgotten_and_applies_again(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host.db")
    host.tenants.create("acme", "Acme")
    with host.db.transaction() as session:
        session.execute(
            insert(WebhookEvent),
            [
                {"tenant_id": "acme", "module_id": "m", "event_id": "old", "seen_at": OLD},
                {"tenant_id": "acme", "module_id": "m", "event_id": "new", "seen_at": RECENT},
            ],
        )
    actions = [
        UpdateContactAction(type="UpdateContact", email=f"{e}@example.test", eventId=e)
        for e in ("old", "new")
    ]
    outcome = host.actions.apply("acme", "m", actions)
    assert [a["eventId"] for a in outcome.applied] == ["old"]  # outside the 7-day window
    assert [(s["eventId"], s["reason"]) for s in outcome.skipped] == [("new", "duplicate_event")]
    assert host.retention.purge()["webhook_events"] == 0  # "old" was renewed by applying it
    with host.db.transaction() as session:
        session.execute(
            update(WebhookEvent).where(WebhookEvent.event_id == "new").values(seen_at=OLD)
        )
    assert host.retention.purge()["webhook_events"] == 1
    with host.db.transaction() as session:
        assert session.scalars(select(WebhookEvent.event_id)).all() == ["old"]
    host.close()


def test_settled_outbox_mail_goes_after_its_days_and_queued_mail_stays(host: Host) -> None:
    host.tenants.create("acme", "Acme")
    mail = {"tenant_id": "acme", "module_id": "sendmail", "subject": "s", "html": "<p>x</p>"}
    with host.db.transaction() as session:
        session.execute(
            insert(OutboxMessage),
            [
                {
                    **mail,
                    "recipient": f"{status}-{age}@example.test",
                    "status": status,
                    "created_at": at,
                }
                for status in ("sent", "failed", "queued")
                for age, at in (("old", OLD), ("recent", RECENT))
            ],
        )
    purger = RetentionPurger(
        host.db, RetentionPolicy(30, 30, 180, batch_size=100, outbox_days=30), interval_s=3600
    )
    deleted = purger.purge(NOW)
    assert deleted["outbox"] == 2
    with host.db.transaction() as session:
        left = sorted(session.scalars(select(OutboxMessage.recipient)))
    assert left == [
        "failed-recent@example.test",
        "queued-old@example.test",
        "queued-recent@example.test",
        "sent-recent@example.test",
    ]
    kept_forever = RetentionPurger(
        host.db, RetentionPolicy(30, 30, 180, batch_size=100, outbox_days=0), interval_s=3600
    )
    assert kept_forever.purge(NOW + timedelta(days=9999))["outbox"] == 0
