"""Tenants and the modules enabled for them: API keys (shown once, stored hashed), pinned
versions, rollback, settings validated against the manifest, secrets sealed at rest, and the
unguessable webhook URL of each (tenant, module)."""

from __future__ import annotations

import builtins
import copy
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pluggy
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from host import settings_paths as paths
from host.db.engine import Database
from host.db.models import Enablement, Tenant
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.manifest import Manifest
from host.module_program import ModuleProgram
from host.modules.registry import ModuleRegistry
from host.plugin_manager import notify
from host.secrets import SecretBox, hash_api_key, new_api_key, new_webhook_token
from host.settings_schema import (
    mask_settings,
    merge_settings,
    secret_locations,
    secret_values,
    validate_settings,
)
from host.webhook_targets import CachedTarget, WebhookTargets

TENANT_ID = re.compile(r"[a-z][a-z0-9_-]{1,63}")
"""Tenant id slug; used with ``fullmatch`` (``$`` would also accept a trailing newline)."""


@dataclass(frozen=True)
class TenantInfo:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class EnablementInfo:
    """What an admin may see of an enablement: secrets only as "set" markers."""

    tenant_id: str
    module_id: str
    version: str
    previous_version: str | None
    enabled: bool
    settings: dict[str, Any]
    webhook_url: str


@dataclass(frozen=True)
class RuntimeEnablement:
    """Everything needed to call a tenant's module: the pinned version (as the program every
    call of it shares) and full settings (secrets decrypted). Never serialised to any
    surface."""

    tenant_id: str
    module_id: str
    version: str
    program: ModuleProgram = field(repr=False)
    settings: dict[str, Any] = field(repr=False)
    secret_values: tuple[str, ...] = field(repr=False)

    @property
    def manifest(self) -> Manifest:
        return self.program.manifest


