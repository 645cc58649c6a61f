"""The host's configuration: one typed object for every ``CRM_HOST_*`` variable, read once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./crm-host.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
MAX_CAMPAIGN_BATCH_SIZE = 10_000


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class HostSettings(BaseSettings):
    """Everything the host reads from the environment (SPEC §7)."""

    model_config = SettingsConfigDict(env_prefix="CRM_HOST_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: a SQLite file by default, PostgreSQL in deployments.",
    )
    admin_token: str | None = Field(
        None, description="Bearer token of the platform admin; `serve` generates one if unset."
    )
    secret_key: str | None = Field(
        None,
        description="Key that encrypts settings secrets. If unset with SQLite, a key file is "
        "created beside the database file.",
    )
    public_url: str = Field(
        DEFAULT_PUBLIC_URL,
        description="Base URL of webhook URLs given to services; `serve` uses its own "
        "address when this is not set.",
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
    sandbox_workers: int = Field(2, ge=1, le=64, description="Warm sandbox worker processes.")
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
    campaign_batch_size: int = Field(
        1000, ge=1, le=MAX_CAMPAIGN_BATCH_SIZE, description="Default recipients per batch."
    )
    campaign_workers: int = Field(2, ge=1, le=32, description="Campaign job threads of a server.")
    campaign_lease_seconds: float = Field(
        60.0, gt=0, description="Campaign job lease; must exceed the longest module call."
    )
    campaign_poll_seconds: float = Field(2.0, gt=0, description="How often idle job threads look.")
    campaign_stats_ttl_seconds: float = Field(
        60.0, ge=0, description="How long GetCampaignStats results are served from cache."
    )
    max_script_bytes: int = Field(512 * 1024, ge=1024)
    max_archive_bytes: int = Field(5 * 1024 * 1024, ge=1024)
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

    _split = field_validator("egress_allow", "plugins", mode="before")(_split_commas)

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def sqlite_path(self) -> Path | None:
        """The database file when the URL names a SQLite file, else None."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        rest = self.database_url[len(prefix) :].split("?", 1)[0]
        if rest in ("", ":memory:"):
            return None
        return Path(rest)
