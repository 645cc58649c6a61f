"""Gauges read when ``/metrics`` is scraped, not kept up to date as things happen.

:class:`SandboxGauges` reads this node's worker pool (``SandboxPool.stats``) and its fair
admission (``FairAdmission.snapshot``); a pool not started yet reports nothing rather than
being started by a scrape. :class:`DatabaseGauges` reads the campaign send jobs and the
outbox from the database — so on several nodes sharing one database every node reports the
same cluster-wide values (aggregate them with ``max``, not ``sum``). Its queries are bounded:
only campaigns in an active stage (``ix_campaigns_stage``) and outbox rows still queued or
failed (``ix_outbox_status``), grouped to a handful of rows; finished campaigns, however
many, are not scanned. A database that cannot be read makes ``crm_host_database_up`` 0
instead of failing the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from host.db.engine import Database
from host.db.models import Campaign, OutboxMessage
from host.marketing.lifecycle import ACTIVE_STAGES
from sandbox.admission import FairAdmission
from sandbox.pool import SandboxPool

log = logging.getLogger(__name__)

ADMIN_SHARE = "admin"
"""The admission group of admin work (:data:`host.module_shares.ADMIN_GROUP`); every other
group is a tenant's, summed into ``share="tenants"`` (no per-tenant series)."""

OUTBOX_BACKLOG = ("queued", "failed")
JOB_QUEUE = "campaigns"
JOB_STATUSES = ("todo", "doing", "failed")


class SandboxGauges(Collector):
    def __init__(self, pool: Callable[[], SandboxPool | None], admission: FairAdmission):
        self.pool = pool
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        pool = self.pool()
        if pool is not None:
            stats = pool.stats()
            yield GaugeMetricFamily(
                "crm_host_sandbox_pool_size", "Configured sandbox worker processes.", stats.size
            )
            workers = GaugeMetricFamily(
                "crm_host_sandbox_workers",
                "Live sandbox workers by state (busy: running an invocation).",
                labels=["state"],
            )
            workers.add_metric(["busy"], stats.busy)
            workers.add_metric(["idle"], stats.idle)
            workers.add_metric(["spare"], stats.spares)
            yield workers
            yield GaugeMetricFamily(
                "crm_host_sandbox_waiting",
                "Calls waiting for an idle sandbox worker now.",
                stats.waiting,
            )
            yield CounterMetricFamily(
                "crm_host_sandbox_waits",
                "Calls that had to wait for an idle sandbox worker.",
                stats.waits,
            )
            yield CounterMetricFamily(
                "crm_host_sandbox_wait_timeouts",
                "Calls that found no idle sandbox worker before the deadline.",
                stats.wait_timeouts,
            )
            yield CounterMetricFamily(
                "crm_host_sandbox_worker_replacements",
                "Sandbox workers started to replace killed or dead ones.",
                stats.replacements,
            )
        running = GaugeMetricFamily(
            "crm_host_sandbox_admitted",
            "Module calls holding a sandbox slot now, by share (admin or tenants).",
            labels=["share"],
        )
        waiting = GaugeMetricFamily(
            "crm_host_sandbox_admission_waiting",
            "Module calls waiting for a sandbox slot of their share now.",
            labels=["share"],
        )
        totals = {ADMIN_SHARE: [0, 0], "tenants": [0, 0]}
        for group, counts in self.admission.snapshot().items():
            sums = totals[ADMIN_SHARE if group == ADMIN_SHARE else "tenants"]
            sums[0] += counts["running"]
            sums[1] += counts["waiting"]
        for share, (admitted, queued) in totals.items():
            running.add_metric([share], admitted)
            waiting.add_metric([share], queued)
        yield running
        yield waiting
        refused = CounterMetricFamily(
            "crm_host_sandbox_refusals",
            "Module calls refused before running (busy: 503/429), by reason.",
            labels=["reason"],
        )
        refusals = self.admission.refusals()
        for reason in ("deadline", "queue_full"):
            refused.add_metric([reason], refusals.get(reason, 0))
        yield refused


