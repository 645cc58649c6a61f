"""Background execution of campaign jobs: a few threads of the server process that claim
queued or interrupted campaigns and run them.

Claiming is a conditional UPDATE (``lease_owner``/``lease_until``), atomic on SQLite and
PostgreSQL alike, so two processes on one database — two servers, or a server and a
``crm-host campaign send`` — never run the same campaign at once. A job renews its lease with
every batch it commits; when its process dies, the lease expires and any runner resumes the
campaign after its last finished batch. A lease held by a process of *this* machine that no
longer exists is taken over at once (a restart after a crash does not wait for the expiry).

A tenant's campaigns take at most ``tenant_concurrency`` of the threads at once (the count
is a condition of the claiming UPDATE, so two threads cannot both pass it): one tenant's
several large campaigns leave the other threads to the other tenants.

The threads run jobs that park on a provider's rate limit (``park_rate_limited``): a
campaign waiting for its service's ``Retry-After`` holds no thread, and the threads pass it
by until its ``rate_limited_until``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pluggy
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import aliased

from host.db.engine import Database
from host.db.models import Campaign
from host.invoker import ModuleInvoker
from host.marketing.campaign_job import CampaignJob, LeaseLost, ProgressCallback, utcnow
from host.marketing.lifecycle import ACTIVE_STAGES, CampaignStage
from host.marketing.provider_rate_limits import RateLimitPolicy

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()


def new_owner() -> str:
    """A lease owner id: ``hostname:pid:nonce`` (the nonce tells two runners of one process
    apart, e.g. in tests)."""
    return f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` certainly no longer runs: a process of this machine whose pid
    is gone. Anything else (another machine, a live pid — maybe reused) waits for expiry."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOSTNAME or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class CampaignJobRunner:
    """Claims and runs campaign jobs; ``workers`` threads once :meth:`start` ed (the server
    and the demo start it; a CLI command runs its one job with :meth:`run` instead)."""

    def __init__(
        self,
        db: Database,
        invoker: ModuleInvoker,
        hooks: pluggy.PluginManager,
        *,
        workers: int,
        lease_seconds: float,
        poll_seconds: float,
        rate_limits: RateLimitPolicy | None = None,
        tenant_concurrency: int | None = None,
    ):
        self.db = db
        self.invoker = invoker
        self.hooks = hooks
        self.workers = workers
        self.tenant_concurrency = tenant_concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.rate_limits = rate_limits or RateLimitPolicy()
        self.owner = new_owner()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the job threads; they resume interrupted campaigns first thing."""
        if self._threads:
            return
        self._stop.clear()
        for index in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"campaign-jobs-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask running jobs to stop before their next batch (they stay resumable, their
        leases released) and wait for the threads."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def wake(self) -> None:
        """A campaign was queued: look now rather than at the next poll."""
        self._wake.set()

    # --- claiming -----------------------------------------------------------------------

    def claim(self, campaign_id: str | None = None, *, owner: str | None = None) -> str | None:
        """Lease one runnable campaign (``campaign_id``, or the oldest one) to ``owner``
        (default: this runner); returns its id, or None if there is none free."""
        owner = owner or self.owner
        now = utcnow()
        query = select(
            Campaign.id, Campaign.tenant_id, Campaign.lease_owner, Campaign.lease_until
        ).where(Campaign.stage.in_(ACTIVE_STAGES), Campaign.attention_reason.is_(None))
        if campaign_id is not None:
            query = query.where(Campaign.id == campaign_id)
        else:  # a campaign parked on a rate limit waits for its time
            query = query.where(
                or_(Campaign.rate_limited_until.is_(None), Campaign.rate_limited_until <= now)
            )
        with self.db.transaction() as session:
            rows = session.execute(query.order_by(Campaign.created_at).limit(50)).all()
        for cid, tenant_id, holder, until in rows:
            expired = holder is None or until is None or until < now
            dead = not expired and owner_is_dead(str(holder))
            if not (expired or dead):
                continue
            conditions = [
                Campaign.id == cid,
                Campaign.stage.in_(ACTIVE_STAGES),
                Campaign.attention_reason.is_(None),  # an admin resolves it first
                Campaign.lease_owner.is_(None)
                if holder is None
                else Campaign.lease_owner == holder,
            ]
            if not dead:  # still expired when we write (a renewal in between wins)
                conditions.append(or_(Campaign.lease_until.is_(None), Campaign.lease_until < now))
            if campaign_id is None and self.tenant_concurrency is not None:
                conditions.append(self._tenant_has_room(str(tenant_id), str(cid), now))
            with self.db.transaction() as session:
                taken = session.execute(
                    update(Campaign)
                    .where(*conditions)
                    .values(
                        lease_owner=owner,
                        lease_until=now + timedelta(seconds=self.lease_seconds),
                    )
                ).rowcount  # type: ignore[attr-defined]
            if taken == 1:
                if holder is not None:
                    log.info("campaign %s: resuming the job of %s", cid, holder)
                return str(cid)
        return None

    def _tenant_has_room(self, tenant_id: str, campaign_id: str, now: datetime) -> Any:
        """The tenant runs fewer than ``tenant_concurrency`` other campaigns under a live
        lease (a condition of the claiming UPDATE, evaluated atomically with it)."""
        others = aliased(Campaign)
        running = (
            select(func.count())
            .select_from(others)
            .where(
                others.tenant_id == tenant_id,
                others.id != campaign_id,
                others.stage.in_(ACTIVE_STAGES),
                others.lease_until >= now,
            )
            .scalar_subquery()
        )
        return running < self.tenant_concurrency

    def run(
        self,
        campaign_id: str,
        *,
        owner: str | None = None,
        stop: threading.Event | None = None,
        on_progress: ProgressCallback | None = None,
        park_rate_limited: bool = False,
    ) -> CampaignStage:
        """Run a campaign this runner (or ``owner``) has claimed, in the calling thread;
        returns the stage reached (final, or where a stop or a parked rate-limit wait left
        it: see :class:`CampaignJob`)."""
        job = CampaignJob(
            self.db,
            self.invoker,
            self.hooks,
            campaign_id,
            owner or self.owner,
            lease_seconds=self.lease_seconds,
            stop=stop or self._stop,
            on_progress=on_progress,
            rate_limits=self.rate_limits,
            park_rate_limited=park_rate_limited,
        )
        return job.run()

    # --- the threads --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                campaign_id = self.claim()
            except Exception:
                log.exception("campaign jobs: claiming failed")
                campaign_id = None
            if campaign_id is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            try:
                stage = self.run(campaign_id, park_rate_limited=True)
                log.info("campaign %s: job ended at stage %s", campaign_id, stage)
            except LeaseLost as exc:
                log.warning("%s", exc)
            except Exception:
                # Unexpected (a bug, the database gone): the lease is kept, so the job is
                # retried once it expires instead of spinning on the same error.
                log.exception("campaign %s: job crashed", campaign_id)
