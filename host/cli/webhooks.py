"""``crm-host webhooks …``: a tenant's stored webhook requests (masked), and replaying one
against the server's database, as ``POST .../webhooks/receipts/{id}/replay`` does."""

from __future__ import annotations

from typing import Annotated

import typer

from host.cli.host_options import DatabaseOption, HomeOption, open_host
from host.cli.output import handles_errors, print_json, table

app = typer.Typer(help="Stored webhook requests: list, replay.", no_args_is_help=True)


@app.command("list")
@handles_errors
def webhooks_list(
    tenant_id: str,
    module: Annotated[str | None, typer.Option(help="Only this module's requests.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Receipts to show.")] = 100,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """The tenant's latest webhook receipts, newest first, with the id of the stored request
    each one replays (`crm-host webhooks replay TENANT RECEIPT`)."""
    with open_host(database_url, home, read_only=True) as host:
        host.tenants.get(tenant_id)
        receipts = host.webhooks.receipts(tenant_id, limit=limit)
    table(
        f"Webhook receipts of {tenant_id}",
        (
            "receipt",
            "module",
            "version",
            "received",
            "status",
            "applied",
            "skipped",
            "replay of",
            "request",
        ),
        (
            (
                r.id,
                r.module,
                r.version or "",
                r.received_at.isoformat(),
                r.status,
                r.applied,
                len(r.skipped),
                r.replay_of or "",
                r.request_id or "",
            )
            for r in receipts
            if module is None or r.module == module
        ),
    )


@app.command("replay")
@handles_errors
def webhooks_replay(
    tenant_id: str,
    receipt_id: Annotated[int, typer.Argument(min=1, help="The receipt whose request to replay.")],
    version: Annotated[
        str | None, typer.Option(help="Run this stored version instead of the pinned one.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the actions; apply and keep nothing.")
    ] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Run a stored webhook request again; prints the outcome as JSON (the new receipt,
    the status the module answered, the applied and skipped actions)."""
    with open_host(database_url, home) as host:
        print_json(
            host.webhook_replay.replay(tenant_id, receipt_id, version=version, dry_run=dry_run)
        )
