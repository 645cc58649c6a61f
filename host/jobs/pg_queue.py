"""The campaign job queue on PostgreSQL: procrastinate's tables, read and written with its own
SQL functions through the host's SQLAlchemy session.

Deferring through the session is what makes the enqueue atomic: the job row is inserted by
``procrastinate_defer_jobs_v1`` in the transaction that commits the campaign row, so a
rolled-back campaign leaves no job and a committed one always has one (procrastinate's own
connectors open transactions of their own). Its insert trigger notifies the workers when the
transaction commits.

Every job of a campaign has the queueing lock ``campaign:<id>`` (at most one waits: a second
defer while one is ``todo`` is a no-op) and one of the tenant's slot locks
``tenant:<id>:<n>`` (procrastinate runs one job per lock at a time, so a tenant has at most
``job_tenant_concurrency`` campaigns running; a new job takes the slot with the fewest jobs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.errors import Conflict, NotFound
from host.jobs.queue import FRESH_PRIORITY, RESUMED_PRIORITY
from host.marketing.lifecycle import ACTIVE_STAGES

QUEUE = "campaigns"
TASK = "crm_host.run_campaign"
QUEUEING_LOCK_INDEX = "procrastinate_jobs_queueing_lock_idx_v1"
LISTED_STATUSES = ("todo", "doing", "failed")
"""What the jobs view lists: succeeded jobs are deleted by the worker."""

RECONCILE_LOCK_KEY = int.from_bytes(b"crm-jobs", "big") & 0x7FFF_FFFF_FFFF_FFFF

_DEFER = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, :lock, "
    ":queueing_lock, CAST(:args AS jsonb), CAST(NULL AS timestamptz))"
    "::procrastinate_job_to_defer_v1])"
)
_RAISE_PRIORITY = text(
    "UPDATE procrastinate_jobs SET priority = greatest(priority, :p) "
    "WHERE queueing_lock = :q AND status = 'todo'"
)
_SLOT_LOAD = text(
    "SELECT lock, count(*) FROM procrastinate_jobs WHERE lock IN :locks "
    "AND status IN ('todo', 'doing') GROUP BY lock"
).bindparams(bindparam("locks", expanding=True))


def queueing_lock(campaign_id: str) -> str:
    return f"campaign:{campaign_id}"


def tenant_locks(tenant_id: str, slots: int) -> list[str]:
    return [f"tenant:{tenant_id}:{slot}" for slot in range(slots)]


class ProcrastinateQueue:
    """:class:`~host.jobs.queue.CampaignQueue` on procrastinate's tables."""

    def __init__(self, *, tenant_slots: int, wake: Callable[[], None] = lambda: None):
        self.tenant_slots = tenant_slots
        self._wake = wake

    def defer(self, session: Session, campaign_id: str, tenant_id: str, *, resumed: bool) -> None:
        priority = RESUMED_PRIORITY if resumed else FRESH_PRIORITY
        waiting = session.execute(_RAISE_PRIORITY, {"q": queueing_lock(campaign_id), "p": priority})
        if waiting.rowcount:  # type: ignore[attr-defined]
            return  # its waiting job runs the campaign as it is by then
        locks = tenant_locks(tenant_id, self.tenant_slots)
        load: dict[str, int] = dict(session.execute(_SLOT_LOAD, {"locks": locks}).all())
        values = {
            "queue": QUEUE,
            "task": TASK,
            "priority": priority,
            "lock": min(locks, key=lambda name: load.get(name, 0)),
            "queueing_lock": queueing_lock(campaign_id),
            "args": json.dumps({"campaign_id": campaign_id}),
        }
        try:
            with session.begin_nested():  # a savepoint: a duplicate must not undo the caller
                session.execute(_DEFER, values)
        except IntegrityError as exc:
            if QUEUEING_LOCK_INDEX not in str(exc.orig):
                raise
            # another transaction deferred one meanwhile: that job runs the campaign

    def wake(self) -> None:
        self._wake()


