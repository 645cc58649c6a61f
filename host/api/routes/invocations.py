"""Tenant route of the invocation log: every module call of the tenant, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query

from host.api.bodies import checked_router
from host.api.deps import HostDep, TenantDep
from host.api.executors import tenant_work
from host.api.paging import paged_by
from host.api.schemas import InvocationPage
from host.marketing.invocation_log import DEFAULT_LIMIT, MAX_LIMIT, InvocationFilter
from host.request_ids import MAX_LENGTH as MAX_REQUEST_ID

router = checked_router(prefix="/api/v1/tenants/{tenant_id}/invocations", tags=["invocations"])


@router.get("", dependencies=[paged_by("before", "limit")])
@tenant_work
def list_invocations(
    tenant_id: TenantDep,
    host: HostDep,
    module: Annotated[str | None, Query(description="Module id")] = None,
    function: Annotated[
        str | None, Query(description="CRM_Marketing_ImportTemplates or ImportTemplates")
    ] = None,
    outcome: Annotated[
        str | None, Query(description="ok, not_implemented, or a failure kind (SPEC §7)")
    ] = None,
    since: Annotated[datetime | None, Query(description="Started at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="Started before (ISO 8601)")] = None,
    request_id: Annotated[
        str | None,
        Query(
            alias="requestId",
            max_length=MAX_REQUEST_ID,
            description="Only the calls of the HTTP request with this `X-Request-ID`",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    before: Annotated[
        int | None, Query(description="`nextBefore` of the previous page", ge=1)
    ] = None,
) -> InvocationPage:
    """`{"items": [...], "nextBefore": id or null}`; pass `nextBefore` as `before` for the
    next page. Items: id, module, version, function, startedAt, durationMs, outcome, error,
    errorLine, log, fetches, cpuMs, peakMemoryKb, requestId (secrets already masked)."""
    host.tenants.get(tenant_id)
    where = InvocationFilter(module, function, outcome, since, until, request_id)
    page = host.invocation_log.list_page(tenant_id, where, limit=limit, before=before)
    return InvocationPage.model_validate(page)
