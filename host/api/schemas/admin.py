"""API models: the audit log and the campaign jobs view."""

from __future__ import annotations

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime


class AuditEntryOut(ApiModel):
    id: int
    at: IsoTime
    actor: str = Field(
        description="Who: a console user's email, an admin token by name, or a tenant's API key"
    )
    action: str = Field(description="What, in words (or the method and path)")
    method: str
    path: str
    status: int
    client: str = Field(description="The client's address (see CRM_HOST_TRUSTED_PROXIES)")


class AuditPage(ApiModel):
    items: list[AuditEntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page")


class JobOut(ApiModel):
    id: int
    status: str = Field(description="todo, doing or failed (finished jobs are deleted)")
    campaign_id: str
    tenant_id: str | None
    attempts: int = Field(description="Runs so far: crashes, a lease held elsewhere, shutdowns")
    crashes: int = Field(description="Runs that crashed (the retry limit counts these)")
    error: str | None = Field(description="The last crash, masked; null if it never crashed")
    error_at: IsoTime | None
    deferred_at: IsoTime | None
    updated_at: IsoTime | None = Field(description="The job's last status change")
    scheduled_at: IsoTime | None = Field(description="When a retried job may run again")


class JobPage(ApiModel):
    items: list[JobOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page")


class JobRetried(ApiModel):
    id: int
    status: str = Field(description="todo: the job waits for a worker again")
