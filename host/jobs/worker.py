"""Running campaign jobs on procrastinate: the task, its retry rule, and the worker (the
``crm-host worker`` process, or a thread of ``crm-host serve``).

The task claims the campaign's lease (:meth:`CampaignJobRunner.claim`) and runs
:class:`~host.marketing.campaign_job.CampaignJob`, so the lease stays the guard that one
campaign never runs twice at once, whatever the engine does. What the task ends with decides
what procrastinate does with the job:

* the campaign is final, flagged for an admin, gone, or taken over → the job succeeds
  (and is deleted);
* its lease is held by a live runner (a ``crm-host campaign send``, another node) → retried
  when that lease expires, never failed;
* a stop request (SIGTERM, ``serve`` shutting down) ended it after its current batch → put
  back to ``todo`` at once, the campaign resumable;
* the provider rate-limited a batch call → the job parks (it records the wait and gives the
  lease up, :class:`CampaignJob` ``park_rate_limited``) and is retried at
  ``rate_limited_until``: a waiting campaign holds none of the worker's slots, which every
  tenant shares;
* it crashed (an unexpected error: a bug, the database gone) → its lease is given up, the
  masked error recorded, and it is retried with exponential backoff up to
  ``job_max_attempts`` runs; then it is ``failed`` and waits for ``crm-host jobs retry``.

Delivery toward modules stays at-least-once per batch: a retry resumes after the last
committed batch, so the batch in flight when a worker died is prepared again.

Besides the jobs, the worker keeps the queue healthy: every ``job_maintenance_seconds`` it
puts back jobs of workers whose heartbeat stopped (a SIGKILLed worker leaves its job
``doing``) and defers a job for any runnable campaign that has none
(:func:`host.jobs.pg_queue.reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from procrastinate import App, JobContext, PsycopgConnector, RetryDecision
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy
from procrastinate.worker import Worker
from sqlalchemy import make_url, select, text, update

from host.config import HostSettings
from host.db.engine import Database
from host.db.models import Campaign
from host.jobs.pg_queue import QUEUE, TASK, ProcrastinateQueue, reconcile
from host.jobs.queue import RESUMED_PRIORITY
from host.logs import mask_credentials
from host.marketing.campaign_job import LeaseLost, utcnow
from host.marketing.job_runner import CampaignJobRunner, new_owner
from host.marketing.lifecycle import FINAL_STAGES

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


class LeaseHeld(Exception):
    """A live runner holds the campaign's lease: try again when it expires."""

    def __init__(self, campaign_id: str, retry_in: float):
        super().__init__(f"campaign {campaign_id} is being run by another process")
        self.retry_in = retry_in


class RateLimitWait(Exception):
    """The campaign waits for its provider's rate limit: run it again in ``retry_in`` s."""

    def __init__(self, campaign_id: str, retry_in: float):
        super().__init__(f"campaign {campaign_id} waits for its service's rate limit")
        self.retry_in = retry_in


class Interrupted(Exception):
    """A stop request ended the job after its batch: the campaign is resumable."""


class Crashed(Exception):
    """The job's ``crashes``-th crash (the cause is chained)."""

    def __init__(self, message: str, crashes: int):
        super().__init__(message)
        self.crashes = crashes


@dataclass(frozen=True)
class JobSettings:
    """The engine's knobs (``CRM_HOST_JOB_*``, :class:`host.config.HostSettings`)."""

    concurrency: int
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    heartbeat_seconds: float
    stalled_seconds: float
    maintenance_seconds: float
    poll_seconds: float


class CampaignRetry(BaseRetryStrategy):
    """Exponential backoff for crashes (``backoff · 2^(n-1)``, capped), bounded by
    ``max_attempts`` runs; a held lease or a shutdown is retried whatever the count, as
    neither is the job's fault. Crashes are counted by the task (``campaign_job_errors``),
    not by procrastinate's ``attempts``, which also counts those benign retries."""

    def __init__(self, settings: JobSettings):
        self.settings = settings

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, LeaseHeld):
            return RetryDecision(retry_at=_in(exception.retry_in))
        if isinstance(exception, RateLimitWait):
            return RetryDecision(retry_at=_in(exception.retry_in), priority=RESUMED_PRIORITY)
        if isinstance(exception, Interrupted):
            return RetryDecision(retry_at=_in(0), priority=RESUMED_PRIORITY)
        if isinstance(exception, Crashed) and exception.crashes < self.settings.max_attempts:
            wait = min(
                self.settings.backoff_max_seconds,
                self.settings.backoff_seconds * 2 ** (exception.crashes - 1),
            )
            return RetryDecision(retry_at=_in(wait))
        return None