class TenantService:
    def __init__(
        self,
        db: Database,
        registry: ModuleRegistry,
        box: SecretBox,
        hooks: pluggy.PluginManager,
        webhook_url_base: str,
        webhook_targets: WebhookTargets | None = None,
        version_gate: Callable[[str, str], None] | None = None,
    ):
        self.db = db
        self.registry = registry
        self.box = box
        self.hooks = hooks
        self.webhook_url_base = webhook_url_base
        self.webhook_targets = webhook_targets or WebhookTargets(0)
        #: raises when a version may not be newly pinned and enabled (certification)
        self.version_gate = version_gate

    # --- tenants --------------------------------------------------------------------------

    def create(self, tenant_id: str, name: str) -> tuple[TenantInfo, str]:
        """A new tenant and its API key; the key is returned here and never again."""
        problems = []
        if not isinstance(tenant_id, str) or not TENANT_ID.fullmatch(tenant_id):
            problems.append(
                Problem(
                    "id",
                    "must be 2-64 characters: lowercase letters, digits, '-' or '_', "
                    "starting with a letter",
                )
            )
        if not (name or "").strip() or len(name) > 200:
            problems.append(Problem("name", "must be 1-200 characters"))
        if problems:
            raise InvalidInput("tenant is invalid", problems)
        key = new_api_key()
        taken = Conflict(f"tenant {tenant_id} already exists", [Problem("id", "taken")])
        try:
            with self.db.transaction() as session:
                existing = session.get(Tenant, tenant_id)
                if existing is not None and existing.deleted_at is not None:
                    raise Conflict(
                        f"tenant {tenant_id} is being deleted; its id is free once the purge "
                        "has finished",
                        [Problem("id", "being deleted")],
                    )
                if existing is not None:
                    raise taken
                tenant = Tenant(id=tenant_id, name=name.strip(), api_key_hash=hash_api_key(key))
                session.add(tenant)
                session.flush()
                return TenantInfo(tenant.id, tenant.name, tenant.created_at), key
        except IntegrityError:  # created by a concurrent request after the check above
            raise taken from None

    def list(self) -> list[TenantInfo]:
        with self.db.transaction() as session:
            rows = session.scalars(
                select(Tenant).where(Tenant.deleted_at.is_(None)).order_by(Tenant.id)
            ).all()
            return [TenantInfo(t.id, t.name, t.created_at) for t in rows]

    def get(self, tenant_id: str) -> TenantInfo:
        with self.db.transaction() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.deleted_at is not None:
                raise NotFound(f"tenant {tenant_id} does not exist")
            return TenantInfo(tenant.id, tenant.name, tenant.created_at)

    def tenant_for_key(self, api_key: str) -> str | None:
        """The live tenant whose API key this is (a deleted tenant's key opens nothing)."""
        with self.db.transaction() as session:
            return session.scalar(
                select(Tenant.id).where(
                    Tenant.api_key_hash == hash_api_key(api_key), Tenant.deleted_at.is_(None)
                )
            )

    def rotate_key(self, tenant_id: str) -> str:
        """A new API key for the tenant, returned here and never again; the old key stops
        working with this commit (only the new key's hash is stored)."""
        key = new_api_key()
        with self.db.transaction() as session:
            changed = session.execute(
                update(Tenant)
                .where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
                .values(api_key_hash=hash_api_key(key))
            ).rowcount  # type: ignore[attr-defined]
        if not changed:
            raise NotFound(f"tenant {tenant_id} does not exist")
        return key

    # --- enablement -----------------------------------------------------------------------

    def configure(
        self,
        tenant_id: str,
        module_id: str,
        *,
        version: str | None = None,
        settings: dict[str, Any] | None = None,
        enabled: bool | None = None,
        settings_mode: Literal["replace", "patch"] = "replace",
    ) -> EnablementInfo:
        """Enable (or update) a module for a tenant in one step: pin ``version`` (default:
        the current pin, or the latest for a new enablement), set the settings, set
        ``enabled`` (default: true). ``settings`` replaces the stored ones (PUT) or, with
        ``settings_mode="patch"``, is merged into them (RFC 7396); either way a secret left
        out keeps its stored value and ``null`` removes it. Nothing is stored unless
        everything validates."""
        self.get(tenant_id)
        with self.db.transaction() as session:
            current = session.get(Enablement, (tenant_id, module_id))
            stored = self._full_settings(current) if current else {}
            pinned = current.version if current else None
            was_on = current.enabled if current else False
        version_row = self.registry.stored(module_id, version or pinned)
        turning_on = enabled is not False and (pinned != version_row.version or not was_on)
        if self.version_gate is not None and turning_on:
            self.version_gate(module_id, version_row.version)
        manifest = version_row.manifest
        merged = (
            merge_settings(manifest, stored, settings, mode=settings_mode)
            if settings is not None
            else stored
        )
        validated = validate_settings(manifest, merged)
        public, secret = _split_secrets(manifest, validated)
        changed = sorted(
            k for k in set(stored) | set(validated) if stored.get(k) != validated.get(k)
        )
        with self.db.transaction() as session:
            row = session.get(Enablement, (tenant_id, module_id))
            was_enabled = row.enabled if row else False
            if row is None:
                row = Enablement(
                    tenant_id=tenant_id,
                    module_id=module_id,
                    version=version_row.version,
                    enabled=True if enabled is None else enabled,
                    webhook_token=new_webhook_token(),
                )
                session.add(row)
            elif row.version != version_row.version:
                row.previous_version = row.version
                row.version = version_row.version
            if enabled is not None:
                row.enabled = enabled
            row.settings = public
            row.secrets_encrypted = self.box.seal(secret)
            session.flush()
            info = self._info(row, manifest)
        self.webhook_targets.forget(tenant_id, module_id)
        if info.enabled and (not was_enabled or version is not None):
            notify(
                self.hooks,
                "crm_host_module_enabled",
                tenant_id=tenant_id,
                module_id=module_id,
                version=info.version,
            )
        if was_enabled and not info.enabled:
            notify(self.hooks, "crm_host_module_disabled", tenant_id=tenant_id, module_id=module_id)
        if changed:
            notify(
                self.hooks,
                "crm_host_settings_changed",
                tenant_id=tenant_id,
                module_id=module_id,
                fields=changed,
            )
        return info

    def update_settings(
        self, tenant_id: str, module_id: str, changes: dict[str, Any]
    ) -> EnablementInfo:
        """Change some settings and keep the rest (PATCH semantics)."""
        self._require(tenant_id, module_id)
        return self.configure(tenant_id, module_id, settings=changes, settings_mode="patch")

    def disable(self, tenant_id: str, module_id: str) -> EnablementInfo:
        self._require(tenant_id, module_id)
        return self.configure(tenant_id, module_id, enabled=False)

    def rollback(self, tenant_id: str, module_id: str) -> EnablementInfo:
        """Pin the version that was pinned before the current one."""
        row = self._require(tenant_id, module_id)
        if row.previous_version is None:
            raise Conflict(
                f"module {module_id} has no previous version pinned for tenant {tenant_id}"
            )
        return self.configure(tenant_id, module_id, version=row.previous_version)

    def enablement(self, tenant_id: str, module_id: str) -> EnablementInfo:
        row = self._require(tenant_id, module_id)
        manifest = self.registry.stored(module_id, row.version).manifest
        return self._info(row, manifest)

    def enablements(self, tenant_id: str) -> builtins.list[EnablementInfo]:
        self.get(tenant_id)
        with self.db.transaction() as session:
            rows = session.scalars(
                select(Enablement)
                .where(Enablement.tenant_id == tenant_id)
                .order_by(Enablement.module_id)
            ).all()
        return [self.enablement(tenant_id, r.module_id) for r in rows]

    def module_uses(self) -> dict[str, builtins.list[tuple[str, str, bool]]]:
        """Which live tenants use each module: ``{module: [(tenant, version, enabled)]}``."""
        with self.db.transaction() as session:
            rows = session.execute(
                select(Enablement.module_id, Enablement.tenant_id, Enablement.version,
                       Enablement.enabled)
                .join(Tenant, Tenant.id == Enablement.tenant_id)
                .where(Tenant.deleted_at.is_(None))
                .order_by(Enablement.module_id, Enablement.tenant_id)
            ).all()  # fmt: skip
        uses: dict[str, builtins.list[tuple[str, str, bool]]] = {}
        for module_id, tenant_id, version, enabled in rows:
            uses.setdefault(module_id, []).append((tenant_id, version, enabled))
        return uses

    def runtime(
        self, tenant_id: str, module_id: str, version: str | None = None
    ) -> RuntimeEnablement:
        """The enabled module with decrypted settings, for calling it: the pinned version, or
        ``version`` for work that started on an earlier pin (a campaign keeps the version it
        was created with, even if the admin pins another one while it is being sent)."""
        row = self._require(tenant_id, module_id)
        if not row.enabled:
            raise Conflict(f"module {module_id} is disabled for tenant {tenant_id}")
        return self._runtime_of(row, version)

    def _runtime_of(self, row: Enablement, version: str | None) -> RuntimeEnablement:
        version_row = self.registry.stored(row.module_id, version or row.version)
        manifest = version_row.manifest
        settings = self._full_settings(row)
        secrets = secret_values(manifest, settings)
        return RuntimeEnablement(
            row.tenant_id,
            row.module_id,
            version_row.version,
            version_row.program,
            settings,
            secrets,
        )

    def secret_values_of(self, tenant_id: str) -> tuple[str, ...]:
        """Every secret value of every module enabled (or disabled) for the tenant, longest
        first: what the tenant API masks in its answers, since what modules returned (template
        names, ids, HTML, campaign errors, contacts changed by a webhook...) is stored raw and
        shown there.

        An id no tenant can have (a NUL or a capital in the path: the route answers 422 or
        404) has none, and is not looked up: PostgreSQL rejects NUL in text parameters."""
        if not TENANT_ID.fullmatch(tenant_id):
            return ()
        with self.db.transaction() as session:
            rows = session.scalars(
                select(Enablement).where(Enablement.tenant_id == tenant_id)
            ).all()
        values: set[str] = set()
        for row in rows:
            manifest = self.registry.stored(row.module_id, row.version).manifest
            values.update(secret_values(manifest, self._full_settings(row)))
        return tuple(sorted(values, key=lambda v: (-len(v), v)))

    def webhook_target(self, tenant_id: str, module_id: str, token: str) -> RuntimeEnablement:
        """The enablement a webhook URL points to; any mismatch is "not found", so a probe
        learns nothing about which part was wrong. Served from :attr:`webhook_targets`
        while fresh (see :mod:`host.webhook_targets`)."""
        key = (tenant_id, module_id)
        entry = self.webhook_targets.fresh(key)
        if entry is None:
            generation = self.webhook_targets.generation()
            entry = self._read_webhook_target(tenant_id, module_id)
            if entry is None:
                raise NotFound("no such webhook")
            self.webhook_targets.keep(key, entry, generation)
        if not hmac.compare_digest(entry.token.encode(), token.encode()):
            raise NotFound("no such webhook")
        if entry.runtime is None:
            raise NotFound("no such webhook")
        return entry.runtime

    def forget_webhook_targets(self, tenant_id: str) -> None:
        """The tenant changed outside this service (deleted): its URLs are read again."""
        self.webhook_targets.forget(tenant_id)

    def _read_webhook_target(self, tenant_id: str, module_id: str) -> CachedTarget | None:
        """What the database says about the URL now, in one read; None for a tenant or
        module that has no URL."""
        read_at = self.webhook_targets.now()  # before the read: never fresher than it
        with self.db.transaction() as session:
            row = session.get(Enablement, (tenant_id, module_id))
            tenant = session.get(Tenant, tenant_id)
        if row is None or tenant is None or tenant.deleted_at is not None:
            return None
        if not row.enabled:
            return CachedTarget(row.webhook_token, None, read_at)
        return CachedTarget(row.webhook_token, self._runtime_of(row, None), read_at)

    def verify_secret_key(self) -> None:
        """Fail at start-up, not at the first webhook, when the configured key cannot open
        the secrets already stored (a changed or lost ``CRM_HOST_SECRET_KEY``)."""
        with self.db.transaction() as session:
            sealed = session.scalar(
                select(Enablement.secrets_encrypted)
                .where(Enablement.secrets_encrypted.is_not(None))
                .limit(1)
            )
        self.box.open(sealed)

    # --- internals ------------------------------------------------------------------------

    def _require(self, tenant_id: str, module_id: str) -> Enablement:
        with self.db.transaction() as session:
            row = session.get(Enablement, (tenant_id, module_id))
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.deleted_at is not None:
                raise NotFound(f"tenant {tenant_id} does not exist")
            if row is None:
                raise NotFound(f"module {module_id} is not enabled for tenant {tenant_id}")
            return row

    def _full_settings(self, row: Enablement) -> dict[str, Any]:
        return _join_secrets(row.settings or {}, self.box.open(row.secrets_encrypted))

    def _info(self, row: Enablement, manifest: Manifest) -> EnablementInfo:
        full = self._full_settings(row)
        return EnablementInfo(
            row.tenant_id,
            row.module_id,
            row.version,
            row.previous_version,
            row.enabled,
            mask_settings(manifest, full),
            f"{self.webhook_url_base}/hooks/{row.tenant_id}/{row.module_id}/{row.webhook_token}",
        )


