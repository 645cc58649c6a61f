"""The host assembled: configuration, database, plugins and services, wired explicitly.
The HTTP app, the CLI and embedding applications all start from :class:`Host`.

Building a ``Host`` only wires objects (datasette's habit): no file, no migration, no thread.
:meth:`Host.open` makes the database ready (creates the data directory, migrates, checks the
secret key); :meth:`Host.start` opens and starts the background work (campaign jobs, the mail
outbox, the tenant purge); :meth:`Host.close` stops it all. ``with Host(settings) as host:``
is ``start()`` … ``close()``. A CLI command opens (``host.cli.host_options.open_host``), the
server and the demo start.

Every service receives the collaborators it uses, never the ``Host``: the graph of who uses
whom is readable here, in one constructor, and ``tests/test_architecture.py`` keeps services
from importing this module.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from cryptography.fernet import MultiFernet
from sqlalchemy import make_url

from host.accounts import UserAccounts
from host.admin_tokens import AdminTokens
from host.audit import AuditLog
from host.calls import ModuleCall, mask_secrets
from host.certification import CertificationService
from host.client_address import ClientAddresses
from host.config import HostSettings
from host.console_sessions import ConsoleSessions
from host.contract.enforce import ContractEnforcer
from host.db.engine import Database
from host.db.migrate import revisions, upgrade_to_head
from host.errors import Conflict
from host.idempotency import IdempotencyKeys
from host.invoker import ModuleInvoker
from host.jobs.engine_schema import require_procrastinate
from host.jobs.pg_queue import CampaignJobs, ProcrastinateQueue
from host.jobs.queue import CampaignQueue, InProcessQueue
from host.marketing.actions import ActionApplier
from host.marketing.campaign_attention import CampaignAttentionService
from host.marketing.campaign_keys import CampaignKeys
from host.marketing.campaigns import CampaignService
from host.marketing.contact_erasure import ContactErasure
from host.marketing.contact_search import ContactSearch
from host.marketing.contacts import ContactService
from host.marketing.invocation_log import InvocationLogReader
from host.marketing.job_runner import CampaignJobRunner
from host.marketing.outbox import OutboxWorker
from host.marketing.provider_rate_limits import RateLimitPolicy
from host.marketing.shadow_runs import ShadowRunner
from host.marketing.stats import StatsService
from host.marketing.suppression_policy import SuppressionPolicyService
from host.marketing.templates import TemplateService
from host.marketing.webhook_replay import WebhookReplay
from host.marketing.webhooks import WebhookReceiver
from host.metrics.gauges import DatabaseGauges, JobQueueGauges, SandboxGauges
from host.metrics.instruments import HostMetrics
from host.module_shares import ModuleShares
from host.module_storage import ModuleStorageStore
from host.modules.packages import ModulePackage
from host.modules.registry import ModuleRegistry, VersionInfo
from host.plugin_context import PluginContext
from host.plugin_manager import make_plugin_manager
from host.retention import RetentionPolicy, RetentionPurger
from host.secrets import (
    SecretBox,
    SecretKeyError,
    fernet_from_keys,
    fernet_from_setting,
    key_file_fernet,
)
from host.sign_in_limits import SignInLimits
from host.tenant_deletion import TenantDeletion, TenantPurger
from host.tenants import TenantService
from host.webhook_targets import WebhookTargets
from sandbox.invocation import HostCallback
from sandbox.pool import SandboxPool

DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("invocation_log", "plugins.invocation_log:InvocationLog"),
    ("call_metrics", "plugins.metrics:CallMetrics"),
    ("sandbox_bridge", "plugins.sandbox_bridge:SandboxBridge"),
)
"""Built-in plugins, named ``module:class``; each is built by its ``from_context`` classmethod
from a :class:`~host.plugin_context.PluginContext` (what a plugin may receive is decided and
documented there). Named rather than imported so that ``host`` never depends on ``plugins``
(plugins extend the host, not the other way round), like pytest's list of default plugins."""


JOB_WORKER_STOP_SECONDS = 120.0
"""How long stopping ``serve`` waits for its running jobs to finish their batch."""


class JobWorkerLike(Protocol):
    """What the host does with its job worker (:class:`host.jobs.worker.JobWorker`, imported
    only on PostgreSQL, where procrastinate is installed)."""

    def start_thread(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float) -> None: ...
    def run(self, *, handle_signals: bool) -> None: ...


class StaleDatabase(Conflict):
    """A read-only command found the database behind this release's schema: it does not
    migrate (reading must not change the file), so it says which command will."""


