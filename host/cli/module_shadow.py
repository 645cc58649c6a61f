"""``crm-host module shadow``: what a module version would do with a tenant's stored webhook
requests, before it is enabled (:mod:`host.marketing.shadow_runs`), against the server's
database. It opens the database read-only (the run writes nothing, so it does not even
migrate it), shows a progress bar on stderr, and prints a table of verdicts with the
differing actions (``-`` only the current version, ``+`` only the shadowed one), or with
``--json`` what ``POST /api/v1/tenants/{t}/modules/{m}/shadow`` answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from host.api.schemas import ShadowRunOut
from host.cli.host_options import DatabaseOption, HomeOption, open_host
from host.cli.output import err, handles_errors, out, print_json, table
from host.errors import InvalidInput
from host.marketing.shadow_runs import (
    DEFAULT_REQUESTS,
    DEFAULT_SECONDS,
    MAX_REQUESTS,
    MAX_SECONDS,
    ShadowReport,
    ShadowResult,
    ShadowWindow,
)
from host.toolkit.recording import Recording


def _usage(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(2)


def _time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time; one without a zone is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _usage(f"{option}: not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _recording(path: Path | None) -> Recording | None:
    if path is None:
        return None
    try:
        return Recording.load(path)
    except InvalidInput as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise _usage(f"--recording: {exc.message}: {problems}") from None


@handles_errors
def module_shadow(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.", show_default=False)],
    module: Annotated[str, typer.Option("--module", help="Module id.", show_default=False)],
    version: Annotated[
        str, typer.Option("--version", help="The stored version to shadow.", show_default=False)
    ],
    since: Annotated[
        str | None, typer.Option(help="Only requests received at or after (ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only requests received before (ISO 8601).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_REQUESTS, help="Run the newest this many requests.")
    ] = DEFAULT_REQUESTS,
    max_seconds: Annotated[
        float,
        typer.Option(min=0.001, max=MAX_SECONDS, help="Start no request after this many seconds."),
    ] = DEFAULT_SECONDS,
    recording: Annotated[
        Path | None,
        typer.Option(
            help="Answer fetches from this recording (`module run --record`); without it "
            "every fetch is refused and listed.",
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Replay the tenant's stored webhook requests against VERSION with no effect (no
    action applied, no receipt, storage a snapshot, no live fetch) and show per request
    what it would do differently from the current version."""
    window = ShadowWindow(_time(since, "--since"), _time(until, "--until"), limit, max_seconds)
    replies = _recording(recording)
    try:
        window.checked()
    except InvalidInput as exc:
        raise _usage("; ".join(str(p) for p in exc.problems)) from None
    with (
        open_host(database_url, home, read_only=True) as host,
        Progress(
            TextColumn("shadow {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task(f"{module}@{version}", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = host.shadow_runs.run(
            tenant, module, version, window, recording=replies, on_progress=on_progress
        )
    if as_json:
        print_json(ShadowRunOut.model_validate(report))
        return
    _show(report)


def _show(report: ShadowReport) -> None:
    table(
        f"Shadow run of {report.module}@{report.version} for {report.tenant} "
        f"(current {report.current_version})",
        ("request", "received", "verdict", "current", "shadow", "-", "+", "ms", "notes"),
        (
            (
                r.request,
                r.received_at.isoformat(timespec="seconds"),
                r.verdict,
                _side(r.current.version, r.current.status, r.current.source),
                r.candidate.status,
                len(r.only_current),
                len(r.only_candidate),
                r.candidate.duration_ms,
                _notes(r),
            )
            for r in report.requests
        ),
    )
    for result in report.requests:
        if result.verdict == "differs":
            _print_diff(result)
    stopped = (
        f"; stopped: time was up after {len(report.requests)}" if report.stopped == "time" else ""
    )
    out.print(
        f"{len(report.requests)} of {report.matched} stored requests: {report.same} same, "
        f"{report.differs} differ, {report.no_baseline} without a current answer "
        f"({report.elapsed_ms / 1000:.1f}s){stopped}",
        markup=False,
        highlight=False,
    )


def _side(version: str | None, status: int | None, source: str) -> str:
    if source == "none":
        return "-"
    rerun = " (rerun)" if source == "rerun" else ""
    return f"{version or '?'} {status}{rerun}"


def _notes(result: ShadowResult) -> str:
    candidate = result.candidate
    notes = []
    if candidate.error:
        notes.append(candidate.error.splitlines()[0][:120])
    if candidate.unmatched_fetches:
        notes.append(f"{len(candidate.unmatched_fetches)} fetch(es) refused")
    if candidate.storage_writes:
        notes.append(f"writes {', '.join(candidate.storage_writes)} (not stored)")
    if result.reordered:
        notes.append("same actions, other order")
    return "; ".join(notes)


def _print_diff(result: ShadowResult) -> None:
    out.print(f"request {result.request}:", markup=False, highlight=False)
    lines: list[tuple[str, Any]] = [("-", a) for a in result.only_current]
    lines += [("+", a) for a in result.only_candidate]
    if result.current.error and result.current.error != result.candidate.error:
        lines.append(("-", {"error": result.current.error}))
    if result.candidate.error and result.current.error != result.candidate.error:
        lines.append(("+", {"error": result.candidate.error}))
    for sign, value in lines:
        out.print(f"  {sign} {json.dumps(value, sort_keys=True)}", markup=False, highlight=False)
    for url in result.candidate.unmatched_fetches:
        out.print(f"  ! fetch refused: {url}", markup=False, highlight=False)
