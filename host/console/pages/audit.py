"""The audit log (admin): who changed what, when — console and API alike."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.guard import AdminViewer
from host.console.templating import render
from host.platform import Host

router = checked_router(prefix="/console/audit", include_in_schema=False)

PAGE = 100


@router.get("")
def audit_log(
    request: Request,
    viewer: AdminViewer,
    before: Annotated[int | None, Query(ge=1)] = None,
    actor: Annotated[str, Query(max_length=320)] = "",
) -> Response:
    host: Host = request.app.state.host
    entries = host.audit.list(limit=PAGE, before=before, actor=actor.strip() or None)
    older = entries[-1].id if len(entries) == PAGE else None
    return render(
        request,
        "audit.html",
        {"entries": entries, "older": older, "actor": actor},
        viewer=viewer,
    )