def _split_secrets(
    manifest: Manifest, settings: dict[str, Any]
) -> tuple[dict[str, Any], list[list[Any]]]:
    """Settings without their secrets, and the secrets as ``[data path, value]`` pairs
    (``[["auth", "token"], "…"]``, ``[["accounts", 0, "key"], "…"]``), so nested secrets,
    secrets in array elements and properties named ``api.key`` are all sealed."""
    public = copy.deepcopy(settings)
    secret: list[list[Any]] = []
    for location in secret_locations(manifest, public):
        value = paths.pop(public, location)
        if value is not paths.MISSING:
            secret.append([list(location), value])
    return public, secret


def _join_secrets(public: dict[str, Any], sealed: Any) -> dict[str, Any]:
    """The full settings from the public part and what :meth:`SecretBox.open` returned.

    Two sealed formats are read: the current list of ``[data path, value]`` pairs, and the
    dotted-key object (``{"auth.token": "…"}``) that versions before key paths wrote. Old rows
    are not migrated in place: they are rewritten in the new format by the next settings
    change, and read correctly until then (a dotted key was only ever written for a path of
    plain identifiers, so splitting it on ``.`` is exact).
    """
    joined = copy.deepcopy(public)
    if isinstance(sealed, dict):
        pairs: list[Any] = [[key.split("."), value] for key, value in sealed.items()]
    else:
        pairs = sealed if isinstance(sealed, list) else []
    for pair in pairs:
        if isinstance(pair, list) and len(pair) == 2 and paths.is_data_path(pair[0]):
            paths.put(joined, tuple(pair[0]), pair[1])
    return joined
