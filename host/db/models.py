"""Tables of the host, in SQLAlchemy 2.0 typed style. Schema changes go through Alembic
(``host/migrations``); never call ``create_all`` outside tests of the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back timezone-aware on every database (SQLite
    drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    # Named constraints let later migrations alter them (SQLite batch mode needs names).
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Module(Base):
    __tablename__ = "modules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    versions: Mapped[list[ModuleVersion]] = relationship(
        back_populates="module", order_by="ModuleVersion.id"
    )


class ModuleVersion(Base):
    """One immutable uploaded version: manifest and script exactly as uploaded."""

    __tablename__ = "module_versions"
    __table_args__ = (UniqueConstraint("module_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    module_id: Mapped[str] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    script: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    functions: Mapped[list[Any]] = mapped_column(JSON)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    module: Mapped[Module] = relationship(back_populates="versions")


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """Set when the tenant is deleted: it is gone from every surface at once, and its rows
    are purged in batches afterwards (``host/tenant_deletion.py``)."""


class Enablement(Base):
    """A module pinned for a tenant, with its settings. Secrets live only in
    ``secrets_encrypted`` (Fernet); ``settings`` holds the non-secret values."""

    __tablename__ = "enablements"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    module_id: Mapped[str] = mapped_column(ForeignKey("modules.id"), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_token: Mapped[str] = mapped_column(String(128), unique=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ModuleStorage(Base):
    """The small key-value store a module keeps per tenant (the script's ``storage``)."""

    __tablename__ = "module_storage"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    module_id: Mapped[str] = mapped_column(ForeignKey("modules.id"), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Invocation(Base):
    """One call of a CRM_Marketing_* function, whatever its outcome."""

    __tablename__ = "invocations"
    __table_args__ = (
        Index("ix_invocations_tenant_started", "tenant_id", "started_at"),
        Index("ix_invocations_started_at", "started_at"),  # retention purge
        Index("ix_invocations_tenant_request", "tenant_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    module_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    function: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[float] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log: Mapped[str | None] = mapped_column(Text, nullable=True)
    fetches: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cpu_ms: Mapped[float | None] = mapped_column(nullable=True)
    peak_memory_kb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the HTTP request that caused the call (``X-Request-ID``), None for background work
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


# --- CRM Marketing data (tenant-scoped) ------------------------------------------------------


class Contact(Base):
    """A CRM contact. ``email_key`` is the case-insensitive form used for matching webhook
    events to contacts; unique per tenant."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email_key"),
        Index("ix_contacts_tenant_phone", "tenant_id", "phone"),
    )

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    email_key: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="Subscribed")
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Soft bounces in a row (reset by a delivery); the tenant's suppression policy turns
    the contact Bounced at its limit (``host/marketing/suppression_policy.py``)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ContactUnsubscription(Base):
    """A contact unsubscribed from one category (a service's list/group id)."""

    __tablename__ = "contact_unsubscriptions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "contact_id"], ["contacts.tenant_id", "contacts.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str] = mapped_column(String(255), primary_key=True)
    module_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Template(Base):
    """A template imported from (or published to) a module's service."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("tenant_id", "module_id", "external_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    module_id: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    html_cached_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Campaign(Base):
    """An email/SMS/messenger campaign and the persistent state of its send job.

    ``stage`` and the cursors make the job resumable: a batch is recorded as done in the same
    transaction that stores its deliveries, so a restart continues after the last finished
    batch and never repeats one."""

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_tenant_module_external", "tenant_id", "module_id", "external_id"),
        Index("ix_campaigns_stage", "stage"),
        Index("ix_campaigns_finished_at", "finished_at"),  # retention purge
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    module_id: Mapped[str] = mapped_column(String(64))
    module_version: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(500))
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    audience: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="Draft")
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    stage: Mapped[str] = mapped_column(String(16), default="queued")
    batch_size: Mapped[int] = mapped_column(Integer, default=1000)
    total: Mapped[int] = mapped_column(Integer, default=0)
    exported: Mapped[int] = mapped_column(Integer, default=0)
    prepared: Mapped[int] = mapped_column(Integer, default=0)
    batches_done: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped_by: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Why the skipped recipients were left out: reason -> count (``Audience.left_out``)."""
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stats_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stats_stale: Mapped[bool] = mapped_column(Boolean, default=False)
    stats_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attention_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the campaign needs an admin (``host.marketing.campaign_attention``); None: it
    does not. A flagged campaign keeps its status and stage, and no job claims it."""
    attention_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Delivery(Base):
    """One recipient of a campaign; ``history`` lists every status it went through."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_campaign_email", "campaign_id", "email_key"),)

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email_key: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="Pending")
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class OutboxMessage(Base):
    """An email a module asked the host to send (SendEmail action), until delivered."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    module_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookReceipt(Base):
    """One request received on a webhook URL and what came of it (applied and skipped
    actions with reasons), so an admin can see why an event changed nothing."""

    __tablename__ = "webhook_receipts"
    __table_args__ = (
        Index("ix_webhook_receipts_tenant_received", "tenant_id", "received_at"),
        Index("ix_webhook_receipts_received_at", "received_at"),  # retention purge
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    module_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_code: Mapped[int] = mapped_column(Integer)
    applied: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the stored request (gone once retention purged it) and, for a replay, the receipt of
    # the request it replayed and the module version it ran
    request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    replay_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    module_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the actions the module returned (host/marketing/action_diff.py), for shadow runs;
    # None for a failed request and for receipts older than revision 0015
    actions: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class WebhookRequest(Base):
    """A webhook request exactly as received (method, URL, headers, raw body), sealed with
    the host's secret key, so it can be replayed and its signature still verifies. Kept
    ``CRM_HOST_RETENTION_WEBHOOK_REQUESTS_DAYS`` and at most
    ``CRM_HOST_WEBHOOK_REQUESTS_MAX_BYTES_PER_TENANT`` per tenant (``host/retention.py``)."""

    __tablename__ = "webhook_requests"
    __table_args__ = (
        Index("ix_webhook_requests_received_at", "received_at"),  # retention purge
        Index("ix_webhook_requests_tenant_received", "tenant_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    module_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[str] = mapped_column(Text)
    # acknowledged (acknowledge-first intake) and not processed yet: resumed after a restart
    pending: Mapped[bool] = mapped_column(Boolean, default=False)


class WebhookEvent(Base):
    """A provider event id already applied for (tenant, module): a later action carrying it
    is a repeat (``host/marketing/event_dedupe.py``). Kept
    ``CRM_HOST_WEBHOOK_EVENT_WINDOW_DAYS``."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_seen_at", "seen_at"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    module_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AdminToken(Base):
    """A named admin credential; only its SHA-256 is stored (the token is shown once), like
    tenant API keys. ``CRM_HOST_ADMIN_TOKEN``, when set, is accepted beside these."""

    __tablename__ = "admin_tokens"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """The first answer to a request sent with an ``Idempotency-Key`` header, replayed to
    retries of it until ``expires_at`` (``host/idempotency.py``)."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires", "expires_at"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    route: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContactSuppression(Base):
    """What an erased contact leaves behind: a per-tenant hash of one of its addresses and
    what it had unsubscribed from (``category`` "" with ``status`` for the whole contact),
    applied when that address is imported again (``host/marketing/contact_erasure.py``)."""

    __tablename__ = "contact_suppressions"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    address_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SuppressionPolicySetting(Base):
    """A tenant's suppression policy (``host/marketing/suppression_policy.py``); a tenant
    without a row has the documented defaults."""

    __tablename__ = "suppression_policies"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class CampaignKey(Base):
    """One key -> campaign entry of a module's attribution map (``crm.campaign_keys``): the
    per-message id a service echoes, mapped to the campaign's externalId. Kept by the host
    because a million message ids do not fit the module's 1 MiB storage."""

    __tablename__ = "campaign_keys"
    __table_args__ = (Index("ix_campaign_keys_created_at", "created_at"),)

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    module_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    campaign_external_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModuleCertification(Base):
    """The certification report of one stored version (``crm-host module certify``'s
    checks, run by the host on upload), bound to the version's content hash; ``seal`` is
    the report's digest sealed with the host's secret key, so an edited row no longer
    verifies (``host/certification.py``)."""

    __tablename__ = "module_certifications"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("module_versions.id", ondelete="CASCADE"), primary_key=True
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    seal: Mapped[str] = mapped_column(Text)
    certified_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsoleUser(Base):
    """A person who signs in to the web console (``host/accounts.py``): an argon2 password
    hash, never the password; a marketer belongs to one tenant (purged with it)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsoleSession(Base):
    """A signed-in browser: the cookie's SHA-256 (the cookie value itself is never stored),
    who signed in (a user, or the admin token by name when ``user_id`` is null), the session's
    CSRF token, and a one-shot message shown on the next page."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_expires_at", "expires_at"),)

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("console_users.id", ondelete="CASCADE"), nullable=True
    )
    admin_token_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    flash: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """One change made through the console or the API: who (``actor``), what (``action``,
    the request's method and path, and its answer's status), when, and from which address.
    Kept when the tenant it concerns is deleted: the log is about people, not tenants."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(500))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(1000))
    status: Mapped[int] = mapped_column(Integer)
    client: Mapped[str] = mapped_column(String(64))


class CampaignJobError(Base):
    """The last crash of a campaign's job on the PostgreSQL job engine (``host/jobs``): the
    engine keeps a job's status and attempts but not why it failed, and the failed-jobs view
    must say why. One row per job, replaced at each crash; the message is stored masked."""

    __tablename__ = "campaign_job_errors"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    campaign_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    crashes: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
