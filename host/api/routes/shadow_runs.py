"""``POST /api/v1/tenants/{t}/modules/{m}/shadow``: run a module version over the tenant's
stored webhook requests with no effect and report what it would do differently
(:mod:`host.marketing.shadow_runs`). Admin only: it runs another version's code with the
tenant's settings. The run is bounded (requests and seconds), so the call answers within
``maxSeconds`` plus one invocation's wall time."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep
from host.api.schemas import ShadowRunOut
from host.marketing.shadow_runs import (
    DEFAULT_REQUESTS,
    DEFAULT_SECONDS,
    MAX_REQUESTS,
    MAX_SECONDS,
    ShadowWindow,
)

router = checked_router(prefix="/api/v1/tenants", tags=["tenants"])

Slug = Annotated[str, Path(min_length=1, max_length=64)]


class ShadowRunRequest(BaseModel):
    """Which version to shadow, over which stored requests."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64, description="A stored version")
    since: AwareDatetime | None = Field(None, description="Requests received at or after")
    until: AwareDatetime | None = Field(None, description="Requests received before")
    limit: int = Field(
        DEFAULT_REQUESTS, ge=1, le=MAX_REQUESTS, description="The newest this many requests"
    )
    maxSeconds: float = Field(
        DEFAULT_SECONDS, gt=0, le=MAX_SECONDS, description="Stop starting requests after this"
    )


@router.post("/{tenant_id}/modules/{module_id}/shadow")
async def shadow_run(
    tenant_id: Slug,
    module_id: Slug,
    body: ShadowRunRequest,
    host: HostDep,
    _admin: AdminDep,
) -> ShadowRunOut:
    """Replay the tenant's stored webhook requests against `version` in workers of their
    own with no effect — no action applied, no receipt, storage a snapshot, no live fetch
    (each refused fetch is listed) — and report per request the action diff against what
    the current version returned, errors and timing. 404 for an unknown tenant, module or
    version, 409 when the module is disabled for the tenant."""
    window = ShadowWindow(body.since, body.until, body.limit, body.maxSeconds)
    report = await run_in_threadpool(
        host.shadow_runs.run, tenant_id, module_id, body.version, window
    )
    return ShadowRunOut.model_validate(report)
