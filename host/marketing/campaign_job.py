"""The send job of one campaign: export → prepare → create, persistent and resumable.

Stages (``Campaign.stage``, :class:`~host.marketing.lifecycle.CampaignStage`)::

    queued ─► exporting ─► preparing ─► creating ─► done
       └──────────┴────────────┴───────────┴──────► failed | cancelled

* **exporting** — ExportContacts(contactIds) for each chunk of eligible recipients (email
  modules only: messenger modules go straight to preparing).
* **preparing** — PrepareCampaign(campaignId, type, contacts) for each batch; the batch's
  Delivery rows (Pending) and the advanced cursor are committed in ONE transaction, so a
  restart resumes after the last finished batch and never stores a batch twice.
* **creating** — CreateCampaign / CreateMessengerCampaign: the stage is committed *before* the
  call, so a job that finds itself resuming in ``creating`` knows the call may already have
  reached the service. If the module's manifest declares that function ``idempotent``, the
  job calls it again with the same campaignId (the module finds what the first call made);
  otherwise it creates nothing, keeps the campaign's status and flags it *needs attention*
  (:mod:`host.marketing.campaign_attention`) for an admin, who knows whether it exists.

A batch call that fails because the service rate-limited it (its own fetch records show a
429) is not a failed campaign: the job waits what the service asked, bounded per wait and in
total (:mod:`host.marketing.provider_rate_limits`), and calls the same batch again; meanwhile
it holds no sandbox slot and no transaction, and the progress shows ``rateLimitedUntil``.
CreateCampaign is called again after a 429 only when the module declares it idempotent (a
failed create may have made something), else the campaign fails as before.

Every write is guarded by the lease (``lease_owner`` = this job's owner) and renews it; a job
whose lease was taken over (it stalled past its expiry and another process resumed it) gets
:class:`LeaseLost` at its next commit and stops without writing anything.

Limits of "exactly once": the database side is exact; the module side is at-least-once per
batch (a crash between a PrepareCampaign/ExportContacts call and its commit repeats that one
batch on resume, so modules make them idempotent: the documented contract) and, for
CreateCampaign, at-least-once when the module declares it idempotent, else at-most-once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pluggy
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from host.contract.enums import CampaignStatus, CampaignType, DeliveryStatus
from host.contract.types import CreateCampaignResponse
from host.db.engine import Database
from host.db.models import Campaign, Delivery, ModuleVersion, UTCDateTime, utcnow
from host.errors import HostError, ServiceBusy
from host.invoker import ModuleInvoker
from host.manifest import Manifest
from host.marketing.audience import Audience, Recipient
from host.marketing.lifecycle import FINAL_STAGES, CampaignStage
from host.marketing.provider_rate_limits import (
    ProviderRateLimitExceeded,
    RateLimitPolicy,
    decide,
    provider_rate_limit,
)
from host.plugin_manager import notify

log = logging.getLogger(__name__)

RATE_LIMIT_CHECK_S = 1.0
"""How often a job waiting for a provider's rate limit looks for a cancel request."""


@dataclass(frozen=True)
class CampaignProgress:
    """How far a campaign's job is: counts, batches done and a percentage."""

    stage: str
    """a :class:`~host.marketing.lifecycle.CampaignStage` value"""
    total: int
    exported: int
    prepared: int
    skipped: int
    skipped_by: dict[str, int]
    """why recipients were left out: unsubscribed, bounced, complained, noAddress, category"""
    batches: int
    batch_size: int
    percent: float
    rate_limited_until: datetime | None = None
    """Set while the job waits for the service's rate limit: when it calls the batch again."""


ProgressCallback = Callable[[CampaignProgress], None]


class _StoppedWhileWaiting(Exception):
    """The job stops waiting and leaves the campaign resumable: a stop request arrived while
    it waited for its tenant's sandbox share or a provider's rate limit, or it hands a
    rate-limit wait back to its runner (``park_rate_limited``)."""


class LeaseLost(Exception):
    """Another process holds this campaign's job now; this one must stop writing."""


