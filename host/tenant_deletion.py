"""Deleting a tenant: a tombstone at once, then a purge in small batches.

* **Tombstone** (one transaction): ``tenants.deleted_at`` is set, the tenant's unfinished
  campaigns are cancelled (their leases dropped, so a running job stops at its next write),
  its queued mail is failed. From that commit on the tenant is 404 on every route, its API key
  opens nothing and its webhook URLs answer 404.
* **Purge**: the tenant's rows are deleted table by table, children first, at most
  ``batch_rows`` (≤ 10,000) rows per transaction, so the database is never locked for long
  and other tenants are served between batches. Every batch commits on its own, so the purge
  resumes where it stopped after a crash or a restart: :class:`TenantPurger` (started with
  the server) looks for tombstones first thing. The tenant row itself goes last; then the id
  is free again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, tuple_, update

from host.contract.enums import CampaignStatus
from host.db.engine import Database
from host.db.models import (
    Campaign,
    CampaignKey,
    ConsoleUser,
    Contact,
    ContactSuppression,
    ContactUnsubscription,
    Delivery,
    Enablement,
    IdempotencyKey,
    Invocation,
    ModuleStorage,
    OutboxMessage,
    SuppressionPolicySetting,
    Template,
    Tenant,
    WebhookEvent,
    WebhookReceipt,
    WebhookRequest,
    utcnow,
)
from host.errors import NotFound
from host.marketing.lifecycle import ACTIVE_STAGES, CampaignStage
from host.marketing.outbox import FAILED, QUEUED

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 10_000

TENANT_TABLES: tuple[Any, ...] = (
    ContactUnsubscription,
    Contact,
    Campaign,
    Template,
    Invocation,
    WebhookReceipt,
    WebhookRequest,
    WebhookEvent,
    OutboxMessage,
    ModuleStorage,
    Enablement,
    IdempotencyKey,
    ContactSuppression,
    SuppressionPolicySetting,
    CampaignKey,
    ConsoleUser,
)
"""Tables with a ``tenant_id``, in purge order (children before parents); deliveries, which
belong to campaigns, go before all of them."""


@dataclass(frozen=True)
class PurgeBatch:
    tenant_id: str
    table: str
    rows: int


def _primary_key(model: Any) -> Any:
    columns = list(model.__table__.primary_key.columns)
    return columns[0] if len(columns) == 1 else tuple_(*columns)


class TenantDeletion:
    def __init__(self, db: Database, *, batch_rows: int = MAX_BATCH_ROWS):
        if not 1 <= batch_rows <= MAX_BATCH_ROWS:
            raise ValueError(f"batch_rows must be 1-{MAX_BATCH_ROWS}")
        self.db = db
        self.batch_rows = batch_rows

    def tombstone(self, tenant_id: str) -> None:
        """Make the tenant disappear from every surface, in one transaction."""
        now = utcnow()
        with self.db.transaction() as session:
            marked = session.execute(
                update(Tenant)
                .where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
                .values(deleted_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if not marked:
                raise NotFound(f"tenant {tenant_id} does not exist")
            session.execute(
                update(Campaign)
                .where(Campaign.tenant_id == tenant_id, Campaign.stage.in_(ACTIVE_STAGES))
                .values(
                    stage=CampaignStage.Cancelled,
                    status=CampaignStatus.Cancelled.value,
                    error="tenant deleted",
                    finished_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.tenant_id == tenant_id, OutboxMessage.status == QUEUED)
                .values(status=FAILED, error="tenant deleted")
            )

    def pending(self) -> list[str]:
        """Tombstoned tenants whose rows are not purged yet, oldest deletion first."""
        with self.db.transaction() as session:
            return list(
                session.scalars(
                    select(Tenant.id)
                    .where(Tenant.deleted_at.is_not(None))
                    .order_by(Tenant.deleted_at)
                )
            )

    def purge_batch(self, tenant_id: str) -> PurgeBatch | None:
        """Delete the next ≤ ``batch_rows`` rows of a tombstoned tenant in one transaction;
        None once everything, the tenant row included, is gone."""
        limit = self.batch_rows
        with self.db.transaction() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.deleted_at is None:
                return None
            keys = (
                select(Delivery.campaign_id, Delivery.contact_id)
                .join(Campaign, Campaign.id == Delivery.campaign_id)
                .where(Campaign.tenant_id == tenant_id)
                .limit(limit)
            )
            deleted = session.execute(
                delete(Delivery).where(tuple_(Delivery.campaign_id, Delivery.contact_id).in_(keys))
            ).rowcount  # type: ignore[attr-defined]
            if deleted:
                return PurgeBatch(tenant_id, "deliveries", deleted)
            for model in TENANT_TABLES:
                pk = _primary_key(model)
                columns = list(model.__table__.primary_key.columns)
                chosen = select(*columns).where(model.tenant_id == tenant_id).limit(limit)
                deleted = session.execute(delete(model).where(pk.in_(chosen))).rowcount  # type: ignore[attr-defined]
                if deleted:
                    return PurgeBatch(tenant_id, model.__tablename__, deleted)
            # A statement, not an ORM delete: a second purger (a CLI beside the server)
            # may have removed the row already.
            gone = session.execute(
                delete(Tenant).where(Tenant.id == tenant_id, Tenant.deleted_at.is_not(None))
            ).rowcount  # type: ignore[attr-defined]
            return PurgeBatch(tenant_id, "tenants", gone) if gone else None

    def purge(
        self,
        tenant_id: str,
        *,
        stop: threading.Event | None = None,
        on_batch: Callable[[PurgeBatch], None] | None = None,
    ) -> int:
        """Purge the tenant batch by batch (until ``stop`` is set); returns the rows deleted."""
        total = 0
        while stop is None or not stop.is_set():
            batch = self.purge_batch(tenant_id)
            if batch is None:
                break
            total += batch.rows
            if on_batch is not None:
                on_batch(batch)
        return total


class TenantPurger:
    """The server's background purge: finishes every tombstone, including those a crash or a
    restart interrupted, then waits to be woken by the next deletion."""

    def __init__(self, deletion: TenantDeletion, *, poll_seconds: float = 60.0):
        self.deletion = deletion
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tenant-purge", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                for tenant_id in self.deletion.pending():
                    rows = self.deletion.purge(tenant_id, stop=self._stop)
                    log.info("tenant %s: %d rows purged", tenant_id, rows)
            except Exception:
                log.exception("tenant purge failed; retrying at the next poll")
            self._wake.wait(self.poll_seconds)
