"""A tenant's contacts (its marketers and admins): import a CSV or JSON file (the API's
parsers and upsert, all rows or none, every bad row listed), the list with search and
filters, and one contact with its deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.csrf import check_token, read_form
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import TenantViewer
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.contract.enums import SubscriberStatus
from host.errors import InvalidInput, Problem
from host.json_values import InvalidJson, loads_checked
from host.marketing.contact_rows import (
    MAX_BODY_BYTES,
    ContactRow,
    CsvContactReader,
    rows_from_json,
)
from host.marketing.contact_search import ContactFilter
from host.platform import Host

router = checked_router(prefix="/console/tenants/{tenant_id}/contacts", include_in_schema=False)

PAGE = 50
STATUS_VALUES = [s.value for s in SubscriberStatus]
STATUSES = [("", "Any status")] + [(s, s) for s in STATUS_VALUES]


def _rows(upload: UploadFile, data: bytes) -> list[ContactRow]:
    """The file's rows, by its name or type: ``.csv`` / ``text/csv`` or JSON."""
    name = (upload.filename or "").lower()
    if name.endswith(".csv") or (upload.content_type or "").startswith("text/csv"):
        reader = CsvContactReader()
        reader.feed(data)
        return reader.close()
    try:
        body = loads_checked(data, root="file")
    except InvalidJson as exc:
        raise InvalidInput(
            "the file is not CSV or valid JSON", [Problem("file", str(exc))]
        ) from None
    return rows_from_json(body)


def _page(
    request: Request, viewer: SignedIn, tenant_id: str, *, q: str = "", status: str = "",
    category: str = "", after: str | None = None, errors: FormErrors | None = None,
    code: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    where = ContactFilter(status=status or None, category=category or None, text=q or None)
    page = host.contact_search.page(tenant_id, where, after=after, limit=PAGE)
    return render(
        request,
        "contacts.html",
        {
            "tenant": tenant,
            "page": page,
            "q": q,
            "status": status,
            "category": category,
            "statuses": STATUSES,
            "errors": errors or FormErrors(),
            "max_bytes": MAX_BODY_BYTES,
        },
        viewer=viewer,
        status_code=code,
    )


@router.get("")
def contacts(
    request: Request,
    tenant_id: str,
    viewer: TenantViewer,
    q: Annotated[str, Query(max_length=320)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    category: Annotated[str, Query(max_length=255)] = "",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    if status and status not in STATUS_VALUES:
        raise InvalidInput(
            "unknown status", [Problem("status", "one of " + ", ".join(STATUS_VALUES))]
        )
    return _page(
        request, viewer, tenant_id, q=q.strip(), status=status,
        category=category.strip(), after=after,
    )  # fmt: skip


@router.post("/import")
async def import_contacts(request: Request, tenant_id: str, viewer: TenantViewer) -> Response:
    host: Host = request.app.state.host
    host.tenants.get(tenant_id)
    form = await read_form(request, max_bytes=MAX_BODY_BYTES + 64 * 1024)
    check_token(viewer, form)
    upload = form.get("file")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInput("choose a file to import", [Problem("file", "a CSV or JSON file")])
        rows = _rows(upload, await upload.read(MAX_BODY_BYTES + 1))
        result = await run_in_threadpool(host.contacts.upsert, tenant_id, rows)
    except InvalidInput as exc:
        errors = FormErrors.of(exc, ["file"])
        return _page(request, viewer, tenant_id, errors=errors, code=422)
    request.state.audit_action = (
        f"imported contacts of {tenant_id}: {result.created} created, {result.updated} updated"
    )
    flash(request, viewer, f"Imported: {result.created} created, {result.updated} updated.")
    return redirect(f"/console/tenants/{tenant_id}/contacts")


@router.get("/{contact_id}")
def contact(request: Request, tenant_id: str, contact_id: str, viewer: TenantViewer) -> Response:
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    dossier = host.contact_erasure.export(tenant_id, contact_id)
    return render(request, "contact.html", {"tenant": tenant, "dossier": dossier}, viewer=viewer)
