"""``crm-host demo``: emulators + a host on a temporary database, a tenant with the three
example modules, contacts, templates, an email campaign per email service and a Telegram
campaign, the services' webhooks — then a table of what the CRM knows. See host/demo/."""

from __future__ import annotations

import threading
import time
from typing import Annotated

import typer
from rich.table import Table

from host.cli.output import err, fail, out
from host.demo.scenario import DELIVERY_ORDER, CampaignReport, DemoFailure, DemoScenario
from host.demo.servers import DemoServers, demo_servers

STATS_ORDER = (
    "total",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "bounced",
    "unsubscribed",
    "complained",
    "failed",
)


def demo(
    contacts: Annotated[
        int, typer.Option("--contacts", min=1, max=5000, help="How many contacts to import.")
    ] = 50,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the servers running (URLs and token printed) until Ctrl-C."
        ),
    ] = False,
) -> None:
    """Run the whole product locally in under a minute: SendGrid, Unisender and Telegram
    emulators, a host on a temporary database, a tenant with the three example modules,
    contacts, templates, campaigns and the services' webhooks; then print the results."""
    started = time.monotonic()
    step_title = "start the emulators and the host"
    try:
        with demo_servers() as servers:
            line(step_title, servers_summary(servers), time.monotonic() - started)
            scenario = DemoScenario(servers, contacts)
            try:
                for step in scenario.steps():
                    step_title = step.title
                    begun = time.monotonic()
                    summary = step.run()
                    line(step.title, summary, time.monotonic() - begun)
                print_results(list(scenario.campaigns.values()))
                out.print(
                    f"demo finished in {time.monotonic() - started:.1f} s",
                    markup=False,
                    highlight=False,
                )
                if keep:
                    wait_for_ctrl_c(servers, scenario.tenant_key)
            finally:
                scenario.close()
            step_title = "stop the servers"
    except DemoFailure as exc:
        raise fail(f"demo step {step_title!r} failed: {exc}") from None
    except Exception as exc:  # any other failure: one line, never a traceback
        raise fail(f"demo step {step_title!r} failed: {type(exc).__name__}: {exc}") from None


def line(title: str, summary: str, seconds: float) -> None:
    out.print(f"✓ {title:<44} {seconds:5.2f} s  {summary}", markup=False, highlight=False)


def servers_summary(servers: DemoServers) -> str:
    ports = [f"{name} :{server.port}" for name, server in servers.emulators.items()]
    return f"host :{servers.host_server.port}, " + ", ".join(ports)


def print_results(reports: list[CampaignReport]) -> None:
    """One table, a column per campaign (so it fits a narrow terminal): what the CRM knows
    (status, externalId, recipients and their delivery statuses, moved by the services'
    webhooks) and what the services report (GetCampaignStats)."""
    grid = Table(title="Campaigns of tenant acme", title_justify="left")
    grid.add_column("campaign", no_wrap=True)
    for r in reports:
        grid.add_column(r.name, justify="right", overflow="fold")
    grid.add_row("module", *(r.module for r in reports))
    grid.add_row("status", *(r.status for r in reports))
    grid.add_row("externalId", *(r.external_id for r in reports))
    grid.add_row("recipients", *(str(r.recipients) for r in reports), end_section=True)
    seen = {status for r in reports for status, n in r.deliveries.items() if n}
    for status in (s for s in DELIVERY_ORDER if s in seen):
        grid.add_row(f"delivery {status}", *(str(r.deliveries.get(status, 0)) for r in reports))
    grid.add_section()
    for name in STATS_ORDER:
        grid.add_row(f"stats {name}", *(str(r.stats.get(name, 0)) for r in reports))
    out.print()
    out.print(grid)
    for r in reports:
        if r.error:
            out.print(f"{r.name}: {r.error}", markup=False, highlight=False)


def wait_for_ctrl_c(servers: DemoServers, tenant_key: str) -> None:
    out.print()
    out.print("servers kept running (Ctrl-C stops them):", markup=False)
    out.print(f"  host        {servers.url}  (API docs: {servers.url}/docs)", markup=False)
    for name, server in servers.emulators.items():
        out.print(f"  {name:<11} {server.url}", markup=False)
    out.print(f"  admin token {servers.admin_token}", markup=False, highlight=False)
    out.print(f"  tenant acme API key {tenant_key}", markup=False, highlight=False)
    out.print(f"  database    {servers.host.settings.database_url}", markup=False)
    stop = threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        err.print("stopping…", markup=False)
