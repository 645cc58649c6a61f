"""The public webhook endpoint: ``ANY /hooks/{tenant}/{module}/{token}``, no bearer token.

The URL's token is the credential. The body is read with a cap (413 above
``CRM_HOST_WEBHOOK_MAX_BODY_BYTES``, checked on Content-Length first and again while
streaming, so a lying or chunked sender cannot make the host buffer more). The blocking
work (database, sandbox) runs in the webhook thread pool (:mod:`host.api.executors`), apart
from the admin API; the URL's in-flight and rate limits (:mod:`host.api.webhook_gate`) are
checked first, and a module whose tenant's sandbox share stays full past the deadline
answers 503 with ``Retry-After`` (:mod:`host.module_shares`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Literal

from fastapi import Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from host.api.bodies import capped_body, checked_router
from host.api.deps import HostDep, TenantDep
from host.api.errors import WEBHOOK_PATH_PREFIX
from host.api.executors import executors_of, run_in, tenant_work
from host.api.paging import paged_by
from host.api.schemas import (
    OutboxMessageOut,
    StoredRequestOut,
    WebhookReceiptOut,
    WebhookReplayOut,
)
from host.api.webhook_gate import WebhookGate
from host.errors import PayloadTooLarge
from host.marketing.outbox import list_messages
from host.marketing.webhooks import IncomingRequest, WebhookReceiver, WebhookReply
from host.tenants import RuntimeEnablement

router = checked_router(tags=["webhooks"])

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": 'The module\'s response (default `{"ok": true}`).'},
    404: {"description": "No such webhook (any part of the URL wrong, or disabled)."},
    413: {"description": "Body over the configured cap; the module was not called."},
    429: {"description": "Over the URL's configured rate (`Retry-After` says when to retry)."},
    500: {"description": "The module failed; nothing was applied."},
    503: {
        "description": "Busy: too many requests in progress on this URL, or no sandbox slot "
        "of the tenant's share free in time; the module was not called (`Retry-After`)."
    },
}


async def receive_webhook(
    tenant_id: str, module_id: str, token: str, request: Request, host: HostDep
) -> Response:
    """Hand the request to the module's ParseWebhookRequest, apply its actions in one
    transaction and answer with the module's response."""
    receiver = host.webhooks
    gate: WebhookGate = request.app.state.webhook_gate
    pool = executors_of(request).webhooks
    url = (tenant_id, module_id, token)
    with gate.inflight(url):
        target = await run_in(pool, receiver.target, tenant_id, module_id, token)
        gate.take_token(url)
        reply = await _receive(request, receiver, target, pool)
    return Response(
        reply.body, status_code=reply.status, headers=reply.headers, media_type=reply.media_type
    )


async def _receive(
    request: Request, receiver: WebhookReceiver, target: RuntimeEnablement, pool: ThreadPoolExecutor
) -> WebhookReply:
    try:
        body = await capped_body(request, receiver.max_body_bytes, "webhook")
    except PayloadTooLarge:
        return await run_in(pool, receiver.refuse_oversized, target)
    incoming = IncomingRequest(
        method=request.method,
        url=str(request.url),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
        query_string=request.scope.get("query_string", b"").decode("latin-1"),
        body=body,
    )
    return await run_in(pool, receiver.handle, target, incoming)


for _method in METHODS:
    # One route per method: one OpenAPI operation each, with its own operation id.
    router.add_api_route(
        WEBHOOK_PATH_PREFIX + "{tenant_id}/{module_id}/{token}",
        receive_webhook,
        methods=[_method],
        operation_id=f"receive_webhook_{_method.lower()}",
        response_class=Response,
        responses=RESPONSES,
    )


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get(
    "/api/v1/tenants/{tenant_id}/webhooks/receipts",
    tags=["webhooks"],
    dependencies=[paged_by("limit")],
)
@tenant_work
def webhook_receipts(
    tenant_id: TenantDep, host: HostDep, limit: Limit = 100
) -> list[WebhookReceiptOut]:
    """The latest requests on the tenant's webhook URLs, newest first: the status answered,
    how many actions were applied, the skipped ones with their reasons, or the error."""
    host.tenants.get(tenant_id)
    return [
        WebhookReceiptOut.model_validate(r) for r in host.webhooks.receipts(tenant_id, limit=limit)
    ]


@router.get(
    "/api/v1/tenants/{tenant_id}/outbox", tags=["webhooks"], dependencies=[paged_by("limit")]
)
@tenant_work
def outbox(
    tenant_id: TenantDep,
    host: HostDep,
    status: Literal["queued", "sent", "failed"] | None = None,
    limit: Limit = 100,
) -> list[OutboxMessageOut]:
    """Mail the tenant's modules asked the host to send (SendEmail), newest first. Without
    an SMTP relay configured, messages stay ``queued`` here."""
    host.tenants.get(tenant_id)
    messages = list_messages(host.db, tenant_id, status=status, limit=limit)
    return [OutboxMessageOut.model_validate(m) for m in messages]


@router.get(
    "/api/v1/tenants/{tenant_id}/webhooks/requests",
    tags=["webhooks"],
    dependencies=[paged_by("limit")],
)
@tenant_work
def webhook_requests(
    tenant_id: TenantDep,
    host: HostDep,
    module: Annotated[str | None, Query(max_length=64, description="Only this module's")] = None,
    limit: Limit = 100,
) -> list[StoredRequestOut]:
    """The stored webhook requests (kept for replay), newest first, masked: the URL's token,
    credential and signature headers and every secret setting are `***`; the body is a
    preview of its first 2000 characters."""
    stored = host.webhooks.stored_requests(tenant_id, module_id=module, limit=limit)
    return [StoredRequestOut.model_validate(r) for r in stored]


class ReplayRequest(BaseModel):
    """What to replay the stored request against."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        None, min_length=1, max_length=64, description="A stored version; default the pinned one"
    )
    dryRun: bool = Field(
        False, description="Report the actions that would be applied; keep nothing"
    )


@router.post("/api/v1/tenants/{tenant_id}/webhooks/receipts/{receipt_id}/replay", tags=["webhooks"])
@tenant_work
def replay_webhook(
    tenant_id: TenantDep,
    host: HostDep,
    receipt_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: ReplayRequest | None = None,
) -> WebhookReplayOut:
    """Run the stored request of a receipt again, on the pinned or the given version: for
    real like a live request (actions applied, repeated event ids skipped, a new receipt
    with `replayOf`), or with `dryRun` reporting `applied`/`skipped` without keeping
    anything. 404 when the request is no longer stored, 409 when the module is disabled."""
    options = body or ReplayRequest()
    report = host.webhook_replay.replay(
        tenant_id, receipt_id, version=options.version, dry_run=options.dryRun
    )
    return WebhookReplayOut.model_validate(report)
