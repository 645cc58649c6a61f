"""A tenant's activity: the invocation log (every module call, filtered by module,
function, outcome and time; each with its masked log and fetches) and the webhook receipts
(status, actions applied, skipped ones with their reasons, the error)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.guard import TenantViewer
from host.console.templating import render
from host.errors import InvalidInput, Problem
from host.marketing.invocation_log import InvocationFilter
from host.platform import Host

router = checked_router(prefix="/console/tenants/{tenant_id}/activity", include_in_schema=False)

PAGE = 50


def _time(text: str, field: str) -> datetime | None:
    """A filter's time as the form sends it (``2024-05-01T10:30``, UTC); empty is none."""
    if not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            "the time filter is invalid", [Problem(field, "a date and time, e.g. 2024-05-01T10:30")]
        ) from None


@router.get("")
def activity(
    request: Request,
    tenant_id: str,
    viewer: TenantViewer,
    module: Annotated[str, Query(max_length=64)] = "",
    function: Annotated[str, Query(max_length=100)] = "",
    outcome: Annotated[str, Query(max_length=40)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    where = InvocationFilter(
        module.strip() or None,
        function.strip() or None,
        outcome.strip() or None,
        _time(since, "since"),
        _time(until, "until"),
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
                "since": since,
                "until": until,
            },
            "receipts": host.webhooks.receipts(tenant_id, limit=PAGE),
        },
        viewer=viewer,
    )
