"""``crm-host contact …``: list and search a tenant's contacts, export one, erase one (GDPR),
against the server's database."""

from __future__ import annotations

from typing import Annotated

import typer

from host.api.schemas import ContactExport
from host.cli.host_options import DatabaseOption, HomeOption, open_host
from host.cli.output import handles_errors, out, print_json, table
from host.contract.enums import SubscriberStatus
from host.marketing.contact_search import ContactFilter

app = typer.Typer(help="A tenant's contacts: list, export, erase.", no_args_is_help=True)


@app.command("list")
@handles_errors
def contact_list(
    tenant_id: str,
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only contacts with this status.")
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="Only contacts unsubscribed from this category.")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="Only contacts whose name, email or phone contains this.")
    ] = None,
    after: Annotated[str | None, typer.Option(help="Start after this contact id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Contacts to show.")] = 100,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Contacts in id order; prints the id to pass as --after for the next page."""
    with open_host(database_url, home, read_only=True) as host:
        host.tenants.get(tenant_id)
        where = ContactFilter(
            status=status.value if status else None, category=category, text=search
        )
        page = host.contact_search.page(tenant_id, where, after=after, limit=limit)
        table(
            f"Contacts of {tenant_id}",
            ("id", "name", "email", "phone", "status", "unsubscribed from"),
            (
                (c.id, c.name, c.email, c.phone, c.status, ", ".join(c.unsubscribed_categories))
                for c in page.items
            ),
        )
        if page.next:
            out.print(f"next page: --after {page.next}", markup=False, highlight=False)


@app.command("export")
@handles_errors
def contact_export(
    tenant_id: str, contact_id: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Everything stored about a contact, as JSON on stdout."""
    with open_host(database_url, home, read_only=True) as host:
        host.tenants.get(tenant_id)
        dossier = host.contact_erasure.export(tenant_id, contact_id)
        print_json(ContactExport.model_validate(dossier))


@app.command("erase")
@handles_errors
def contact_erase(
    tenant_id: str,
    contact_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Erase a contact and its personal data (an unsubscribed address stays unsubscribed)."""
    with open_host(database_url, home) as host:
        host.tenants.get(tenant_id)
        if not yes:
            typer.confirm(f"Erase contact {contact_id} of tenant {tenant_id}?", abort=True)
        report = host.contact_erasure.erase(tenant_id, contact_id)
        out.print(
            f"contact {contact_id} erased: {report.deliveries} deliveries anonymised, "
            f"{report.webhook_receipts} webhook receipts and {report.invocations} invocation logs "
            f"redacted, {report.outbox} outbox messages deleted, {report.suppressions} "
            "suppression hashes kept",
            markup=False,
            highlight=False,
        )
