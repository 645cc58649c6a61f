"""``crm-host templates``: import a module's templates for a tenant (with a progress display
per page) and list what is stored."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from host.cli.host_options import DatabaseOption, HomeOption, open_host
from host.cli.output import err, fail, handles_errors, out, table
from host.errors import ModuleCallFailed
from host.marketing.templates import DEFAULT_MAX_PAGES, DEFAULT_PAGE_SIZE

app = typer.Typer(help="Email templates of a tenant's modules.", no_args_is_help=True)


@app.command("import")
@handles_errors
def templates_import(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.")],
    module_id: Annotated[str, typer.Argument(help="Module enabled for the tenant.")],
    page_size: Annotated[int, typer.Option(min=1, max=500, help="Templates per page.")] = (
        DEFAULT_PAGE_SIZE
    ),
    max_pages: Annotated[
        int, typer.Option(min=1, max=1000, help="Stop after this many pages.")
    ] = DEFAULT_MAX_PAGES,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Page through the module's CRM_Marketing_ImportTemplates and upsert the templates.
    All or nothing: a failing page stores nothing."""
    with open_host(database_url, home) as host:
        try:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=False,
            ) as progress:
                task = progress.add_task(f"importing from {module_id}", total=max_pages)

                def on_page(page: int, items: int, so_far: int) -> None:
                    progress.update(
                        task,
                        completed=page,
                        description=f"page {page}: {items} templates ({so_far} so far)",
                    )

                report = host.templates.import_templates(
                    tenant_id, module_id, page_size=page_size, max_pages=max_pages, on_page=on_page
                )
                progress.update(task, total=report.pages, completed=report.pages)
        except ModuleCallFailed as exc:
            raise fail(str(exc)) from None  # "KIND: message (line N)", as ``module run`` prints
        out.print(
            f"imported {report.imported} templates from {report.pages} pages "
            f"({report.created} new, {report.updated} updated)",
            markup=False,
            highlight=False,
        )
        if report.truncated:
            err.print(
                f"warning: stopped after {report.pages} pages (--max-pages); the module kept "
                "returning full pages, so there may be more templates",
                markup=False,
                highlight=False,
            )


@app.command("list")
@handles_errors
def templates_list(
    tenant_id: str,
    module: Annotated[str | None, typer.Option(help="Only this module's templates.")] = None,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """The tenant's templates."""
    with open_host(database_url, home, read_only=True) as host:
        rows = host.templates.of_tenant(tenant_id, module)
        table(
            f"Templates of {tenant_id}",
            ("id", "module", "external id", "name", "html", "published"),
            (
                (t.id, t.module, t.external_id, t.name, "yes" if t.has_html else "", t.published_at)
                for t in rows
            ),
        )
