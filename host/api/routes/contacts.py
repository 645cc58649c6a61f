"""Tenant routes for contacts: bulk upsert (JSON or CSV, streamed) and one contact."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from host.api.deps import HostDep, TenantDep
from host.errors import InvalidInput, PayloadTooLarge, Problem
from host.marketing.contact_rows import (
    MAX_BODY_BYTES,
    MAX_ROWS,
    CsvContactReader,
    rows_from_json,
)

router = APIRouter(prefix="/api/v1/tenants/{tenant_id}/contacts", tags=["contacts"])

UPSERT_DOC = f"""Create or update contacts, all or nothing.

Body: a JSON array `[{{"id"?, "name", "email"?, "phone"?}}]`, or `text/csv` with a header
row naming the columns `id,name,email,phone` (any order; `name` required). A row with an id
updates that contact (or creates it under that id); a row without one updates the contact
with the same email (case-insensitive) or creates one with a generated id.

Answers `{{"ids": [...], "created": n, "updated": n}}` with one id per row, in input order.
422 lists every bad row (`rows[17].email`, `line 18: email`) and stores nothing; 413 when
the body exceeds {MAX_BODY_BYTES} bytes or {MAX_ROWS} rows."""

CSV_TYPES = ("text/csv", "application/csv", "text/plain")


def _too_large(detail: str) -> PayloadTooLarge:
    return PayloadTooLarge("contacts request is too large", [Problem("body", detail)])


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
    await run_in_threadpool(host.tenants.get, tenant_id)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(f"more than {MAX_BODY_BYTES} bytes")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in CSV_TYPES:
        reader = CsvContactReader()
        async for chunk in _capped(request):
            reader.feed(chunk)
        rows = reader.close()
    elif media in ("application/json", ""):
        raw = b"".join([chunk async for chunk in _capped(request)])
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidInput("request body is not JSON", [Problem("body", str(exc))]) from None
        rows = rows_from_json(body)
    else:
        raise InvalidInput(
            "unsupported content type",
            [Problem("content-type", "send application/json or text/csv")],
        )
    result = await run_in_threadpool(host.contacts.upsert, tenant_id, rows)
    return result.as_dict()


async def _capped(request: Request) -> Any:
    """The body as it streams in, stopped as soon as it passes the byte cap (a lying or
    absent Content-Length cannot make the host buffer more)."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > MAX_BODY_BYTES:
            raise _too_large(f"more than {MAX_BODY_BYTES} bytes")
        yield chunk


@router.get("/{contact_id}")
def show_contact(tenant_id: TenantDep, contact_id: str, host: HostDep) -> dict[str, Any]:
    """A contact with its subscriber status and the categories it unsubscribed from."""
    return host.contacts.get(tenant_id, contact_id).as_dict()
