"""Admin route of the audit log: every change made through the console or the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep
from host.api.paging import paged_by
from host.api.schemas import AuditEntryOut, AuditPage

router = checked_router(prefix="/api/v1/audit", tags=["audit"])

MAX_LIMIT = 500


@router.get("", dependencies=[paged_by("before", "limit")])
def list_audit(
    host: HostDep,
    _admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    before: Annotated[int | None, Query(ge=1, description="`nextBefore` of the last page")] = None,
    actor: Annotated[str | None, Query(max_length=320, description="Only this actor")] = None,
) -> AuditPage:
    """Newest first: who (`actor`), what (`action`, `method`, `path`, `status`), when (`at`)
    and from where (`client`)."""
    entries = host.audit.list(limit=limit, before=before, actor=actor)
    next_before = entries[-1].id if len(entries) == limit else None
    return AuditPage(
        items=[AuditEntryOut.model_validate(e) for e in entries], next_before=next_before
    )
