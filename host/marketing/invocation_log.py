"""Reading the invocation log (the writing side is ``plugins/invocation_log.py``).

Newest first means by ``started_at`` (then id, for calls started in the same instant). Rows
are written when a call ends, so ordering by id alone would put a long call that started
early above a short one that started later. Pages are keyset-paginated: ``before`` is the id
of the last item of the previous page, and the next page holds what sorts after it. Unlike
an offset, that stays correct while new calls are being logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select

from host.contract.function_model import PREFIX
from host.db.engine import Database
from host.db.models import Invocation
from host.errors import InvalidInput, Problem

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class InvocationFilter:
    """Which calls to list; every field narrows the result."""

    module: str | None = None
    function: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: the ``X-Request-ID`` of the HTTP request that caused the calls
    request_id: str | None = None


@dataclass(frozen=True)
class InvocationRecord:
    """One logged module call (secrets were masked before it was stored)."""

    id: int
    module: str
    version: str
    function: str
    started_at: datetime
    duration_ms: float
    outcome: str
    error: str | None
    error_line: int | None
    log: str | None
    fetches: list[dict[str, Any]]
    cpu_ms: float | None
    peak_memory_kb: int | None
    request_id: str | None

    @classmethod
    def of(cls, row: Invocation) -> InvocationRecord:
        return cls(
            id=row.id,
            module=row.module_id,
            version=row.version,
            function=row.function,
            started_at=row.started_at,
            duration_ms=row.duration_ms,
            outcome=row.outcome,
            error=row.error,
            error_line=row.error_line,
            log=row.log,
            fetches=row.fetches or [],
            cpu_ms=row.cpu_ms,
            peak_memory_kb=row.peak_memory_kb,
            request_id=row.request_id,
        )


@dataclass(frozen=True)
class InvocationPage:
    items: list[InvocationRecord]
    next_before: int | None
    """``before`` of the next page; None on the last one."""


def _utc(value: datetime | None) -> datetime | None:
    """Times without an offset are taken as UTC (the log stores UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class InvocationLogReader:
    def __init__(self, db: Database):
        self.db = db

    def list_page(
        self,
        tenant_id: str,
        where: InvocationFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        before: int | None = None,
    ) -> InvocationPage:
        """One page of the tenant's calls, newest first; ``next_before`` continues it (None
        when this page is the last)."""
        where = where or InvocationFilter()
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput("query is invalid", [Problem("limit", f"must be 1-{MAX_LIMIT}")])
        query = select(Invocation).where(Invocation.tenant_id == tenant_id)
        if where.module:
            query = query.where(Invocation.module_id == where.module)
        if where.function:
            function = where.function
            if not function.startswith(PREFIX):
                function = PREFIX + function  # "ImportTemplates" is accepted too
            query = query.where(Invocation.function == function)
        if where.outcome:
            query = query.where(Invocation.outcome == where.outcome)
        if where.request_id:
            query = query.where(Invocation.request_id == where.request_id)
        if (since := _utc(where.since)) is not None:
            query = query.where(Invocation.started_at >= since)
        if (until := _utc(where.until)) is not None:
            query = query.where(Invocation.started_at < until)
        with self.db.transaction() as session:
            if before is not None:
                cursor = session.get(Invocation, before)
                if cursor is None or cursor.tenant_id != tenant_id:
                    raise InvalidInput(
                        "query is invalid", [Problem("before", "is not an invocation id")]
                    )
                query = query.where(
                    or_(
                        Invocation.started_at < cursor.started_at,
                        and_(
                            Invocation.started_at == cursor.started_at,
                            Invocation.id < cursor.id,
                        ),
                    )
                )
            query = query.order_by(Invocation.started_at.desc(), Invocation.id.desc())
            rows = list(session.scalars(query.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return InvocationPage(
            items=[InvocationRecord.of(r) for r in rows],
            next_before=rows[-1].id if more and rows else None,
        )
