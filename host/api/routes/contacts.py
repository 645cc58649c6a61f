"""Tenant routes for contacts: bulk upsert (JSON or CSV, streamed) and one contact."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from host.api.bodies import capped_body, capped_stream, checked_router, parse_json
from host.api.deps import HostDep, TenantDep
from host.api.executors import executors_of, run_in, tenant_work
from host.errors import InvalidInput, Problem
from host.marketing.contact_rows import (
    MAX_BODY_BYTES,
    MAX_ROWS,
    CsvContactReader,
    rows_from_json,
)

router = checked_router(prefix="/api/v1/tenants/{tenant_id}/contacts", tags=["contacts"])

UPSERT_DOC = f"""Create or update contacts, all or nothing.

Body: a JSON array `[{{"id"?, "name", "email"?, "phone"?}}]`, or `text/csv` with a header
row naming the columns `id,name,email,phone` (any order; `name` required). A row with an id
updates that contact (or creates it under that id); a row without one updates the contact
with the same email (case-insensitive) or creates one with a generated id.

Answers `{{"ids": [...], "created": n, "updated": n}}` with one id per row, in input order.
422 lists every bad row (`rows[17].email`, `line 18: email`) and stores nothing; 413 when
the body exceeds {MAX_BODY_BYTES} bytes or {MAX_ROWS} rows."""

CSV_TYPES = ("text/csv", "application/csv", "text/plain")


WHAT = "contacts request"


OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "id": {"type": "string", "maxLength": 64},
                            "name": {"type": "string", "maxLength": 300},
                            "email": {"type": "string", "format": "email", "maxLength": 320},
                            "phone": {"type": "string", "maxLength": 40},
                        },
                    },
                }
            },
            "text/csv": {"schema": {"type": "string", "example": "id,name,email,phone\n"}},
        },
    }
}
"""The body is read as a stream (not declared as a parameter), so it is described here."""


@router.post("", description=UPSERT_DOC, openapi_extra=OPENAPI_BODY)
async def upsert_contacts(request: Request, tenant_id: TenantDep, host: HostDep) -> Any:
    pool = executors_of(request).tenant_api
    await run_in(pool, host.tenants.get, tenant_id)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in CSV_TYPES:
        reader = CsvContactReader()
        async for chunk in capped_stream(request, MAX_BODY_BYTES, WHAT):
            reader.feed(chunk)
        rows = reader.close()
    elif media in ("application/json", ""):
        rows = rows_from_json(parse_json(await capped_body(request, MAX_BODY_BYTES, WHAT)))
    else:
        raise InvalidInput(
            "unsupported content type",
            [Problem("content-type", "send application/json or text/csv")],
        )
    result = await run_in(pool, host.contacts.upsert, tenant_id, rows)
    return result.as_dict()


@router.get("/{contact_id}")
@tenant_work
def show_contact(tenant_id: TenantDep, contact_id: str, host: HostDep) -> dict[str, Any]:
    """A contact with its subscriber status and the categories it unsubscribed from."""
    return host.contacts.get(tenant_id, contact_id).as_dict()