def _in(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://…``) as libpq reads it."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class CampaignTask:
    """The body of the procrastinate task: one run of one campaign's job."""

    def __init__(
        self,
        db: Database,
        runner: CampaignJobRunner,
        stop: threading.Event,
        mask: Callable[[str | None, str | None], str | None],
    ):
        self.db = db
        self.runner = runner
        self.stop = stop
        self.mask = mask

    def __call__(self, context: JobContext, campaign_id: str) -> None:
        owner = new_owner()
        if (parked := self._parked_for(campaign_id)) is not None:
            raise RateLimitWait(campaign_id, parked)  # taken up early (a retry by hand)
        if self.runner.claim(campaign_id, owner=owner) is None:
            wait = self._lease_left(campaign_id)
            if wait is None:
                return  # nothing to run (final, flagged, gone): the job is done
            raise LeaseHeld(campaign_id, wait)
        try:
            stage = self.runner.run(
                campaign_id, owner=owner, stop=self.stop, park_rate_limited=True
            )
        except LeaseLost as exc:
            log.warning("%s", exc)  # another runner goes on with it
            return
        except Exception as exc:
            self._release(campaign_id, owner)
            job_id = context.job.id
            assert job_id is not None
            crashes = self._record(job_id, campaign_id, exc, context.job.attempts)
            log.exception("campaign %s: job %s crashed (%d)", campaign_id, job_id, crashes)
            raise Crashed(f"campaign {campaign_id}: job crashed", crashes) from exc
        if stage in FINAL_STAGES or self._flagged(campaign_id):
            return
        if (parked := self._parked_for(campaign_id)) is not None:
            raise RateLimitWait(campaign_id, parked)
        raise Interrupted(f"campaign {campaign_id}: stopped at {stage}, requeued")

    def _lease_left(self, campaign_id: str) -> float | None:
        """Seconds until the holder's lease expires; None if the campaign is not runnable."""
        with self.db.transaction() as session:
            row = session.execute(
                select(Campaign.stage, Campaign.attention_reason, Campaign.lease_until).where(
                    Campaign.id == campaign_id
                )
            ).first()
        if row is None or row.stage in FINAL_STAGES or row.attention_reason is not None:
            return None
        if row.lease_until is None:
            return 0.0
        return max(0.5, (row.lease_until - utcnow()).total_seconds() + 0.5)

    def _parked_for(self, campaign_id: str) -> float | None:
        """Seconds the campaign still waits for its provider's rate limit, else None."""
        with self.db.transaction() as session:
            until = session.scalar(
                select(Campaign.rate_limited_until).where(
                    Campaign.id == campaign_id, Campaign.stage.not_in(FINAL_STAGES)
                )
            )
        left = None if until is None else (until - utcnow()).total_seconds()
        return left if left is not None and left > 0 else None

    def _flagged(self, campaign_id: str) -> bool:
        with self.db.transaction() as session:
            reason = session.scalar(
                select(Campaign.attention_reason).where(Campaign.id == campaign_id)
            )
        return reason is not None

    def _release(self, campaign_id: str, owner: str) -> None:
        """Give up the crashed job's lease, so its retry claims the campaign at once."""
        with contextlib.suppress(Exception), self.db.transaction() as session:
            session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def _record(self, job_id: int, campaign_id: str, exc: Exception, attempts: int) -> int:
        """Store the crash (masked) and return how many the job has had; when the database
        cannot be written either, procrastinate's attempt count stands in."""
        try:
            with self.db.transaction() as session:
                tenant = session.scalar(
                    select(Campaign.tenant_id).where(Campaign.id == campaign_id)
                )
                message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                message = self.mask(tenant, mask_credentials(message)) or message
                crashes = session.scalar(
                    text(
                        "INSERT INTO campaign_job_errors (job_id, campaign_id, crashes, error, at) "
                        "VALUES (:job, :campaign, 1, :error, :at) ON CONFLICT (job_id) DO UPDATE "
                        "SET crashes = campaign_job_errors.crashes + 1, error = excluded.error, "
                        "at = excluded.at RETURNING crashes"
                    ),
                    {"job": job_id, "campaign": campaign_id, "error": message, "at": utcnow()},
                )
            return int(crashes or 1)
        except Exception:
            log.exception("campaign %s: could not record the crash of job %s", campaign_id, job_id)
            return attempts + 1


class JobWorker:
    """A procrastinate worker for campaign jobs plus its maintenance loop; :meth:`run` in a
    process of its own (``crm-host worker``), :meth:`start_thread` inside ``serve``."""

    def __init__(
        self,
        db: Database,
        runner: CampaignJobRunner,
        queue: ProcrastinateQueue,
        settings: JobSettings,
        *,
        mask: Callable[[str | None, str | None], str | None] = lambda _tenant, message: message,
    ):
        self.db = db
        self.queue = queue
        self.settings = settings
        self.stop_requested = threading.Event()
        self.app = App(
            connector=PsycopgConnector(
                conninfo=libpq_url(db.url), min_size=1, max_size=settings.concurrency + 2
            )
        )
        self.app.task(name=TASK, queue=QUEUE, pass_context=True, retry=CampaignRetry(settings))(
            CampaignTask(db, runner, self.stop_requested, mask)
        )
        self._worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- running ---------------------------------------------------------------------

    def run(self, *, handle_signals: bool) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``): stop taking
        jobs, let each running one finish its batch and requeue it, then return."""
        asyncio.run(self._run(handle_signals))

    async def _run(self, handle_signals: bool) -> None:
        self._loop = asyncio.get_running_loop()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self.stop)
        s = self.settings
        async with self.app.open_async():
            self._worker = Worker(
                self.app,
                queues=[QUEUE],
                name="crm-host",
                concurrency=s.concurrency,
                fetch_job_polling_interval=s.poll_seconds,
                update_heartbeat_interval=s.heartbeat_seconds,
                stalled_worker_timeout=s.stalled_seconds,
                delete_jobs="successful",
                install_signal_handlers=False,
            )
            if self.stop_requested.is_set():
                return
            maintenance = asyncio.create_task(self._maintain(), name="job-maintenance")
            try:
                await self._worker.run()
            finally:
                maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maintenance

    def stop(self) -> None:
        """Ask the worker to stop (any thread): running jobs stop before their next batch."""
        self.stop_requested.set()
        worker, loop = self._worker, self._loop
        if worker is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(worker.stop)

    def start_thread(self) -> None:
        """Run in a thread of this process (``serve``); :meth:`join` after :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run_logged, name="campaign-job-worker", daemon=True
        )
        self._thread.start()

    def _run_logged(self) -> None:
        try:
            self.run(handle_signals=False)
        except Exception:
            log.exception("the campaign job worker stopped")

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- keeping the queue healthy -----------------------------------------------------

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_seconds)
            try:
                await self.maintain_once()
            except Exception:
                log.exception("campaign jobs: maintenance failed")

    async def maintain_once(self) -> None:
        """Retry the jobs of workers that stopped sending heartbeats, then defer a job for
        every runnable campaign left without one."""
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=self.settings.stalled_seconds
        ):
            log.warning("campaign jobs: job %s of a stalled worker is retried", job.id)
            await manager.retry_job(job, priority=RESUMED_PRIORITY)
        queued = await asyncio.to_thread(reconcile, self.db, self.queue)
        for campaign_id in queued:
            log.warning("campaign %s had no job: one is queued", campaign_id)


def job_settings(settings: HostSettings) -> JobSettings:
    """The :class:`JobSettings` of a :class:`host.config.HostSettings`."""
    return JobSettings(
        concurrency=settings.campaign_workers,
        max_attempts=settings.job_max_attempts,
        backoff_seconds=settings.job_backoff_seconds,
        backoff_max_seconds=settings.job_backoff_max_seconds,
        heartbeat_seconds=settings.job_heartbeat_seconds,
        stalled_seconds=settings.job_stalled_seconds,
        maintenance_seconds=settings.job_maintenance_seconds,
        poll_seconds=settings.campaign_poll_seconds,
    )
