"""``crm-host campaign``: send a campaign from the command line, running its job in this
process with a progress bar; show, resume and cancel campaigns, and resolve one that needs
attention (see :mod:`host.marketing.campaign_attention`).

The campaign is stored already leased to this process, so a server running on the same
database never picks it up meanwhile. Ctrl-C stops the job before its next batch and
releases the lease: the campaign stays resumable (``campaign run``, or any running server).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from host.api.schemas import CampaignOut
from host.cli.host_options import DatabaseOption, HomeOption, open_host
from host.cli.output import err, fail, handles_errors, out, print_json
from host.marketing.campaign_attention import AttentionResolution
from host.marketing.campaign_job import CampaignProgress
from host.marketing.campaigns import CampaignDraft, CampaignView
from host.marketing.job_runner import new_owner
from host.marketing.lifecycle import FINAL_STAGES
from host.platform import Host

app = typer.Typer(help="Email, SMS and messenger campaigns.", no_args_is_help=True)

INTERRUPTED_EXIT = 130


@app.command("send")
@handles_errors
def campaign_send(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    module_id: Annotated[str, typer.Argument(help="Module enabled for the tenant.")],
    name: Annotated[str, typer.Option("--name", help="Campaign name.")],
    campaign_type: Annotated[str, typer.Option("--type", help="Email, Sms or Messenger.")] = (
        "Email"
    ),
    subject: Annotated[str | None, typer.Option(help="Email subject.")] = None,
    sender_name: Annotated[str | None, typer.Option("--sender-name")] = None,
    sender_email: Annotated[str | None, typer.Option("--sender-email")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Every contact of the tenant.")] = False,
    contacts: Annotated[
        str | None, typer.Option("--contacts", help="Comma-separated contact ids.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    html: Annotated[Path | None, typer.Option("--html", help="File with the HTML body.")] = None,
    template: Annotated[str | None, typer.Option("--template", help="Template id.")] = None,
    scheduled_at: Annotated[str | None, typer.Option("--scheduled-at", help="ISO 8601.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="Category id.")] = None,
    account_type: Annotated[str | None, typer.Option("--account-type")] = None,
    bot: Annotated[str | None, typer.Option("--bot", help="Messenger bot id.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Messenger text.")] = None,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Create a campaign and send it now, in this process, with a progress bar."""
    if everyone == bool(contacts):
        raise fail("give exactly one of --all or --contacts ID,ID")
    draft = CampaignDraft(
        module=module_id,
        name=name,
        type=campaign_type,
        subject=subject,
        senderName=sender_name,
        senderEmail=sender_email,
        contactIds="all" if everyone else [c.strip() for c in (contacts or "").split(",") if c],
        templateId=template,
        html=html.read_text() if html else None,
        scheduledAt=scheduled_at,
        categoryExternalId=category,
        batchSize=batch_size,
        campaignType=account_type,
        botId=bot,
        text=text,
    )
    with open_host(database_url, home) as host:
        owner = new_owner()
        created = host.campaigns.create(tenant_id, draft, claim_for=owner)
        err.print(f"campaign {created.id} created", markup=False, highlight=False)
        _run(host, tenant_id, created.id, owner)