class DatabaseGauges(Collector):
    def __init__(self, db: Database):
        self.db = db

    def collect(self) -> Iterator[Metric]:
        try:
            campaigns, outbox = self._read()
        except Exception:
            log.exception("metrics: could not read the database")
            yield GaugeMetricFamily(
                "crm_host_database_up", "The metrics queries could read the database.", 0
            )
            return
        yield GaugeMetricFamily(
            "crm_host_database_up", "The metrics queries could read the database.", 1
        )
        active = GaugeMetricFamily(
            "crm_host_campaigns_active",
            "Campaigns whose send job is not over, by stage and status.",
            labels=["stage", "status"],
        )
        batches = GaugeMetricFamily(
            "crm_host_campaign_batches_done",
            "Prepare batches done of the campaigns not over, by stage.",
            labels=["stage"],
        )
        recipients = GaugeMetricFamily(
            "crm_host_campaign_recipients",
            "Recipients of the campaigns not over, by stage and progress (total, prepared).",
            labels=["stage", "progress"],
        )
        jobs = GaugeMetricFamily(
            "crm_host_campaign_jobs",
            "The campaign job queue: jobs running (leased by a node) or waiting for one.",
            labels=["state"],
        )
        by_stage: dict[str, list[int]] = {str(stage): [0, 0, 0] for stage in ACTIVE_STAGES}
        running = waiting = 0
        for stage, status, count, leased, done, total, prepared in campaigns:
            active.add_metric([stage, status], count)
            sums = by_stage.setdefault(stage, [0, 0, 0])
            sums[0] += done
            sums[1] += total
            sums[2] += prepared
            running += leased
            waiting += count - leased
        for stage, (done, total, prepared) in by_stage.items():
            batches.add_metric([stage], done)
            recipients.add_metric([stage, "total"], total)
            recipients.add_metric([stage, "prepared"], prepared)
        jobs.add_metric(["running"], running)
        jobs.add_metric(["waiting"], waiting)
        yield from (active, batches, recipients, jobs)
        mail = GaugeMetricFamily(
            "crm_host_outbox_messages",
            "Outbox mail (SendEmail) not delivered, by status (queued, failed).",
            labels=["status"],
        )
        for status in OUTBOX_BACKLOG:
            mail.add_metric([status], outbox.get(status, 0))
        yield mail

    def _read(self) -> tuple[list[tuple[str, str, int, int, int, int, int]], dict[str, int]]:
        now = datetime.now(UTC)
        leased = case((Campaign.lease_until > now, 1), else_=0)
        campaigns_query = (
            select(
                Campaign.stage,
                Campaign.status,
                func.count(),
                func.coalesce(func.sum(leased), 0),
                func.coalesce(func.sum(Campaign.batches_done), 0),
                func.coalesce(func.sum(Campaign.total), 0),
                func.coalesce(func.sum(Campaign.prepared), 0),
            )
            .where(Campaign.stage.in_(ACTIVE_STAGES))
            .group_by(Campaign.stage, Campaign.status)
        )
        outbox_query = (
            select(OutboxMessage.status, func.count())
            .where(OutboxMessage.status.in_(OUTBOX_BACKLOG))
            .group_by(OutboxMessage.status)
        )
        with self.db.transaction() as session:
            campaigns = [
                (str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]))
                for r in session.execute(campaigns_query)
            ]
            outbox = {str(r[0]): int(r[1]) for r in session.execute(outbox_query)}
        return campaigns, outbox


class JobQueueGauges(Collector):
    """The campaign job queue on PostgreSQL (procrastinate): jobs todo, doing and failed by
    queue. Cluster-wide, like :class:`DatabaseGauges`; one grouped query."""

    def __init__(self, depth: Callable[[], dict[tuple[str, str], int]]):
        self.depth = depth

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.depth()
        except Exception:
            log.exception("metrics: could not read the job queue")
            return
        family = GaugeMetricFamily(
            "crm_host_job_queue_depth",
            "Campaign jobs of the job engine by queue and status (todo, doing, failed).",
            labels=["queue", "status"],
        )
        queues = {queue for queue, _ in counts} | {JOB_QUEUE}
        for queue in sorted(queues):
            for status in JOB_STATUSES:
                family.add_metric([queue, status], counts.get((queue, status), 0))
        yield family
