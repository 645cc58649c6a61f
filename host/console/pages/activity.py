"""A tenant's activity: the invocation log (every module call, filtered by module,
function, outcome and time; each with its masked log and fetches) and the webhook receipts
(status, actions applied, skipped ones with their reasons, the error)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from host.console.guard import TenantViewer
from host.console.templating import render
from host.marketing.invocation_log import InvocationFilter
from host.platform import Host

router = APIRouter(prefix="/console/tenants/{tenant_id}/activity", include_in_schema=False)

PAGE = 50


@router.get("")
def activity(
    request: Request,
    tenant_id: str,
    viewer: TenantViewer,
    module: Annotated[str, Query(max_length=64)] = "",
    function: Annotated[str, Query(max_length=100)] = "",
    outcome: Annotated[str, Query(max_length=40)] = "",
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    where = InvocationFilter(
        module.strip() or None, function.strip() or None, outcome.strip() or None, since, until
    )
    page = host.invocation_log.list_page(tenant_id, where, limit=PAGE, before=before)
    return render(
        request,
        "activity.html",
        {
            "tenant": tenant,
            "page": page,
            "filters": {
                "module": module,
                "function": function,
                "outcome": outcome,
                "since": since.strftime("%Y-%m-%dT%H:%M") if since else "",
                "until": until.strftime("%Y-%m-%dT%H:%M") if until else "",
            },
            "receipts": host.webhooks.receipts(tenant_id, limit=PAGE),
        },
        viewer=viewer,
    )
