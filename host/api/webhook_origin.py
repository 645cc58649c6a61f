"""Keeps webhooks and the rest of the HTTP surface on their own origins.

With ``CRM_HOST_WEBHOOK_BASE_URL`` set, a request whose ``Host`` names the webhook base
reaches only ``/hooks/...`` (and ``/healthz``, for load-balancer probes); the API, ``/docs``,
``/openapi.json``, the console and anything added later answer 404 there. Every other host
reaches everything except ``/hooks/...``. Deny by default: a new route is never served on the
webhook origin by accident. See :mod:`host.origins` for how hosts are matched.

A pure ASGI middleware rather than a per-route dependency, so it also covers the routes
FastAPI adds itself (``/docs``) and does not buffer streamed bodies.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from host.origins import Authority

WEBHOOK_PREFIX = "/hooks/"
SHARED_PATHS = frozenset({"/healthz"})
NOT_FOUND_BODY = json.dumps(
    {"error": "not_found", "message": "not found on this host", "problems": []}
).encode()


class WebhookOriginGate:
    """Answers 404 for a path that does not belong to the origin it was requested on."""

    def __init__(self, app: ASGIApp, webhook_origin: Authority):
        self.app = app
        self.webhook_origin = webhook_origin

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path in SHARED_PATHS:
            return True
        host_header = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), None
        )
        on_webhook_origin = self.webhook_origin.matches(host_header)
        return path.startswith(WEBHOOK_PREFIX) == on_webhook_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(NOT_FOUND_BODY)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": NOT_FOUND_BODY})
