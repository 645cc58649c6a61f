"""Masking of secret settings in every answer of the tenant API (SPEC §4).

Why at the edge and not in each route: what a module returns is stored **as returned**
(a template id the service gave back must be sent back to it unchanged), and it surfaces in
many answers — template names, ids and HTML, campaign external ids and errors, deliveries,
contacts an ``UpdateContact`` action changed, messenger bots, webhook receipts, the outbox,
conflict messages that quote a returned id. Masking each of them in its own route would
miss the next one. So every answer under ``/api/v1/tenants/{tenant}/`` is masked on its way
out with the secret values of every module the tenant has configured, using the one masking
function of the project (:func:`sandbox.invocation.redact_data` / ``redact_text``).

JSON answers are parsed and every string (keys included) is masked, then re-encoded; other
answers are masked as text. The answer of ``PUT``/``GET .../modules/{m}`` already shows
secrets as ``***set***`` (:func:`host.settings_schema.mask_settings`); masking it again
changes nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from host.tenants import TenantService
from sandbox.invocation import redact_data, redact_text

TENANT_PATH = re.compile(r"/api/v1/tenants/(?P<tenant>[^/]+)/")


class TenantAnswerMasking:
    """ASGI middleware: buffers a tenant API answer and masks the tenant's secrets in it."""

    def __init__(self, app: ASGIApp, tenants: TenantService):
        self.app = app
        self.tenants = tenants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = TENANT_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        tenant_id = match["tenant"]
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            secrets = await run_in_threadpool(self.tenants.secret_values_of, tenant_id)
            body = masked_body(b"".join(chunks), secrets)
            headers = [
                (name, str(len(body)).encode() if name.lower() == b"content-length" else value)
                for name, value in start.get("headers", [])
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered)


def masked_body(body: bytes, secrets: tuple[str, ...]) -> bytes:
    """``body`` with every secret masked: as JSON when it is JSON, else as UTF-8 text."""
    if not secrets or not body:
        return body
    try:
        data: Any = json.loads(body)
    except ValueError:
        return redact_text(body.decode("utf-8", "replace"), secrets).encode()
    masked = redact_data(data, secrets)
    if masked == data:
        return body
    return json.dumps(masked, ensure_ascii=False, separators=(",", ":")).encode()
