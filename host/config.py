"""The host's configuration: one typed object for every ``CRM_HOST_*`` variable, read once."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from host.errors import InvalidInput
from host.origins import authority_of, check_separate_origins
from sandbox.kernel_wall import LAYERS

DATABASE_FILE = "crm-host.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
MAX_CAMPAIGN_BATCH_SIZE = 10_000


def default_home() -> Path:
    """``$XDG_DATA_HOME/crm-host``, i.e. ``~/.local/share/crm-host`` when XDG is not set: one
    place per user, whatever the current directory (a CLI run from another folder must find the
    server's database, not silently create an empty one)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "crm-host"


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def normalise_database_url(url: str) -> str:
    """``postgresql://`` (and Heroku-style ``postgres://``) URLs get the psycopg 3 driver, the
    one the ``postgres`` extra installs, whatever SQLAlchemy's default driver is."""
    for scheme in POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class HostSettings(BaseSettings):
    """Everything the host reads from the environment (SPEC §7)."""

    model_config = SettingsConfigDict(env_prefix="CRM_HOST_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Data directory (created 0700): the SQLite database, its key file and "
        "recordings. Default `$XDG_DATA_HOME/crm-host`.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL: a SQLite file in `home` by default, PostgreSQL in "
        "deployments.",
    )
    admin_token: str | None = Field(
        None, description="Bearer token of the platform admin; `serve` generates one if unset."
    )
    secret_key: str | None = Field(
        None,
        description="Key that encrypts settings secrets. If unset with SQLite, a key file is "
        "created beside the database file.",
    )
    secret_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Several keys, comma-separated, for rotation: the first encrypts, every "
        "one decrypts. Replaces `CRM_HOST_SECRET_KEY` (set one of the two).",
    )
    public_url: str = Field(
        DEFAULT_PUBLIC_URL,
        description="Base URL of webhook URLs given to services; `serve` uses its own "
        "address when this is not set.",
    )
    webhook_base_url: str | None = Field(
        None,
        description="Base URL of webhook URLs when they get an origin of their own: "
        "`/hooks/...` then answers only on this host, and the API, docs and console answer "
        "404 there. Unset: webhooks share the public URL's origin.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or CIDRs of reverse proxies whose `X-Forwarded-For` names the "
        "client (console sign-in limits, audit log); unset: the connection's address is the "
        "client and `X-Forwarded-For` is ignored.",
    )
    console_session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="How long a console sign-in lasts."
    )
    console_sign_in_failures: int = Field(
        5,
        ge=1,
        description="Failed console sign-ins one account may have in 15 minutes before "
        "further attempts are refused (a client address may have four times as many).",
    )
    egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts, host:ports or CIDRs trusted although loopback/private.",
    )
    plugins: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Allow-list of entry-point plugin names to load; unset loads all, "
        "empty loads none.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`serve`'s log lines: text, or one JSON object a line (with the request id).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that may scrape `GET /metrics` and nothing else (so the "
        "Prometheus configuration need not hold the admin token); the admin token works too.",
    )
    metrics_public: bool = Field(
        False,
        description='Serve `GET /metrics` to anyone, without a token (SPEC §7: "open when '
        'configured so"), for a host whose metrics port only the scraper can reach.',
    )
    sandbox_workers: int = Field(2, ge=1, le=64, description="Warm sandbox worker processes.")
    sandbox_require: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Sandbox layers the host refuses to start without (of "
        f"{', '.join(LAYERS)}); empty reports only.",
    )
    sandbox_tenant_max_concurrent: int | None = Field(
        None,
        ge=1,
        description="Module calls one tenant may run at once on this node (default: half "
        "of CRM_HOST_SANDBOX_WORKERS, at least 1).",
    )
    sandbox_module_max_concurrent: int | None = Field(
        None,
        ge=1,
        description="Module calls one (tenant, module) may run at once (default: the "
        "tenant's share).",
    )
    sandbox_admin_max_concurrent: int = Field(
        1, ge=1, description="Admin calls that run module code at once (their own share)."
    )
    sandbox_max_waiting: int = Field(
        8, ge=0, description="Calls of one share waiting for a slot; the next is refused."
    )
    sandbox_wait_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Longest wait for a sandbox slot before 503 (webhooks) / 429 (tenant API).",
    )
    webhook_threads: int = Field(
        16, ge=1, le=256, description="Threads serving webhooks (apart from the admin API)."
    )
    tenant_api_threads: int = Field(
        16, ge=1, le=256, description="Threads serving the tenant API (apart from the admin API)."
    )
    webhook_max_inflight: int = Field(
        8,
        ge=1,
        description="Requests one webhook URL may have in progress; more answer 503 at once.",
    )
    webhook_rate_per_s: float | None = Field(
        None, gt=0, description="Optional token-bucket rate per webhook URL (unset: off)."
    )
    webhook_rate_burst: int = Field(
        10, ge=1, description="Bucket size of the webhook rate limit (requests at once)."
    )
    webhook_target_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="How long a node serves a webhook URL's target (token, version, "
        "settings) from memory before reading it again: a change made on another node is "
        "seen within this time (on this node at once); 0 reads it on every request.",
    )
    campaign_batch_size: int = Field(
        1000, ge=1, le=MAX_CAMPAIGN_BATCH_SIZE, description="Default recipients per batch."
    )
    campaign_workers: int = Field(2, ge=1, le=32, description="Campaign job threads of a server.")
    campaign_lease_seconds: float = Field(
        60.0, gt=0, description="Campaign job lease; must exceed the longest module call."
    )
    campaign_poll_seconds: float = Field(2.0, gt=0, description="How often idle job threads look.")
    serve_runs_jobs: bool = Field(
        True,
        description="On PostgreSQL, `crm-host serve` also runs campaign jobs (an in-process "
        "worker); false makes it a web node only, for `crm-host worker` processes to run "
        "them. SQLite has no worker process: there serve always runs the jobs.",
    )
    job_tenant_concurrency: int = Field(
        1,
        ge=1,
        le=32,
        description="Campaigns of one tenant whose jobs run at the same time: on PostgreSQL "
        "across every worker (procrastinate locks, one per slot), on SQLite among the "
        "server's job threads (a `crm-host campaign send` runs outside the limit).",
    )
    job_max_attempts: int = Field(
        5, ge=1, le=100, description="PostgreSQL: runs of a crashing job before it is failed."
    )
    job_backoff_seconds: float = Field(
        2.0,
        gt=0,
        description="PostgreSQL: wait before the first retry of a crashed job "
        "(doubled at each further crash).",
    )
    job_backoff_max_seconds: float = Field(
        300.0, gt=0, description="PostgreSQL: the longest wait between retries of a job."
    )
    job_heartbeat_seconds: float = Field(
        10.0, gt=0, description="PostgreSQL: how often a worker records that it is alive."
    )
    job_stalled_seconds: float = Field(
        30.0,
        gt=0,
        description="PostgreSQL: a worker silent this long is taken for dead and its "
        "running jobs are retried by another one (keep it above the heartbeat).",
    )
    job_maintenance_seconds: float = Field(
        5.0,
        gt=0,
        description="PostgreSQL: how often a worker looks for stalled jobs and for runnable "
        "campaigns left without a job.",
    )
    campaign_rate_limit_max_wait_seconds: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="Longest single wait of a campaign job whose batch call ran into the "
        "provider's rate limit (HTTP 429): the service's Retry-After (or reset time) is "
        "capped at this.",
    )
    campaign_rate_limit_max_total_seconds: float = Field(
        3600.0,
        ge=0,
        le=7 * 86_400,
        description="How long one campaign may wait for provider rate limits in all; past "
        "it the campaign fails with a rate_limited error. 0: never wait (fail at once).",
    )
    campaign_rate_limit_default_wait_seconds: float = Field(
        30.0,
        ge=1,
        le=86_400,
        description="The wait after a 429 that says neither Retry-After nor a reset time.",
    )
    campaign_stats_ttl_seconds: float = Field(
        60.0, ge=0, description="How long GetCampaignStats results are served from cache."
    )
    campaign_stats_retention_days: int = Field(
        90,
        ge=0,
        description="How long after a campaign ended its stats are still fetched; a module "
        "version used by a campaign inside it cannot be removed.",
    )
    tenant_purge_batch_rows: int = Field(
        10_000,
        ge=1,
        le=10_000,
        description="Rows a deleted tenant's purge removes per transaction.",
    )
    max_script_bytes: int = Field(512 * 1024, ge=1024)
    max_archive_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    require_certified: bool = Field(
        False,
        description="Refuse to store a module version that fails certification (or comes "
        "without the tests/ its cases are in), and to enable a version without a valid "
        "certification (CRM_HOST_REQUIRE_CERTIFIED=1).",
    )
    webhook_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest webhook body accepted (413 above)."
    )
    smtp_host: str | None = Field(
        None, description="SMTP relay for the outbox (SendEmail); unset keeps mail queued."
    )
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = Field("crm-host@localhost", description="From address of outbox mail.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(30.0, gt=0)
    outbox_max_attempts: int = Field(5, ge=1, description="Delivery attempts before failed.")
    outbox_retry_s: float = Field(
        30.0, gt=0, description="First retry delay; doubles per attempt (capped at 1 h)."
    )

    retention_invocations_days: float = Field(
        30.0,
        ge=0,
        description="Days invocation log rows (with captured logs) are kept; 0 keeps them forever.",
    )
    retention_webhook_receipts_days: float = Field(
        30.0, ge=0, description="Days webhook receipts are kept; 0 keeps them forever."
    )
    retention_deliveries_days: float = Field(
        180.0,
        ge=0,
        description="Days the deliveries (recipients and status history) of a finished campaign "
        "are kept after it finished; 0 keeps them forever. The campaign itself stays.",
    )
    retention_webhook_requests_days: float = Field(
        7.0,
        ge=0,
        description="Days stored webhook requests (sealed, for replay) are kept; 0 keeps them "
        "forever (still bounded per tenant by CRM_HOST_WEBHOOK_REQUESTS_MAX_BYTES_PER_TENANT).",
    )
    retention_outbox_days: float = Field(
        30.0,
        ge=0,
        description="Days the outbox keeps settled mail (sent, or failed for good) after it "
        "was queued; 0 keeps it forever. Queued mail is never purged.",
    )
    webhook_requests_max_bytes_per_tenant: int = Field(
        1024**3,
        ge=0,
        description="Most bytes of stored webhook requests per tenant; the purge deletes the "
        "oldest above it. 0 stores no requests at all (no replay).",
    )
    webhook_event_window_days: float = Field(
        7.0,
        gt=0,
        description="Days a provider event id (an action's eventId) is remembered: a webhook "
        "bringing it again within the window applies none of that event's actions.",
    )
    webhook_retry_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Runs of an acknowledge-first module's webhook request before it is given "
        "up (each failed run leaves a receipt; the request stays stored for replay).",
    )
    webhook_retry_seconds: float = Field(
        10.0, gt=0, description="Delay before the first retry; doubles per attempt (capped 1 h)."
    )
    webhook_background_workers: int = Field(
        2, ge=1, le=64, description="Threads processing acknowledge-first webhook requests."
    )
    retention_batch_size: int = Field(
        1000, ge=1, le=10_000, description="Most rows one purge transaction deletes."
    )
    retention_interval_seconds: float = Field(
        3600.0, gt=0, description="How often `serve` purges expired rows."
    )

    _split = field_validator(
        "egress_allow",
        "plugins",
        "sandbox_require",
        "secret_keys",
        "trusted_proxies",
        mode="before",
    )(_split_commas)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
        return value

    @field_validator("sandbox_require")
    @classmethod
    def _known_layers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in LAYERS]
        if unknown:
            raise ValueError(f"unknown layer {', '.join(unknown)} (known: {', '.join(LAYERS)})")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _resolve_home(self) -> HostSettings:
        """``home`` made absolute; the database defaults to a file inside it."""
        self.home = self.home.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / DATABASE_FILE}"
        return self

    @field_validator("database_url")
    @classmethod
    def _parsable_url(cls, value: str) -> str:
        if not value:
            return value  # the SQLite file in `home`
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL (expected sqlite:///<file> or postgresql://…)"
            ) from None
        return normalise_database_url(value)

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("webhook_base_url")
    @classmethod
    def _check_webhook_base(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        authority_of(value)  # raises ValueError naming what is wrong
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _one_key_setting(self) -> HostSettings:
        if self.secret_key and self.secret_keys:
            raise ValueError(
                "set CRM_HOST_SECRET_KEYS or CRM_HOST_SECRET_KEY, not both (list the old key "
                "in CRM_HOST_SECRET_KEYS)"
            )
        return self

    @model_validator(mode="after")
    def _separate_origins(self) -> HostSettings:
        check_separate_origins(self.public_url, self.webhook_base_url)
        return self

    @property
    def webhook_url_base(self) -> str:
        """What every ``webhookUrl`` starts with: the webhook base, else the public URL."""
        return self.webhook_base_url or self.public_url

    def sqlite_path(self) -> Path | None:
        """The database file when the URL names a SQLite file, else None."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        rest = self.database_url[len(prefix) :].split("?", 1)[0]
        if rest in ("", ":memory:"):
            return None
        return Path(rest).absolute()

    def database_location(self) -> str:
        """Where the data is, for people: the absolute SQLite file, or the URL without its
        password."""
        path = self.sqlite_path()
        if path is not None:
            return str(path)
        try:
            return make_url(self.database_url).render_as_string(hide_password=True)
        except ArgumentError:  # an unparsable URL is reported when the engine is created
            return "(unparsable database URL)"


def load_settings(**overrides: object) -> HostSettings:
    """The settings from the environment (``overrides`` win, and are validated too); a bad
    value is one :class:`InvalidInput` line naming its variable, never a traceback."""
    try:
        return HostSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [_problem(error["loc"], error["msg"]) for error in exc.errors()]
        raise InvalidInput("invalid configuration: " + "; ".join(problems)) from None


def _problem(location: tuple[int | str, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    if not location:
        return message
    return "CRM_HOST_" + "_".join(str(part) for part in location).upper() + ": " + message
