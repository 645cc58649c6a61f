"""Retention: invocation log rows (with their captured logs), webhook receipts, stored
webhook requests, remembered provider event ids, the deliveries of finished campaigns and the
outbox's settled mail (sent, or failed for good: recipients and bodies are personal data) are
deleted once older than their configured number of days; queued mail is never purged.
Stored webhook requests are also bounded per tenant
(``CRM_HOST_WEBHOOK_REQUESTS_MAX_BYTES_PER_TENANT``): above it the oldest go first. Event
ids are kept for exactly their dedupe window (``CRM_HOST_WEBHOOK_EVENT_WINDOW_DAYS``): an
older one no longer makes a repeat.

At 100 webhooks a second these tables gain millions of rows a day. The purge deletes at most
``batch_size`` rows per transaction, oldest first, through the timestamp indexes, so a purge
never holds the write lock long enough to stall the webhooks and campaign jobs writing beside
it. ``serve`` runs it in one background thread every ``interval_s``; ``crm-host purge`` runs
it once. Several servers may purge the same database: a row deleted by one is simply not
found by the other.

Deliveries are kept as long as their campaign runs: their clock starts when the campaign
finishes (``finished_at``); the campaign row itself, with its totals and stats, stays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from host.config import HostSettings
from host.db.engine import Database
from host.db.models import (
    Campaign,
    Delivery,
    Invocation,
    OutboxMessage,
    WebhookEvent,
    WebhookReceipt,
    WebhookRequest,
)

log = logging.getLogger(__name__)

KINDS = (
    "invocations",
    "webhook_receipts",
    "webhook_requests",
    "webhook_events",
    "deliveries",
    "outbox",
)


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind is kept (0: forever) and the most rows one transaction deletes."""

    invocations_days: float
    webhook_receipts_days: float
    deliveries_days: float
    batch_size: int
    webhook_requests_days: float = 7.0
    webhook_events_days: float = 7.0
    webhook_requests_max_bytes: int = 1024**3
    """Most bytes of stored requests per tenant (0: none are stored, nothing to bound)."""
    outbox_days: float = 30.0

    @classmethod
    def from_settings(cls, settings: HostSettings) -> RetentionPolicy:
        return cls(
            settings.retention_invocations_days,
            settings.retention_webhook_receipts_days,
            settings.retention_deliveries_days,
            settings.retention_batch_size,
            webhook_requests_days=settings.retention_webhook_requests_days,
            webhook_events_days=settings.webhook_event_window_days,
            webhook_requests_max_bytes=settings.webhook_requests_max_bytes_per_tenant,
            outbox_days=settings.retention_outbox_days,
        )

    def days(self, kind: str) -> float:
        return float(getattr(self, f"{kind}_days"))