def _instantiate(reference: str, context: PluginContext) -> object:
    module_name, _, name = reference.partition(":")
    factory: Callable[[PluginContext], object] = getattr(
        importlib.import_module(module_name), name
    ).from_context
    return factory(context)


def configured_keys(settings: HostSettings) -> MultiFernet | None:
    """The keys of ``CRM_HOST_SECRET_KEYS`` (else ``CRM_HOST_SECRET_KEY``); None when neither
    is set and the key file applies."""
    if settings.secret_keys:
        return fernet_from_keys(settings.secret_keys)
    if settings.secret_key:
        return MultiFernet([fernet_from_setting(settings.secret_key)])
    return None


def _fernet(settings: HostSettings) -> MultiFernet:
    """The configured keys, else the key file beside a SQLite database."""
    configured = configured_keys(settings)
    if configured is not None:
        return configured
    db_file = settings.sqlite_path()
    if db_file is None:
        raise SecretKeyError(
            "CRM_HOST_SECRET_KEY or CRM_HOST_SECRET_KEYS must be set when the database is not "
            "a SQLite file"
        )
    return MultiFernet([key_file_fernet(key_file_of(db_file))])


def key_file_of(database: Path) -> Path:
    """Where the generated key of a SQLite database lives: beside it, ``<file>.key``."""
    return Path(str(database) + ".key")


def prepare_home(settings: HostSettings) -> None:
    """Create the data directory (0700: it holds the database and the key that decrypts tenant
    secrets) when the SQLite database is to live inside it. An existing directory is left as
    the operator made it."""
    db_file = settings.sqlite_path()
    if db_file is not None and db_file.parent == settings.home:
        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)


