"""Tenant routes for contacts: bulk upsert (JSON or CSV, streamed; idempotent with a key),
list and search, one contact, and its export and erasure (GDPR)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Query, Request, Response

from host.api.bodies import capped_body, capped_stream, checked_router, parse_json
from host.api.deps import HostDep, TenantDep
from host.api.executors import executors_of, run_in, tenant_work
from host.api.idempotent import IdempotencyKeyHeader, answered
from host.api.paging import paged_by
from host.api.schemas import (
    ContactDetail,
    ContactErased,
    ContactExport,
    ContactPage,
    ContactsUpserted,
)
from host.contract.enums import SubscriberStatus
from host.errors import InvalidInput, Problem
from host.idempotency import IdempotentRequest, fingerprint
from host.marketing.contact_rows import (
    MAX_BODY_BYTES,
    MAX_ROWS,
    CsvContactReader,
    rows_from_json,
)
from host.marketing.contact_search import ContactFilter

router = checked_router(prefix="/api/v1/tenants/{tenant_id}/contacts", tags=["contacts"])

UPSERT_DOC = f"""Create or update contacts, all or nothing.

Body: a JSON array `[{{"id"?, "name", "email"?, "phone"?}}]`, or `text/csv` with a header
row naming the columns `id,name,email,phone` (any order; `name` required). A row with an id
updates that contact (or creates it under that id); a row without one updates the contact
with the same email (case-insensitive) or creates one with a generated id.

Answers `{{"ids": [...], "created": n, "updated": n}}` with one id per row, in input order.
422 lists every bad row (`rows[17].email`, `line 18: email`) and stores nothing; 413 when
the body exceeds {MAX_BODY_BYTES} bytes or {MAX_ROWS} rows. With an `Idempotency-Key`
header a retry gets the first answer instead of importing again."""

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
async def upsert_contacts(
    request: Request,
    response: Response,
    tenant_id: TenantDep,
    host: HostDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ContactsUpserted:
    pool = executors_of(request).tenant_api
    await run_in(pool, host.tenants.get, tenant_id)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in CSV_TYPES:
        reader = CsvContactReader()
        digest = hashlib.sha256()
        async for chunk in capped_stream(request, MAX_BODY_BYTES, WHAT):
            reader.feed(chunk)
            digest.update(chunk)
        rows = reader.close()
        request_hash = fingerprint("csv", digest.hexdigest())
    elif media in ("application/json", ""):
        raw = await capped_body(request, MAX_BODY_BYTES, WHAT)
        rows = rows_from_json(parse_json(raw))
        request_hash = fingerprint("json", raw)
    else:
        raise InvalidInput(
            "unsupported content type",
            [Problem("content-type", "send application/json or text/csv")],
        )
    claim = host.idempotency.request(tenant_id, "contacts.import", idempotency_key, request_hash)

    def upsert(claim: IdempotentRequest | None) -> tuple[int, Any]:
        return 200, host.contacts.upsert(tenant_id, rows, idempotency=claim).as_dict()

    answer = await run_in(pool, host.idempotency.run, claim, upsert)
    return ContactsUpserted.model_validate(answered(response, answer))


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("", dependencies=[paged_by("after", "limit")])
@tenant_work
def list_contacts(
    tenant_id: TenantDep,
    host: HostDep,
    status: Annotated[SubscriberStatus | None, Query(description="Only this status")] = None,
    category: Annotated[
        str | None,
        Query(max_length=255, description="Only contacts unsubscribed from this category"),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=320,
            description="Only contacts whose name, email or phone contains this text "
            "(case-insensitive)",
        ),
    ] = None,
    after: Annotated[
        str | None, Query(max_length=64, description="`next` of the previous page")
    ] = None,
    limit: Limit = 100,
) -> ContactPage:
    """Contacts in id order, filtered: `{items, next}`; pass `next` as `after` for the
    following page."""
    where = ContactFilter(status=status.value if status else None, category=category, text=q)
    page = host.contact_search.page(tenant_id, where, after=after, limit=limit)
    return ContactPage.model_validate(page)


@router.get("/{contact_id}")
@tenant_work
def show_contact(tenant_id: TenantDep, contact_id: str, host: HostDep) -> ContactDetail:
    """A contact with its subscriber status and the categories it unsubscribed from."""
    return ContactDetail.model_validate(host.contacts.get(tenant_id, contact_id))


@router.get("/{contact_id}/export")
@tenant_work
def export_contact(tenant_id: TenantDep, contact_id: str, host: HostDep) -> ContactExport:
    """Everything stored about the contact (GDPR access): the contact, its unsubscriptions,
    its deliveries, and the webhook receipts, outbox mail and invocation logs that mention
    it."""
    return ContactExport.model_validate(host.contact_erasure.export(tenant_id, contact_id))


@router.delete("/{contact_id}")
@tenant_work
def erase_contact(tenant_id: TenantDep, contact_id: str, host: HostDep) -> ContactErased:
    """Erase the contact (GDPR erasure), in one transaction: the contact is deleted, its
    deliveries anonymised, its email and phone removed from webhook receipts and invocation
    logs, mail to it deleted from the outbox. If it had unsubscribed, a hash of its addresses
    is kept so it stays unsubscribed when imported again."""
    return ContactErased.model_validate(host.contact_erasure.erase(tenant_id, contact_id))
