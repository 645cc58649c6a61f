"""The host assembled: configuration, database (migrated), plugins and services. The HTTP
app, the CLI and embedding applications all start from :class:`Host`."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.fernet import MultiFernet

from host.admin_tokens import AdminTokens
from host.calls import ModuleCall
from host.config import HostSettings
from host.contract.enforce import ContractEnforcer
from host.db.engine import Database
from host.db.migrate import upgrade_to_head
from host.idempotency import IdempotencyKeys
from host.invoker import ModuleInvoker
from host.marketing.actions import ActionApplier
from host.marketing.campaigns import CampaignService
from host.marketing.contact_erasure import ContactErasure
from host.marketing.contact_search import ContactSearch
from host.marketing.contacts import ContactService
from host.marketing.invocation_log import InvocationLogReader
from host.marketing.job_runner import CampaignJobRunner
from host.marketing.outbox import OutboxWorker
from host.marketing.stats import StatsService
from host.marketing.templates import TemplateService
from host.marketing.webhooks import WebhookReceiver
from host.module_shares import ModuleShares
from host.module_storage import ModuleStorageStore
from host.modules.registry import ModuleRegistry
from host.plugin_manager import make_plugin_manager
from host.retention import RetentionPolicy, RetentionPurger
from host.secrets import (
    SecretBox,
    SecretKeyError,
    fernet_from_keys,
    fernet_from_setting,
    key_file_fernet,
)
from host.tenant_deletion import TenantDeletion, TenantPurger
from host.tenants import TenantService
from sandbox.invocation import HostCallback
from sandbox.pool import SandboxPool

DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("invocation_log", "plugins.invocation_log:InvocationLog"),
    ("sandbox_bridge", "plugins.sandbox_bridge:SandboxBridge"),
)
"""Built-in plugins, named ``module:factory``; each factory is called with the Host. Named
rather than imported so that ``host`` never depends on ``plugins`` (plugins extend the host,
not the other way round), like pytest's list of default plugins."""


def _instantiate(reference: str, host: Any) -> object:
    module_name, _, factory = reference.partition(":")
    return getattr(importlib.import_module(module_name), factory)(host)


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
    """One running host. ``extra_plugins`` are registered before entry-point plugins (tests
    and embedding applications pass theirs here)."""

    def __init__(
        self,
        settings: HostSettings | None = None,
        *,
        extra_plugins: Iterable[tuple[str, object]] = (),
        load_entry_points: bool = True,
        sandbox: SandboxPool | None = None,
    ):
        self.settings = settings or HostSettings()
        self._sandbox = sandbox
        self._owns_sandbox = sandbox is None
        self._sandbox_lock = threading.Lock()
        prepare_home(self.settings)
        self.db = Database(self.settings.database_url)
        upgrade_to_head(self.db.engine)
        self.box = SecretBox(_fernet(self.settings))
        self.admin_tokens = AdminTokens(self.db, self.settings.admin_token)
        builtins: list[tuple[str, object]] = [
            ("contract", ContractEnforcer()),
            *((name, _instantiate(ref, self)) for name, ref in DEFAULT_PLUGINS),
            *extra_plugins,
        ]
        self.hooks = make_plugin_manager(
            builtins, allow=self.settings.plugins, load_entry_points=load_entry_points
        )
        self.registry = ModuleRegistry(
            self.db, self.hooks, max_script_bytes=self.settings.max_script_bytes
        )
        self.tenants = TenantService(
            self.db, self.registry, self.box, self.hooks, self.settings.webhook_url_base
        )
        self.tenants.verify_secret_key()
        self.shares = ModuleShares(self.settings)
        self.module_storage = ModuleStorageStore(self.db)
        self.invoker = ModuleInvoker(
            self.tenants, self.hooks, self.shares, storage=self.module_storage
        )
        self.contacts = ContactService(self.db)
        self.contact_search = ContactSearch(self.db)
        self.contact_erasure = ContactErasure(self.db)
        self.idempotency = IdempotencyKeys(self.db)
        self.tenant_deletion = TenantDeletion(
            self.db, batch_rows=self.settings.tenant_purge_batch_rows
        )
        self.tenant_purger = TenantPurger(self.tenant_deletion)  # started by serve
        self.templates = TemplateService(self.db, self.invoker, self.tenants)
        self.invocation_log = InvocationLogReader(self.db)
        self.outbox = OutboxWorker.from_settings(self.db, self.settings)
        self.actions = ActionApplier(self.db, self.hooks, on_mail_queued=self.outbox.wake)
        self.webhooks = WebhookReceiver(
            self.db,
            self.tenants,
            self.invoker,
            self.actions,
            max_body_bytes=self.settings.webhook_max_body_bytes,
        )
        self.outbox.start()  # a no-op without an SMTP relay
        self.campaigns = CampaignService(self)
        self.campaign_stats = StatsService(self, self.settings.campaign_stats_ttl_seconds)
        self.campaign_runner = CampaignJobRunner(self)  # started by serve
        self.retention = RetentionPurger(  # started by serve
            self.db,
            RetentionPolicy.from_settings(self.settings),
            interval_s=self.settings.retention_interval_seconds,
        )

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

    def script_callbacks(self, call: ModuleCall) -> dict[str, HostCallback]:
        """Host callbacks lent to this call's script (``crm.*``), scoped to its tenant."""
        return {"crm.contacts": self.contacts.script_callback(call.tenant_id)}

    def delete_tenant(self, tenant_id: str) -> None:
        """Tombstone the tenant (gone from every surface at once) and wake the purge."""
        self.tenant_deletion.tombstone(tenant_id)
        self.tenant_purger.wake()

    def close(self) -> None:
        self.tenant_purger.stop()
        self.retention.stop()
        self.campaign_runner.stop()
        self.outbox.stop()
        with self._sandbox_lock:
            if self._sandbox is not None and self._owns_sandbox:
                self._sandbox.close()
            self._sandbox = None
        self.db.dispose()