class Host:
    """One host. ``extra_plugins`` are registered before entry-point plugins (tests and
    embedding applications pass theirs here); ``sandbox`` lends a pool the caller owns."""

    def __init__(
        self,
        settings: HostSettings | None = None,
        *,
        extra_plugins: Iterable[tuple[str, object]] = (),
        load_entry_points: bool = True,
        sandbox: SandboxPool | None = None,
    ):
        self.settings = settings = settings or HostSettings()
        self._sandbox = sandbox
        self._owns_sandbox = sandbox is None
        self._sandbox_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._opened = False
        self.db = db = Database(settings.database_url)  # connects on first use
        self.box = SecretBox(lambda: _fernet(settings))  # loaded by open()
        self.admin_tokens = AdminTokens(db, settings.admin_token)
        self.accounts = UserAccounts(db)
        self.console_sessions = ConsoleSessions(
            db, timedelta(hours=settings.console_session_hours), self.admin_tokens
        )
        self.sign_in_limits = SignInLimits(
            per_account=settings.console_sign_in_failures,
            per_address=4 * settings.console_sign_in_failures,
        )
        self.client_addresses = ClientAddresses(settings.trusted_proxies)
        self.audit = AuditLog(db)
        self.module_storage = ModuleStorageStore(db)
        self.contacts = ContactService(db)
        self.metrics = HostMetrics()  # a registry of this host's own (GET /metrics)
        plugin_context = PluginContext(
            settings=settings,
            db=db,
            module_storage=self.module_storage,
            sandbox=lambda: self.sandbox,
            script_callbacks=self.script_callbacks,
            metrics=self.metrics,
        )
        self.hooks = make_plugin_manager(
            [
                ("contract", ContractEnforcer()),
                *((name, _instantiate(ref, plugin_context)) for name, ref in DEFAULT_PLUGINS),
                *extra_plugins,
            ],
            allow=settings.plugins,
            load_entry_points=load_entry_points,
        )
        self.registry = ModuleRegistry(db, self.hooks, max_script_bytes=settings.max_script_bytes)
        self.certifications = CertificationService(
            db,
            self.box,
            lambda: self.sandbox,
            max_script_bytes=settings.max_script_bytes,
            egress_allow=settings.egress_allow,
            required=settings.require_certified,
        )
        self.tenants = TenantService(
            db,
            self.registry,
            self.box,
            self.hooks,
            settings.webhook_url_base,
            webhook_targets=WebhookTargets(settings.webhook_target_cache_seconds),
            version_gate=self.certifications.check_enable,
        )
        self.shares = ModuleShares(settings)
        self.invoker = ModuleInvoker(
            self.tenants, self.hooks, self.shares, storage=self.module_storage
        )
        self.contact_search = ContactSearch(db)
        self.contact_erasure = ContactErasure(db)
        self.idempotency = IdempotencyKeys(db)
        self.tenant_deletion = TenantDeletion(db, batch_rows=settings.tenant_purge_batch_rows)
        self.tenant_purger = TenantPurger(self.tenant_deletion)
        self.templates = TemplateService(db, self.invoker, self.tenants)
        self.suppression_policies = SuppressionPolicyService(db, self.tenants)
        self.campaign_keys = CampaignKeys(db)
        self.invocation_log = InvocationLogReader(db)
        self.outbox = OutboxWorker.from_settings(db, settings)
        self.actions = ActionApplier(
            db,
            self.hooks,
            on_mail_queued=self.outbox.wake,
            event_window=timedelta(days=settings.webhook_event_window_days),
        )
        self.webhooks = WebhookReceiver(
            db,
            self.tenants,
            self.invoker,
            self.actions,
            self.box,
            max_body_bytes=settings.webhook_max_body_bytes,
            store_requests=settings.webhook_requests_max_bytes_per_tenant > 0,
            retry_attempts=settings.webhook_retry_attempts,
            retry_s=settings.webhook_retry_seconds,
            background_workers=settings.webhook_background_workers,
            on_receipt=self.metrics.count_receipt,
        )
        self.webhook_replay = WebhookReplay(self.webhooks)
        self.shadow_runs = ShadowRunner(
            db,
            self.box,
            self.tenants,
            self.module_storage,
            self.shares,
            sandbox=lambda: self.sandbox,
            script_callbacks=self.script_callbacks,
            egress_allow=settings.egress_allow,
        )
        self.campaign_stats = StatsService(
            db, self.invoker, ttl_seconds=settings.campaign_stats_ttl_seconds
        )
        self.campaign_runner = CampaignJobRunner(
            db,
            self.invoker,
            self.hooks,
            workers=settings.campaign_workers,
            lease_seconds=settings.campaign_lease_seconds,
            poll_seconds=settings.campaign_poll_seconds,
            rate_limits=RateLimitPolicy.from_settings(settings),
            tenant_concurrency=settings.job_tenant_concurrency,
        )
        self.job_queue: CampaignQueue
        if self.uses_job_engine:
            # procrastinate notifies its workers itself when the deferring transaction commits
            self.job_queue = ProcrastinateQueue(tenant_slots=settings.job_tenant_concurrency)
        else:
            self.job_queue = InProcessQueue(self.campaign_runner.wake)
        self.campaign_jobs = CampaignJobs(db)
        self.campaigns = CampaignService(
            db,
            self.tenants,
            self.campaign_stats,
            self.hooks,
            default_batch_size=settings.campaign_batch_size,
            lease_seconds=settings.campaign_lease_seconds,
            jobs=self.job_queue,
        )
        self.campaign_attention = CampaignAttentionService(db, self.hooks, jobs=self.job_queue)
        self._job_worker: JobWorkerLike | None = None
        self.retention = RetentionPurger(
            db,
            RetentionPolicy.from_settings(settings),
            interval_s=settings.retention_interval_seconds,
        )
        # read at scrape time (registering runs no query, nor starts the pool)
        self.metrics.register(
            [SandboxGauges(self.started_sandbox, self.shares.admission), DatabaseGauges(db)]
        )
        if self.uses_job_engine:
            self.metrics.register([JobQueueGauges(self.campaign_jobs.depth)])

    # --- lifecycle ------------------------------------------------------------------------

    def open(self, *, migrate: bool = True) -> Self:
        """Make the database ready: create the data directory, migrate to head, load the
        secret key and check it opens what is stored. ``migrate=False`` (read-only commands)
        changes nothing on disk: the database must already be at head (StaleDatabase says
        which command migrates it otherwise). Idempotent; starts no thread."""
        with self._state_lock:
            if self._opened:
                return self
            if self.uses_job_engine:
                require_procrastinate()
            if migrate:
                prepare_home(self.settings)
                upgrade_to_head(self.db.engine)
            else:
                current, head = revisions(self.db.engine)
                if current != head:
                    raise StaleDatabase(
                        f"the database is at schema revision {current or 'none'}, this "
                        f"crm-host needs {head}: run a command that writes (`crm-host serve`) "
                        "to migrate it"
                    )
            self.box.load()
            self.tenants.verify_secret_key()
            self._opened = True
        return self

    def start(self) -> Self:
        """Open, then start the background work: campaign jobs (which first resume what a
        crash interrupted; the lease loop's threads on SQLite, an in-process procrastinate
        worker on PostgreSQL unless ``serve_runs_jobs`` is off), the mail outbox (only with
        an SMTP relay), the purge of deleted tenants, the retention purge of expired rows,
        and the acknowledge-first webhook requests (first those a restart left pending).
        Idempotent."""
        self.open()
        self.outbox.start()
        if not self.uses_job_engine:
            self.campaign_runner.start()
        elif self.settings.serve_runs_jobs and self._job_worker is None:
            self._job_worker = self.job_worker()
            self._job_worker.start_thread()
        self.tenant_purger.start()
        self.retention.start()
        self.webhooks.backlog.start(self.webhooks.pending_requests())
        return self

    def stop(self) -> None:
        """Stop the background work (running campaign jobs stay resumable); the database
        and the sandbox stay usable. Idempotent."""
        self.webhooks.backlog.stop()
        self.retention.stop()
        self.tenant_purger.stop()
        self.campaign_runner.stop()
        if self._job_worker is not None:
            self._job_worker.stop()
            self._job_worker.join(JOB_WORKER_STOP_SECONDS)
            self._job_worker = None
        self.outbox.stop()

    def close(self) -> None:
        """Stop the background work, the sandbox pool (if this host started it) and the
        database connections. Idempotent."""
        self.stop()
        with self._sandbox_lock:
            if self._sandbox is not None and self._owns_sandbox:
                self._sandbox.close()
            self._sandbox = None
        self.db.dispose()
        with self._state_lock:
            self._opened = False

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- campaign jobs ----------------------------------------------------------------------

    @property
    def uses_job_engine(self) -> bool:
        """PostgreSQL: campaign jobs run on procrastinate (``host/jobs``); SQLite: in the
        server's own threads (the lease loop)."""
        return make_url(self.settings.database_url).get_backend_name() == "postgresql"

    def require_job_engine(self) -> CampaignJobs:
        """The jobs view; on SQLite a 409 saying the jobs run in-process there."""
        if not self.uses_job_engine:
            raise Conflict(
                "there is no job queue on SQLite: crm-host serve runs the campaign jobs "
                "in-process (the queue and its failed jobs exist on PostgreSQL)"
            )
        return self.campaign_jobs

    def job_worker(self) -> JobWorkerLike:
        """A procrastinate worker for this host's campaign jobs (``crm-host worker``, or
        ``serve``'s in-process one). PostgreSQL only."""
        from host.jobs.worker import JobWorker, job_settings  # imports procrastinate

        assert isinstance(self.job_queue, ProcrastinateQueue)
        return JobWorker(
            self.db,
            self.campaign_runner,
            self.job_queue,
            job_settings(self.settings),
            mask=self.mask_job_error,
        )

    def mask_job_error(self, tenant_id: str | None, text: str | None) -> str | None:
        """A job's error with the secret settings of the tenant's modules masked: when it is
        stored, and again when it is shown (a secret set since is masked too)."""
        if not text or not tenant_id:
            return text
        return mask_secrets(text, self.tenants.secret_values_of(tenant_id))

    # --- shared resources -----------------------------------------------------------------

    @property
    def sandbox(self) -> SandboxPool:
        """The pool of sandbox workers, started on first use (``serve`` warms it at once)."""
        with self._sandbox_lock:
            if self._sandbox is None:
                # admission (host.module_shares) keeps calls within the pool's size; this
                # deadline covers the moments the pool is short of a worker (a killed one
                # being replaced), so no call waits for a worker without one
                self._sandbox = SandboxPool(
                    size=self.settings.sandbox_workers,
                    acquire_timeout_s=self.settings.sandbox_wait_s,
                )
            return self._sandbox

    def started_sandbox(self) -> SandboxPool | None:
        """The pool if it has been started, without starting it (for a metrics scrape)."""
        with self._sandbox_lock:
            return self._sandbox

    def upload_module(self, package: ModulePackage) -> VersionInfo:
        """Store a version: certified first when it brings its tests/ (or certification is
        required, which refuses a failing one), the report kept with the version."""
        report = self.certifications.check_upload(package)
        info = self.registry.upload(package)
        if report is not None:
            self.certifications.store(info.id, info.version, report)
        return info

    def script_callbacks(self, call: ModuleCall) -> dict[str, HostCallback]:
        """Host callbacks lent to this call's script (``crm.*``), scoped to its tenant."""
        return {
            "crm.contacts": self.contacts.script_callback(call.tenant_id),
            **self.campaign_keys.script_callbacks(call.tenant_id, call.module_id),
        }

    def delete_tenant(self, tenant_id: str) -> None:
        """Tombstone the tenant (gone from every surface at once) and wake the purge."""
        self.tenant_deletion.tombstone(tenant_id)
        self.tenants.forget_webhook_targets(tenant_id)
        self.tenant_purger.wake()
