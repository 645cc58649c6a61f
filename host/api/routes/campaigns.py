"""Tenant routes for campaigns: create (the send runs in the background), progress,
deliveries, stats, cancel; and the admin's resolution of a campaign that needs attention."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Query, Response

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep, TenantDep
from host.api.executors import tenant_work
from host.api.idempotent import IdempotencyKeyHeader, answered
from host.api.paging import paged_by
from host.api.schemas import CampaignOut, CampaignQueued, CampaignStatsOut, DeliveryPage
from host.idempotency import fingerprint
from host.marketing.campaign_attention import AttentionResolution
from host.marketing.campaigns import CampaignDraft

router = checked_router(prefix="/api/v1/tenants/{tenant_id}/campaigns", tags=["campaigns"])


@router.post("", status_code=202)
@tenant_work
def create_campaign(
    tenant_id: TenantDep,
    body: CampaignDraft,
    host: HostDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CampaignQueued:
    """Validate and queue a campaign → `{id, status}`. ExportContacts, PrepareCampaign (in
    batches) and CreateCampaign run in the background; poll `GET .../campaigns/{id}`.
    Every problem is listed in one 422 answer. With an `Idempotency-Key`, a retry gets the
    first answer (the same campaign) instead of a second campaign."""
    canonical = json.dumps(body.model_dump(exclude_unset=True), sort_keys=True)
    request = host.idempotency.request(
        tenant_id, "campaigns.create", idempotency_key, fingerprint(canonical)
    )
    answer = host.idempotency.run(
        request, lambda claim: (202, host.campaigns.create(tenant_id, body, idempotency=claim))
    )
    return CampaignQueued.model_validate(answered(response, answer))


@router.get("", dependencies=[paged_by("offset", "limit")])
@tenant_work
def list_campaigns(
    tenant_id: TenantDep,
    host: HostDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[CampaignOut]:
    """Campaigns, newest first, with progress (stats only on the single-campaign call)."""
    campaigns = host.campaigns.list(tenant_id, limit=limit, offset=offset)
    return [CampaignOut.model_validate(c) for c in campaigns]


@router.get("/{campaign_id}")
@tenant_work
def show_campaign(tenant_id: TenantDep, campaign_id: str, host: HostDep) -> CampaignOut:
    """`{id, status, externalId, error, progress: {stage, total, exported, prepared, skipped,
    skippedBy, batches, percent, rateLimitedUntil}, stats: {values, fetchedAt, stale, error}
    | null}`; ``skippedBy`` counts why recipients were left out (unsubscribed, bounced,
    complained, noAddress, category); ``rateLimitedUntil`` is set while the job waits for
    the service's rate limit."""
    return CampaignOut.model_validate(host.campaigns.get(tenant_id, campaign_id))


@router.get("/{campaign_id}/deliveries", dependencies=[paged_by("after", "limit")])
@tenant_work
def list_deliveries(
    tenant_id: TenantDep,
    campaign_id: str,
    host: HostDep,
    after: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[str | None, Query(description="Only this DeliveryStatus")] = None,
) -> DeliveryPage:
    """Per-recipient delivery status, in contact id order: `{items, next}`."""
    page = host.campaigns.deliveries(
        tenant_id, campaign_id, after=after, limit=limit, status=status
    )
    return DeliveryPage.model_validate(page)


@router.get("/{campaign_id}/stats")
@tenant_work
def campaign_stats(
    tenant_id: TenantDep, campaign_id: str, host: HostDep, refresh: bool = False
) -> CampaignStatsOut:
    """GetCampaignStats, cached for the TTL; on a module error the cached value with
    `stale: true`; 502 when the module fails and nothing is cached."""
    return CampaignStatsOut.model_validate(
        host.campaign_stats.get(tenant_id, campaign_id, refresh=refresh)
    )


@router.post("/{campaign_id}/cancel")
@tenant_work
def cancel_campaign(tenant_id: TenantDep, campaign_id: str, host: HostDep) -> CampaignOut:
    """Stop the send before its next batch (status Cancelled). 409 once the campaign is
    being created in the service or is finished."""
    return CampaignOut.model_validate(host.campaigns.cancel(tenant_id, campaign_id))


@router.post("/{campaign_id}/resolve")
@tenant_work
def resolve_campaign(
    tenant_id: TenantDep,
    campaign_id: str,
    body: AttentionResolution,
    host: HostDep,
    _admin: AdminDep,
) -> CampaignOut:
    """Admin only: resolve a campaign that needs attention (its job was interrupted during
    a create call the module does not declare idempotent). `{"externalId": "<id in the
    service>"}`: it exists there, record it (status Sending or Scheduled); `{"notCreated":
    true}`: it does not, so the host creates it again. 409 when it needs no attention."""
    host.campaign_attention.resolve(tenant_id, campaign_id, body)
    return CampaignOut.model_validate(host.campaigns.get(tenant_id, campaign_id, with_stats=False))