class Progress(Protocol):
    """What the progress view reads: a ``Campaign`` row or a job's :class:`JobState`."""

    @property
    def stage(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def total(self) -> int: ...
    @property
    def exported(self) -> int: ...
    @property
    def prepared(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def skipped_by(self) -> dict[str, Any] | None: ...
    @property
    def batches_done(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def rate_limited_until(self) -> datetime | None: ...


@dataclasses.dataclass
class JobState:
    """The job's own record of its campaign: what it read when it started, updated by each
    of its (lease-guarded) commits. A plain value rather than the ORM row, so nothing the job
    holds is tied to a closed session or could be flushed back by accident."""

    tenant_id: str
    module_id: str
    module_version: str
    type: str
    request: dict[str, Any]
    audience: dict[str, Any]
    batch_size: int
    stage: CampaignStage
    status: str
    total: int
    exported: int
    prepared: int
    skipped: int
    skipped_by: dict[str, Any] | None
    batches_done: int
    cursor: str | None
    rate_limited_until: datetime | None
    rate_limit_waited_s: float

    @classmethod
    def of(cls, row: Campaign) -> JobState:
        values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}
        values["stage"] = CampaignStage(row.stage)
        values["request"] = dict(row.request)
        values["rate_limit_waited_s"] = row.rate_limit_waited_s or 0.0
        return cls(**values)

    def update(self, values: dict[str, Any]) -> None:
        """Take the values a commit wrote (columns the job does not track are skipped)."""
        for name in _STATE_FIELDS & values.keys():
            setattr(self, name, CampaignStage(values[name]) if name == "stage" else values[name])


_STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(JobState))


def progress_of(row: Progress) -> CampaignProgress:
    """The progress view of a campaign row: counts, batches and a percentage in which the
    export and the prepare pass weigh half each (Messenger campaigns have no export)."""
    eligible = max(row.total - row.skipped, 0)
    if row.stage == CampaignStage.Done:
        percent = 100.0
    elif eligible and row.type == CampaignType.Messenger:  # no export pass
        percent = min(99.9, round(100.0 * row.prepared / eligible, 1))
    elif eligible:
        percent = min(99.9, round(50.0 * (row.exported + row.prepared) / eligible, 1))
    else:
        percent = 0.0
    until = row.rate_limited_until
    waiting = until is not None and row.stage not in FINAL_STAGES and until > utcnow()
    return CampaignProgress(
        stage=str(row.stage),
        total=row.total,
        exported=row.exported,
        prepared=row.prepared,
        skipped=row.skipped,
        skipped_by=dict(row.skipped_by or {}),
        batches=row.batches_done,
        batch_size=row.batch_size,
        percent=percent,
        rate_limited_until=until if waiting else None,
    )


def _bind(column_type: Any, value: Any, dialect: Any) -> Any:
    """``value`` as the driver receives it for a column of ``column_type``."""
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor else value


def _history_append(session: Session) -> Any:
    """SQL that appends the bound ``:entry`` (a JSON object) to ``deliveries.history``; JSON
    functions differ per database, and 1,000,000 rows must not round-trip through Python."""
    if session.get_bind().dialect.name == "postgresql":
        return "(COALESCE(history::jsonb, '[]'::jsonb) || CAST(:entry AS jsonb))::json"
    return "json_insert(COALESCE(history, '[]'), '$[#]', json(:entry))"


def mark_sent(session: Session, campaign_id: str, now: datetime) -> None:
    """Every still-Pending delivery of the campaign becomes Sent, with the move appended to
    its history, in one statement (a million rows must not round-trip through Python)."""
    entry = json.dumps({"status": DeliveryStatus.Sent.value, "at": now.isoformat()})
    statement = text(
        "UPDATE deliveries SET status = :sent, updated_at = :now, "
        f"history = {_history_append(session)} "
        "WHERE campaign_id = :id AND status = :pending"
    ).bindparams(bindparam("now", type_=UTCDateTime()))
    session.execute(
        statement,
        {
            "sent": DeliveryStatus.Sent.value,
            "pending": DeliveryStatus.Pending.value,
            "now": now,
            "id": campaign_id,
            "entry": entry,
        },
    )


def interrupted_create_reason(function: str) -> str:
    """The attention reason of a campaign whose job stopped during ``function``."""
    return (
        f"interrupted during {function}: the campaign may or may not exist in the service, "
        "and the module does not declare that call idempotent, so it is not called again; "
        "enter the campaign's id in the service, or mark it not created"
    )


class CampaignJob:
    """Runs (or resumes) one campaign whose lease ``owner`` holds. ``stop`` asks it to stop
    before the next batch and leave the campaign resumable; ``on_progress`` sees the
    progress view after every committed step (the CLI's progress bar); ``rate_limits``
    bounds its waits for the provider's rate limit. With ``park_rate_limited`` the job does
    not sleep through such a wait: it records it, gives its lease up and returns, and its
    runner takes the campaign up again once the wait is over — so a job thread (or a
    worker's slot), which all tenants share, is never held by a tenant whose service, or
    whose module, keeps answering 429."""

    def __init__(
        self,
        db: Database,
        invoker: ModuleInvoker,
        hooks: pluggy.PluginManager,
        campaign_id: str,
        owner: str,
        *,
        lease_seconds: float,
        stop: threading.Event | None = None,
        on_progress: ProgressCallback | None = None,
        rate_limits: RateLimitPolicy | None = None,
        park_rate_limited: bool = False,
    ):
        self.db = db
        self.invoker = invoker
        self.hooks = hooks
        self.id = campaign_id
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.rate_limits = rate_limits or RateLimitPolicy()
        self.park_rate_limited = park_rate_limited
        with self.db.transaction() as session:
            row = session.get(Campaign, campaign_id)
            if row is None:
                raise LeaseLost(f"campaign {campaign_id} does not exist")
            self.state = JobState.of(row)
        self.tenant_id = self.state.tenant_id
        self.module_id = self.state.module_id
        self.type = self.state.type
        self.request = self.state.request
        self.audience = Audience(self.tenant_id, self.type, self.state.audience, self._category())

    def _category(self) -> str | None:
        """The category whose unsubscribers the campaign leaves out: the email campaign's
        ``categoryExternalId``; a messenger campaign's module id (messenger modules
        unsubscribe a contact from their own id, e.g. ``telegram``)."""
        if self.type == CampaignType.Messenger:
            return self.module_id
        category = self.request.get("categoryExternalId")
        return str(category) if category else None

    # --- the flow -----------------------------------------------------------------------

    def run(self) -> CampaignStage:
        """Run until the campaign is final or ``stop`` is set; returns the stage reached."""
        if self.state.stage in FINAL_STAGES:
            self._release()
            return self.state.stage
        if self.state.stage == CampaignStage.Creating:
            return self._resume_create()
        try:
            if self.state.stage == CampaignStage.Queued:
                self._start()
            if self.state.stage == CampaignStage.Exporting and not self._export():
                return self._stopped()
            if self.state.stage == CampaignStage.Preparing and not self._prepare():
                return self._stopped()
            if self.state.stage == CampaignStage.Preparing:
                return self._create()
        except _StoppedWhileWaiting:
            return self._stopped()
        except HostError as exc:
            return self._fail(exc.kind, exc.message)
        return self.state.stage

    def _start(self) -> None:
        # Messenger modules have no ExportContacts: their recipients are contact ids.
        first = (
            CampaignStage.Preparing
            if self.type == CampaignType.Messenger
            else CampaignStage.Exporting
        )
        with self.db.transaction() as session:
            self._commit(session, stage=first)
            total, eligible = self.audience.counts(session)
            left_out = self.audience.left_out(session)
            self._commit(
                session, total=total, skipped=total - eligible, skipped_by=left_out, cursor=None
            )
        self._report()

    def _export(self) -> bool:
        """ExportContacts per chunk of eligible recipients; False if stopped/cancelled."""
        while True:
            if not self._may_continue():
                return False
            batch = self._next_batch()
            if not batch:
                with self.db.transaction() as session:
                    self._commit(session, stage=CampaignStage.Preparing, cursor=None)
                return True
            self._call("CRM_Marketing_ExportContacts", contactIds=[r.id for r in batch])
            with self.db.transaction() as session:
                self._commit(
                    session, cursor=batch[-1].id, exported=self.state.exported + len(batch)
                )
            self._report()

    def _prepare(self) -> bool:
        """PrepareCampaign per batch; deliveries and cursor commit together."""
        while True:
            if not self._may_continue():
                return False
            batch = self._next_batch()
            if not batch:
                return True
            self._call(
                "CRM_Marketing_PrepareCampaign",
                campaignId=self.id,
                type=self.type,
                contacts=[r.address(self.type) for r in batch],
            )
            with self.db.transaction() as session:
                self._commit(
                    session,
                    cursor=batch[-1].id,
                    prepared=self.state.prepared + len(batch),
                    batches_done=self.state.batches_done + 1,
                )
                self._insert_deliveries(session, batch)
            self._report()

    @property
    def _create_function(self) -> str:
        if self.type == CampaignType.Messenger:
            return "CRM_Marketing_CreateMessengerCampaign"
        return "CRM_Marketing_CreateCampaign"

    def _resume_create(self) -> CampaignStage:
        """The job stopped during the create call: call it again when the module declares it
        idempotent, else flag the campaign for an admin (it may or may not exist)."""
        function = self._create_function
        if self._declares_idempotent(function):
            log.info("campaign %s: calling %s again (declared idempotent)", self.id, function)
            return self._create(resumed=True)
        with self.db.transaction() as session:
            self._commit(
                session,
                attention_reason=interrupted_create_reason(function),
                attention_at=utcnow(),
                lease_owner=None,
                lease_until=None,
            )
        log.warning("campaign %s needs attention: interrupted during %s", self.id, function)
        self._report()
        return self.state.stage

    def _declares_idempotent(self, function: str) -> bool:
        with self.db.transaction() as session:
            data = session.scalar(
                select(ModuleVersion.manifest).where(
                    ModuleVersion.module_id == self.module_id,
                    ModuleVersion.version == self.state.module_version,
                )
            )
        return data is not None and Manifest.from_stored(data).declares_idempotent(function)

    def _create(self, *, resumed: bool = False) -> CampaignStage:
        if self.state.prepared == 0:
            return self._fail(
                "no_recipients", f"no eligible recipients ({self.state.skipped} skipped)"
            )
        if not resumed:
            with self.db.transaction() as session:
                self._commit(session, stage=CampaignStage.Creating)
            self._report()
        function = self._create_function
        try:
            # a failed create may have made something: call it again only if the module
            # says a repeated call creates nothing new
            retry = self._declares_idempotent(function)
            response = self._call(function, retry_rate_limited=retry, request=self.request)
        except _StoppedWhileWaiting:
            # CreateCampaign was never called (a busy sandbox), or called and rate-limited
            # by a module that declares it idempotent: the campaign may resume from here
            with self.db.transaction() as session:
                self._commit(session, stage=CampaignStage.Preparing)
            return self._stopped()
        except HostError as exc:
            return self._fail(exc.kind, exc.message)
        assert isinstance(response, CreateCampaignResponse)
        default = CampaignStatus.Scheduled if self.request.get("scheduledAt") else None
        status = str(response.status or default or CampaignStatus.Sending)
        now = utcnow()
        with self.db.transaction() as session:
            self._commit(
                session,
                stage=CampaignStage.Done,
                status=status,
                external_id=response.externalId,
                finished_at=now,
                lease_owner=None,
                lease_until=None,
            )
            mark_sent(session, self.id, now)
        self._report()
        self._status_changed(status, None)
        return CampaignStage.Done

    # --- steps --------------------------------------------------------------------------

    def _call(self, function: str, *, retry_rate_limited: bool = True, **arguments: Any) -> Any:
        """Call the module's function; while the tenant's sandbox share is busy, wait and
        retry (a background job waits its turn, it does not fail), renewing the lease so a
        long wait is not taken for a dead job. A stop request ends the wait. A call the
        service rate-limited is waited for and made again too (``retry_rate_limited``)."""
        while True:
            try:
                value = self.invoker.call(
                    self.tenant_id,
                    self.module_id,
                    function,
                    version=self.state.module_version,
                    **arguments,
                )
            except ServiceBusy as busy:
                log.debug("campaign %s: %s", self.id, busy.message)
                if self.stop.wait(busy.retry_after_s):
                    raise _StoppedWhileWaiting from None
                with self.db.transaction() as session:
                    self._commit(session)  # renews the lease
                continue
            except HostError as failure:
                if not retry_rate_limited:
                    raise
                self._wait_for_rate_limit(failure)
                continue
            if self.state.rate_limited_until is not None:
                with self.db.transaction() as session:
                    self._commit(session, rate_limited_until=None)
            return value

    def _wait_for_rate_limit(self, failure: HostError) -> None:
        """Wait what the service asked when ``failure`` is a rate-limited call (else raise
        it again), or raise :class:`ProviderRateLimitExceeded` once the campaign's waits
        would pass their total bound. The wait and its end are committed (the progress
        shows them; the total survives a restart); a stop or cancel request ends it, and a
        parking job hands it to its runner instead of sleeping."""
        now = utcnow()
        limit = provider_rate_limit(failure, now)
        if limit is None:
            raise failure
        decision = decide(limit, self.state.rate_limit_waited_s, self.rate_limits)
        if decision.wait_s is None:
            raise ProviderRateLimitExceeded(f"{decision.reason}; the module: {failure.message}")
        log.info("campaign %s: %s", self.id, decision.reason)
        with self.db.transaction() as session:
            self._commit(
                session,
                rate_limited_until=now + timedelta(seconds=decision.wait_s),
                rate_limit_waited_s=self.state.rate_limit_waited_s + decision.wait_s,
            )
        self._report()
        if self.park_rate_limited:
            raise _StoppedWhileWaiting  # the runner resumes it at rate_limited_until
        deadline = time.monotonic() + decision.wait_s
        renew_every = self.lease.total_seconds() / 3
        renewed = time.monotonic()
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, RATE_LIMIT_CHECK_S)):
                raise _StoppedWhileWaiting
            # a campaign being created cannot be cancelled (the API refuses it)
            if self.state.stage != CampaignStage.Creating and not self._may_continue():
                raise _StoppedWhileWaiting
            if time.monotonic() - renewed >= renew_every:
                with self.db.transaction() as session:
                    self._commit(session)  # renews the lease
                renewed = time.monotonic()

    def _next_batch(self) -> list[Recipient]:
        with self.db.transaction() as session:
            return self.audience.eligible_after(session, self.state.cursor, self.state.batch_size)

    def _may_continue(self) -> bool:
        """Checked before every batch: a cancel request ends the job as Cancelled, a stop
        request (shutdown, Ctrl-C) leaves it resumable."""
        with self.db.transaction() as session:
            cancel = session.scalar(select(Campaign.cancel_requested).where(Campaign.id == self.id))
        if cancel:
            self._finish(CampaignStage.Cancelled, CampaignStatus.Cancelled, None)
            return False
        return not self.stop.is_set()

    def _insert_deliveries(self, session: Session, batch: list[Recipient]) -> None:
        """The batch's Delivery rows (Pending). Values that are the same for every row are
        converted once: per-row type processing cost more than the rest of a batch (about
        50 µs a row). The rows go to the driver as one executemany, or on PostgreSQL as one
        ``COPY`` in the same transaction: psycopg's executemany still sends a statement per
        row, which took 2.5 times as long per batch as ``COPY`` (see BENCHMARKS.md)."""
        dialect = session.get_bind().dialect
        columns = Delivery.__table__.c
        now = utcnow()
        entry = [{"status": DeliveryStatus.Pending.value, "at": now.isoformat()}]
        pending = DeliveryStatus.Pending.value
        history = _bind(columns.history.type, entry, dialect)
        stamp = _bind(columns.updated_at.type, now, dialect)
        names = "campaign_id, contact_id, email_key, phone, status, history, updated_at"
        rows = ((self.id, r.id, r.email_key, r.phone, pending, history, stamp) for r in batch)
        if dialect.name == "postgresql":
            driver = session.connection().connection.driver_connection
            assert driver is not None  # a checked-out connection always has one
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY deliveries ({names}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            return
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        session.connection().exec_driver_sql(
            f"INSERT INTO deliveries ({names}) VALUES ({', '.join([mark] * 7)})", list(rows)
        )

    def _commit(self, session: Session, **values: Any) -> None:
        """Write ``values`` to the campaign row if this job still holds the lease, renewing
        it; the first statement of every write transaction, so SQLite takes its write lock
        before any read (no lock upgrade that could fail under concurrency)."""
        now = utcnow()
        values.setdefault("lease_until", now + self.lease)
        result = session.execute(
            update(Campaign)
            .where(Campaign.id == self.id, Campaign.lease_owner == self.owner)
            .values(updated_at=now, **values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"campaign {self.id}: lease lost to another process")
        self.state.update(values)

    def _finish(self, stage: CampaignStage, status: str, error: str | None) -> None:
        old = self.state.status
        with self.db.transaction() as session:
            self._commit(
                session,
                stage=stage,
                status=status,
                error=error,
                finished_at=utcnow(),
                rate_limited_until=None,
                lease_owner=None,
                lease_until=None,
            )
        self._report()
        self._status_changed(status, error, old)

    def _fail(self, kind: str, message: str) -> CampaignStage:
        log.info("campaign %s failed: %s: %s", self.id, kind, message)
        self._finish(CampaignStage.Failed, CampaignStatus.Failed, f"{kind}: {message}")
        return CampaignStage.Failed

    def _stopped(self) -> CampaignStage:
        if self.state.stage not in FINAL_STAGES:
            self._release()
        return self.state.stage

    def _release(self) -> None:
        """Give the lease up at once so another process may resume without waiting."""
        with self.db.transaction() as session:
            session.execute(
                update(Campaign)
                .where(Campaign.id == self.id, Campaign.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(progress_of(self.state))

    def _status_changed(self, new: str, error: str | None, old: str | None = None) -> None:
        notify(
            self.hooks,
            "crm_host_campaign_status_changed",
            tenant_id=self.tenant_id,
            campaign_id=self.id,
            old_status=old or CampaignStatus.Draft.value,
            new_status=new,
            error=error,
        )
