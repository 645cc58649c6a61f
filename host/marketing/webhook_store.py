"""Stored webhook requests: each request exactly as received, sealed at rest, for replay.

The method, URL, headers and raw body are sealed with the host's secret key
(:class:`host.secrets.SecretBox`, the key of the settings secrets), because a webhook
request carries what the service sent — addresses, signatures, sometimes credentials. Kept
exact (the body as bytes), a replay gives the module the same FetchRequest, so a signature
over the raw body still verifies. Shown to an admin only masked (:func:`masked_view`):
the URL's token, credential-like headers and every secret setting of the tenant are
``***``, and the body is cut to a preview.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from host.calls import mask_secrets
from host.db.engine import Database
from host.db.models import WebhookRequest
from host.secrets import SecretBox

MASK = "***"
PREVIEW_CHARS = 2000
CREDENTIAL_HEADER = re.compile(r"authorization|cookie|signature|token|secret|api[-_]?key", re.I)
"""Header names whose values are credentials or signatures: never displayed."""
HOOK_TOKEN = re.compile(r"(/hooks/[^/?#]+/[^/?#]+/)[^/?#]+")
REQUEST_INSERT = insert(WebhookRequest.__table__)  # type: ignore[arg-type]


def seal_request(
    box: SecretBox,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    query_string: str,
    body: bytes,
) -> str:
    """The request sealed; the body travels as base64 so every byte comes back."""
    sealed = box.seal(
        {
            "method": method,
            "url": url,
            "headers": [list(pair) for pair in headers],
            "query": query_string,
            "body": base64.b64encode(body).decode("ascii"),
        }
    )
    assert sealed is not None  # a request is never empty
    return sealed


def open_request(box: SecretBox, sealed: str) -> dict[str, Any]:
    """What :func:`seal_request` was given, the body as bytes again."""
    opened = box.open(sealed)
    return {
        "method": opened["method"],
        "url": opened["url"],
        "headers": [(str(k), str(v)) for k, v in opened["headers"]],
        "query": opened["query"],
        "body": base64.b64decode(opened["body"]),
    }


def store_request(
    session: Session,
    tenant_id: str,
    module_id: str,
    sealed: str,
    size: int,
    *,
    pending: bool = False,
) -> int:
    """Add the sealed request in the caller's transaction; its id. A Core INSERT: a live
    webhook stores its request inside its write transaction."""
    inserted = session.connection().execute(
        REQUEST_INSERT,
        {
            "tenant_id": tenant_id,
            "module_id": module_id,
            "size_bytes": size,
            "sealed": sealed,
            "pending": pending,
        },
    )
    key = inserted.inserted_primary_key
    assert key is not None  # an INSERT of one row with an autoincrement id
    return int(key[0])


def masked_view(
    row: WebhookRequest, opened: dict[str, Any], secrets: tuple[str, ...]
) -> dict[str, Any]:
    """A stored request as an admin may see it (see the module docstring)."""

    def masked(text: str) -> str:
        return mask_secrets(text, secrets) or text

    body = opened["body"].decode("utf-8", errors="replace")
    return {
        "id": row.id,
        "module": row.module_id,
        "receivedAt": row.received_at.isoformat(),
        "sizeBytes": row.size_bytes,
        "method": opened["method"],
        "url": masked(HOOK_TOKEN.sub(rf"\g<1>{MASK}", opened["url"])),
        "headers": [
            [name, MASK if CREDENTIAL_HEADER.search(name) else masked(value)]
            for name, value in opened["headers"]
        ],
        "body": masked(body[:PREVIEW_CHARS]),
        "bodyTruncated": len(body) > PREVIEW_CHARS,
    }


def list_requests(
    db: Database,
    box: SecretBox,
    tenant_id: str,
    secrets: tuple[str, ...],
    *,
    module_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The tenant's stored requests, newest first, masked."""
    with db.transaction() as session:
        query = select(WebhookRequest).where(WebhookRequest.tenant_id == tenant_id)
        if module_id is not None:
            query = query.where(WebhookRequest.module_id == module_id)
        rows = session.scalars(query.order_by(WebhookRequest.id.desc()).limit(limit)).all()
        return [masked_view(row, open_request(box, row.sealed), secrets) for row in rows]