@app.command("run")
@handles_errors
def campaign_run(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Resume a queued or interrupted campaign in this process (after Ctrl-C, or when no
    server runs)."""
    with open_host(database_url, home) as host:
        host.campaigns.get(tenant_id, campaign_id, with_stats=False)
        owner = new_owner()
        if host.campaign_runner.claim(campaign_id, owner=owner) is None:
            shown = host.campaigns.get(tenant_id, campaign_id, with_stats=False)
            if shown.attention is not None:
                raise fail(_attention_line(tenant_id, shown))
            if shown.progress.stage in FINAL_STAGES:
                _summary(shown, 0.0, 0)
                return
            raise fail(f"campaign {campaign_id} is being run by another process")
        _run(host, tenant_id, campaign_id, owner)


@app.command("status")
@handles_errors
def campaign_status(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Status, progress and stats of a campaign."""
    with open_host(database_url, home, read_only=True) as host:
        shown = host.campaigns.get(tenant_id, campaign_id)
    if as_json:
        print_json(CampaignOut.model_validate(shown))
        return
    progress = shown.progress
    out.print(
        f"{shown.name} ({shown.type}, {shown.module}): {shown.status}, "
        f"stage {_stage_line(progress)} {progress.percent}%",
        markup=False,
        highlight=False,
    )
    out.print(
        f"externalId: {shown.external_id or '-'}; recipients {progress.prepared}/"
        f"{progress.total - progress.skipped}, skipped {progress.skipped}, "
        f"batches {progress.batches}",
        markup=False,
        highlight=False,
    )
    if shown.error:
        out.print(f"error: {shown.error}", markup=False, highlight=False)
    if shown.attention is not None:
        out.print(
            f"needs attention since {shown.attention.at.isoformat()}: {shown.attention.reason}",
            markup=False,
            highlight=False,
        )
    stats = shown.stats
    if stats and stats.values:
        values = ", ".join(f"{k} {v}" for k, v in stats.values.items())
        stale = " (stale)" if stats.stale else ""
        out.print(f"stats{stale}: {values}", markup=False, highlight=False)


@app.command("cancel")
@handles_errors
def campaign_cancel(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Cancel a campaign: its job stops before the next batch."""
    with open_host(database_url, home) as host:
        shown = host.campaigns.cancel(tenant_id, campaign_id)
    out.print(f"campaign {campaign_id}: {shown.status}", markup=False, highlight=False)


@app.command("resolve")
@handles_errors
def campaign_resolve(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    external_id: Annotated[
        str | None,
        typer.Option("--external-id", help="It exists in the service: its id there."),
    ] = None,
    not_created: Annotated[
        bool,
        typer.Option("--not-created", help="It does not exist there: create it again."),
    ] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Resolve a campaign that needs attention (interrupted while being created in a
    service whose module cannot safely be asked again): record its id in the service, or
    mark it not created so that a server (or `campaign run`) creates it again."""
    if (external_id is None) == (not not_created):
        raise typer.BadParameter(
            "give either --external-id ID or --not-created", param_hint="--external-id"
        )
    resolution = AttentionResolution(externalId=external_id, notCreated=not_created)
    with open_host(database_url, home) as host:
        host.campaign_attention.resolve(tenant_id, campaign_id, resolution)
        shown = host.campaigns.get(tenant_id, campaign_id, with_stats=False)
    if not_created:
        out.print(
            f"campaign {campaign_id}: marked not created; a running server creates it again "
            f"(or run `crm-host campaign run {tenant_id} {campaign_id}`)",
            markup=False,
            highlight=False,
        )
        return
    out.print(
        f"campaign {campaign_id}: {shown.status}, externalId {shown.external_id}",
        markup=False,
        highlight=False,
    )


def _attention_line(tenant_id: str, shown: CampaignView) -> str:
    assert shown.attention is not None
    return (
        f"campaign {shown.id} needs attention: {shown.attention.reason} (`crm-host campaign "
        f"resolve {tenant_id} {shown.id} --external-id ID` or `--not-created`)"
    )


# --- running a job with a progress bar -------------------------------------------------------


def _run(host: Host, tenant_id: str, campaign_id: str, owner: str) -> None:
    """Run the job in a thread so that Ctrl-C lands here, between batches, as a stop."""
    stop = threading.Event()
    outcome: dict[str, Any] = {}
    started = time.monotonic()
    done_before: list[int] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("batches {task.fields[batches]}"),
        TextColumn("{task.fields[rate]} contacts/s"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("queued", total=100, batches=0, rate="-")

        def on_progress(progress: CampaignProgress) -> None:
            handled = progress.exported + progress.prepared
            if not done_before:
                done_before.append(handled)
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = f"{(handled - done_before[0]) / elapsed:,.0f}"
            _update(bar, task, progress, rate)

        finished = threading.Event()

        def work() -> None:
            try:
                outcome["stage"] = host.campaign_runner.run(
                    campaign_id, owner=owner, stop=stop, on_progress=on_progress
                )
            except BaseException as exc:  # re-raised in the main thread
                outcome["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=work, name="campaign-send", daemon=True).start()
        # Wait on an Event, not Thread.join: before Python 3.13 a KeyboardInterrupt inside
        # join() can mark a live thread as finished, and we would exit mid-batch.
        try:
            while not finished.wait(0.1):
                pass
        except KeyboardInterrupt:
            stop.set()
            err.print("stopping after the current batch (Ctrl-C again to abort)…")
            finished.wait()
    if "error" in outcome:
        raise outcome["error"]
    elapsed = time.monotonic() - started
    shown = host.campaigns.get(tenant_id, campaign_id, with_stats=False)
    handled = shown.progress.exported + shown.progress.prepared
    _summary(shown, elapsed, handled - (done_before[0] if done_before else handled))
    if shown.attention is not None:
        raise fail(_attention_line(tenant_id, shown))
    if shown.progress.stage not in FINAL_STAGES:
        err.print(
            f"interrupted: campaign {campaign_id} stopped at {shown.progress.stage} after "
            f"{shown.progress.batches} batches; resume it with `crm-host campaign run "
            f"{tenant_id} {campaign_id}` (a running server also resumes it)",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(INTERRUPTED_EXIT)
    if shown.status == "Failed":
        raise fail(f"campaign failed: {shown.error}")


def _stage_line(progress: CampaignProgress) -> str:
    """The stage, and while the job waits for the service's rate limit until when."""
    until = progress.rate_limited_until
    if until is None:
        return progress.stage
    return f"{progress.stage} (rate limited by the service until {until:%H:%M:%S} UTC)"


def _update(bar: Progress, task: TaskID, progress: CampaignProgress, rate: str) -> None:
    bar.update(
        task,
        description=_stage_line(progress),
        completed=progress.percent,
        batches=progress.batches,
        rate=rate,
    )


def _summary(shown: CampaignView, elapsed: float, handled: int) -> None:
    progress = shown.progress
    rate = f", {handled / elapsed:,.0f} contacts/s" if elapsed > 0 and handled else ""
    out.print(
        f"campaign {shown.id}: {shown.status}, externalId {shown.external_id or '-'} "
        f"({progress.prepared} recipients, {progress.skipped} skipped, "
        f"{progress.batches} batches, {elapsed:.1f}s{rate})",
        markup=False,
        highlight=False,
    )
