"""API models: the invocation log."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime


class InvocationOut(ApiModel):
    id: int
    module: str
    version: str
    function: str
    started_at: IsoTime
    duration_ms: float
    outcome: str = Field(description="ok, not_implemented, or a failure kind (SPEC §7)")
    error: str | None
    error_line: int | None
    log: str | None = Field(description="Captured output, secrets masked")
    fetches: list[dict[str, Any]] = Field(
        description="method, url, host, status, bytes, ms, error of each fetch; a 429's also "
        "`rate_limit`: its Retry-After / X-RateLimit-* / RateLimit-* headers"
    )
    cpu_ms: float | None
    peak_memory_kb: int | None
    request_id: str | None = Field(
        description="`X-Request-ID` of the HTTP request that caused the call; null for "
        "background work (campaign jobs, acknowledge-first webhooks)"
    )


class InvocationPage(ApiModel):
    items: list[InvocationOut]
    next_before: int | None = Field(description="`before` of the next page; null on the last")