def reconcile(db: Database, queue: ProcrastinateQueue) -> list[str]:
    """The safety net: defer a job for every runnable campaign that has none (no job todo,
    doing or failed — a failed one waits for an admin) and whose lease expired, e.g. one
    whose job was deleted by hand. One node at a time (an advisory lock; the others skip).
    Returns the campaigns it queued."""
    stages = [str(stage) for stage in ACTIVE_STAGES]
    orphans = text(
        "SELECT c.id, c.tenant_id FROM campaigns c WHERE c.stage IN :stages "
        "AND c.attention_reason IS NULL AND (c.lease_until IS NULL OR c.lease_until < now()) "
        "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
        "WHERE j.queueing_lock = 'campaign:' || c.id "
        "AND j.status IN ('todo', 'doing', 'failed')) ORDER BY c.created_at LIMIT 100"
    ).bindparams(bindparam("stages", expanding=True))
    with db.transaction() as session:
        if not session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RECONCILE_LOCK_KEY}
        ):
            return []
        found = session.execute(orphans, {"stages": stages}).all()
        for campaign_id, tenant_id in found:
            queue.defer(session, campaign_id, tenant_id, resumed=True)
    return [campaign_id for campaign_id, _ in found]


@dataclass(frozen=True)
class JobView:
    """A campaign job as the jobs view shows it."""

    id: int
    status: str
    campaign_id: str
    tenant_id: str | None
    attempts: int
    """runs so far that ended in a retry (crashes, a held lease, a shutdown)"""
    crashes: int
    error: str | None
    """the last crash, masked (None if it never crashed)"""
    error_at: datetime | None
    deferred_at: datetime | None
    updated_at: datetime | None
    """the job's last status change"""
    scheduled_at: datetime | None
    """when a retried job may run again"""


_LIST = text(
    "SELECT j.id, j.status::text, j.args->>'campaign_id', c.tenant_id, j.attempts, "
    "coalesce(e.crashes, 0), e.error, e.at, "
    "(SELECT min(v.at) FROM procrastinate_events v WHERE v.job_id = j.id), "
    "(SELECT max(v.at) FROM procrastinate_events v WHERE v.job_id = j.id), j.scheduled_at "
    "FROM procrastinate_jobs j "
    "LEFT JOIN campaigns c ON c.id = j.args->>'campaign_id' "
    "LEFT JOIN campaign_job_errors e ON e.job_id = j.id "
    "WHERE j.queue_name = :queue AND j.status::text IN :statuses "
    "AND (CAST(:before AS bigint) IS NULL OR j.id < :before) "
    "ORDER BY j.id DESC LIMIT :limit"
).bindparams(bindparam("statuses", expanding=True))


class CampaignJobs:
    """The jobs view and the admin's retry (``GET /api/v1/jobs``, ``crm-host jobs``)."""

    def __init__(self, db: Database):
        self.db = db

    def list(self, *, status: str | None, limit: int, before: int | None) -> list[JobView]:
        """Newest first; ``status`` one of :data:`LISTED_STATUSES` (None: all of them)."""
        statuses = list(LISTED_STATUSES) if status is None else [status]
        with self.db.transaction() as session:
            rows = session.execute(
                _LIST,
                {"queue": QUEUE, "statuses": statuses, "before": before, "limit": limit},
            )
            return [JobView(*row) for row in rows]

    def retry(self, job_id: int) -> None:
        """Put a failed job back to ``todo`` now, its crash count reset (its backoff starts
        again); 404 for an unknown job, 409 for one that has not failed."""
        with self.db.transaction() as session:
            status = session.scalar(
                text(
                    "SELECT status::text FROM procrastinate_jobs WHERE id = :id "
                    "AND queue_name = :queue FOR UPDATE"
                ),
                {"id": job_id, "queue": QUEUE},
            )
            if status is None:
                raise NotFound(f"job {job_id} does not exist")
            if status != "failed":
                raise Conflict(
                    f"job {job_id} is {status}, not failed: only a failed job is retried"
                )
            session.execute(
                text("SELECT procrastinate_retry_job_v2(:id, now(), NULL, NULL, NULL)"),
                {"id": job_id},
            )
            session.execute(
                text("UPDATE campaign_job_errors SET crashes = 0 WHERE job_id = :id"),
                {"id": job_id},
            )

    def depth(self) -> dict[tuple[str, str], int]:
        """Jobs by (queue, status) for todo, doing and failed: the queue depth gauge."""
        with self.db.transaction() as session:
            rows = session.execute(
                text(
                    "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                    "WHERE status IN ('todo', 'doing', 'failed') GROUP BY queue_name, status"
                )
            )
            return {(str(q), str(s)): int(n) for q, s, n in rows}
