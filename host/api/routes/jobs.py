"""Admin routes of the campaign job queue (PostgreSQL): the jobs waiting, running and failed,
and retrying a failed one. On SQLite the jobs run in the server's threads and there is no
queue: 409 saying so."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from fastapi import Path, Query

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep
from host.api.paging import paged_by
from host.api.schemas import JobOut, JobPage

router = checked_router(prefix="/api/v1/jobs", tags=["jobs"])

MAX_LIMIT = 500


@router.get("", dependencies=[paged_by("before", "limit")])
def list_jobs(
    host: HostDep,
    _admin: AdminDep,
    status: Annotated[Literal["todo", "doing", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    before: Annotated[int | None, Query(ge=1, description="`nextBefore` of the last page")] = None,
) -> JobPage:
    """Newest first: the campaign and tenant of each job, its attempts and crashes, the last
    error (masked with the tenant's secret settings) and its times."""
    jobs = host.require_job_engine().list(status=status, limit=limit, before=before)
    items = [
        JobOut.model_validate(
            dataclasses.replace(job, error=host.mask_job_error(job.tenant_id, job.error))
        )
        for job in jobs
    ]
    return JobPage(items=items, next_before=jobs[-1].id if len(jobs) == limit else None)


@router.post("/{job_id}/retry", status_code=202)
def retry_job(
    host: HostDep, _admin: AdminDep, job_id: Annotated[int, Path(ge=1)]
) -> dict[str, int]:
    """Put a failed job back in the queue now (its crash count and backoff start again);
    404 for an unknown job, 409 for one that has not failed."""
    host.require_job_engine().retry(job_id)
    return {"id": job_id}