class RetentionPurger:
    """Deletes what the policy no longer keeps, in bounded batches."""

    def __init__(self, db: Database, policy: RetentionPolicy, *, interval_s: float):
        self.db = db
        self.policy = policy
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete every expired row now; the number deleted per kind."""
        now = now or datetime.now(UTC)
        purges: dict[str, Callable[[datetime], int]] = {
            "invocations": self._purge_invocations,
            "webhook_receipts": self._purge_receipts,
            "webhook_requests": self._purge_requests,
            "webhook_events": self._purge_events,
            "deliveries": self._purge_deliveries,
            "outbox": self._purge_outbox,
        }
        deleted: dict[str, int] = {}
        for kind, purge in purges.items():
            days = self.policy.days(kind)
            deleted[kind] = purge(now - timedelta(days=days)) if days > 0 else 0
        deleted["webhook_requests"] += self._purge_requests_over_quota()
        return deleted

    def _purge_invocations(self, cutoff: datetime) -> int:
        return self._purge_by_id(Invocation, Invocation.started_at, cutoff)

    def _purge_receipts(self, cutoff: datetime) -> int:
        return self._purge_by_id(WebhookReceipt, WebhookReceipt.received_at, cutoff)

    def _purge_requests(self, cutoff: datetime) -> int:
        processed = WebhookRequest.pending.is_(False)
        return self._purge_by_id(WebhookRequest, WebhookRequest.received_at, cutoff, processed)

    def _purge_outbox(self, cutoff: datetime) -> int:
        settled = OutboxMessage.status.in_(("sent", "failed"))
        return self._purge_by_id(OutboxMessage, OutboxMessage.created_at, cutoff, settled)

    def _purge_events(self, cutoff: datetime) -> int:
        total = 0
        while not self._stop.is_set():
            with self.db.transaction() as session:
                keys = session.execute(
                    select(WebhookEvent.tenant_id, WebhookEvent.module_id, WebhookEvent.event_id)
                    .where(WebhookEvent.seen_at < cutoff)
                    .order_by(WebhookEvent.seen_at)
                    .limit(self.policy.batch_size)
                ).all()
                if keys:
                    session.execute(
                        delete(WebhookEvent).where(
                            tuple_(
                                WebhookEvent.tenant_id,
                                WebhookEvent.module_id,
                                WebhookEvent.event_id,
                            ).in_([tuple(key) for key in keys])
                        )
                    )
            total += len(keys)
            if len(keys) < self.policy.batch_size:
                break
        return total

    def _purge_requests_over_quota(self) -> int:
        """Per tenant over the byte quota: delete its oldest stored requests until under.
        A request acknowledged but not processed yet (acknowledge-first intake) is never
        deleted, by age or by quota: the service was told it arrived, so it is the only copy."""
        quota = self.policy.webhook_requests_max_bytes
        with self.db.transaction() as session:
            over = session.execute(
                select(WebhookRequest.tenant_id, func.sum(WebhookRequest.size_bytes))
                .group_by(WebhookRequest.tenant_id)
                .having(func.sum(WebhookRequest.size_bytes) > quota)
            ).all()
        total = 0
        for tenant_id, used in over:
            excess = int(used) - quota
            while excess > 0 and not self._stop.is_set():
                with self.db.transaction() as session:
                    rows = session.execute(
                        select(WebhookRequest.id, WebhookRequest.size_bytes)
                        .where(
                            WebhookRequest.tenant_id == tenant_id,
                            WebhookRequest.pending.is_(False),
                        )
                        .order_by(WebhookRequest.id)
                        .limit(self.policy.batch_size)
                    ).all()
                    doomed: list[int] = []
                    for request_id, size in rows:
                        if excess <= 0:
                            break
                        doomed.append(request_id)
                        excess -= size
                    if doomed:
                        session.execute(delete(WebhookRequest).where(WebhookRequest.id.in_(doomed)))
                total += len(doomed)
                if not doomed:
                    break
        return total

    def _purge_by_id(
        self,
        model: type[Invocation] | type[WebhookReceipt] | type[WebhookRequest] | type[OutboxMessage],
        stamp: InstrumentedAttribute[datetime],
        cutoff: datetime,
        *conditions: ColumnElement[bool],
    ) -> int:
        """Oldest first through the index on ``stamp``, ``batch_size`` rows a transaction;
        only rows that also meet ``conditions``."""
        total = 0
        while not self._stop.is_set():
            with self.db.transaction() as session:
                ids = session.scalars(
                    select(model.id)
                    .where(stamp < cutoff, *conditions)
                    .order_by(stamp)
                    .limit(self.policy.batch_size)
                ).all()
                if ids:
                    session.execute(delete(model).where(model.id.in_(ids)))
            total += len(ids)
            if len(ids) < self.policy.batch_size:
                break
        return total

    def _purge_deliveries(self, cutoff: datetime) -> int:
        total = 0
        with self.db.transaction() as session:
            campaigns = session.scalars(
                select(Campaign.id).where(
                    Campaign.finished_at.is_not(None), Campaign.finished_at < cutoff
                )
            ).all()
        for campaign_id in campaigns:
            while not self._stop.is_set():
                with self.db.transaction() as session:
                    contacts = session.scalars(
                        select(Delivery.contact_id)
                        .where(Delivery.campaign_id == campaign_id)
                        .order_by(Delivery.contact_id)
                        .limit(self.policy.batch_size)
                    ).all()
                    if contacts:
                        session.execute(
                            delete(Delivery).where(
                                Delivery.campaign_id == campaign_id,
                                Delivery.contact_id.in_(contacts),
                            )
                        )
                total += len(contacts)
                if len(contacts) < self.policy.batch_size:
                    break
        return total

    # --- background thread (started by serve) -------------------------------------------

    def start(self) -> None:
        """Purge every ``interval_s`` in a daemon thread, the first time at once."""
        if self._thread is not None or not any(self.policy.days(k) > 0 for k in KINDS):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="crm-host-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deleted = self.purge()
                if any(deleted.values()):
                    log.info("retention purge deleted %s", deleted)
            except Exception:  # a failed purge is retried next interval; serving goes on
                log.exception("retention purge failed")
            self._stop.wait(self.interval_s)
