"""API models: campaigns, their progress, stats, attention flag and deliveries."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime


class CampaignQueued(ApiModel):
    id: str
    status: str
    stage: str


class CampaignProgressOut(ApiModel):
    stage: str
    total: int
    exported: int
    prepared: int
    skipped: int
    skipped_by: dict[str, int] = Field(
        description="Why recipients were left out: unsubscribed, bounced, complained, "
        "noAddress, category"
    )
    batches: int
    batch_size: int
    percent: float
    rate_limited_until: IsoTime | None = Field(
        None,
        description="Set while the job waits because the service rate-limited a batch "
        "call (HTTP 429): when it calls that batch again. The status stays as it was",
    )


class CampaignStatsOut(ApiModel):
    values: dict[str, int] | None = Field(
        description="CampaignStats (total, sent, delivered, ...); null when never fetched"
    )
    fetched_at: IsoTime | None
    stale: bool = Field(description="The module failed; these are the last cached values")
    error: str | None


class CampaignAttentionOut(ApiModel):
    reason: str
    at: IsoTime


class CampaignOut(ApiModel):
    id: str
    module: str
    module_version: str
    type: str = Field(description="CampaignType")
    name: str
    status: str = Field(description="CampaignStatus")
    external_id: str | None
    error: str | None
    cancel_requested: bool
    progress: CampaignProgressOut
    created_at: IsoTime
    finished_at: IsoTime | None
    attention: CampaignAttentionOut | None = Field(
        None,
        description="Set while an admin must resolve the campaign "
        "(POST .../campaigns/{id}/resolve): it may or may not exist in the service",
    )
    stats: CampaignStatsOut | None = Field(
        description="Only on the single-campaign call, once it exists in the service"
    )


class DeliveryOut(ApiModel):
    contact_id: str
    email: str | None
    phone: str | None
    status: str = Field(description="DeliveryStatus")
    history: list[dict[str, Any]]
    updated_at: IsoTime


class DeliveryPage(ApiModel):
    items: list[DeliveryOut]
    next: str | None = Field(description="`after` of the next page; null on the last one")
