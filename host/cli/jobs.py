"""``crm-host worker`` (run campaign jobs, PostgreSQL) and ``crm-host jobs …`` (the queue's
jobs, failed ones first of all, and retrying them)."""

from __future__ import annotations

import logging.config
from contextlib import closing
from typing import Annotated

import typer

from host.cli.host_options import DatabaseOption, HomeOption, host_settings, open_host
from host.cli.output import err, handles_errors, out, table
from host.jobs.pg_queue import LISTED_STATUSES
from host.logs import logging_config
from host.platform import Host

WORKER_NEEDS_POSTGRES = (
    "error: crm-host worker needs PostgreSQL; with SQLite, crm-host serve runs the campaign "
    "jobs itself"
)
USAGE_EXIT = 2

app = typer.Typer(help="Campaign jobs of the queue (PostgreSQL).", no_args_is_help=True)


@handles_errors
def worker(database_url: DatabaseOption = None, home: HomeOption = None) -> None:
    """Run campaign jobs (PostgreSQL): as many at once as CRM_HOST_CAMPAIGN_WORKERS, until
    SIGTERM or Ctrl-C, which stop it after each running job's current batch (those jobs are
    requeued, their campaigns resumable)."""
    settings = host_settings(database_url, home)
    host = Host(settings)
    if not host.uses_job_engine:
        err.print(WORKER_NEEDS_POSTGRES, markup=False, highlight=False)
        raise typer.Exit(USAGE_EXIT)
    # the host's loggers as serve has them (INFO, credentials masked, JSON on request): a
    # worker's log says which campaigns it took over from a dead node
    logging.config.dictConfig(logging_config(settings.log_format))
    with closing(host):
        host.open()
        err.print(
            f"crm-host worker: database {settings.database_location()}; "
            f"{settings.campaign_workers} jobs at once",
            markup=False,
            highlight=False,
        )
        host.job_worker().run(handle_signals=True)
    err.print("crm-host worker: stopped", markup=False, highlight=False)


StatusOption = Annotated[
    str | None,
    typer.Option("--status", help=f"Only jobs in this status: {', '.join(LISTED_STATUSES)}."),
]


@app.command("list")
@handles_errors
def jobs_list(
    status: StatusOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Campaign jobs, newest first: status, campaign, tenant, attempts and the last error."""
    if status is not None and status not in LISTED_STATUSES:
        raise typer.BadParameter(
            f"must be one of {', '.join(LISTED_STATUSES)}", param_hint="--status"
        )
    with open_host(database_url, home, read_only=True) as host:
        jobs = host.require_job_engine().list(status=status, limit=limit, before=None)
        rows = [
            (
                j.id,
                j.status,
                j.campaign_id,
                j.tenant_id,
                j.attempts,
                j.crashes,
                host.mask_job_error(j.tenant_id, j.error),
                j.updated_at.isoformat(timespec="seconds") if j.updated_at else None,
            )
            for j in jobs
        ]
    table(
        "Campaign jobs",
        ("id", "status", "campaign", "tenant", "attempts", "crashes", "last error", "updated"),
        rows,
    )


@app.command("retry")
@handles_errors
def jobs_retry(
    job_id: Annotated[int, typer.Argument(help="A failed job's id (crm-host jobs list).")],
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Put a failed job back in the queue now (its crash count and backoff start again)."""
    with open_host(database_url, home) as host:
        host.require_job_engine().retry(job_id)
    out.print(f"job {job_id} queued again", markup=False, highlight=False)
