"""Recording every change made through the API or the console in the audit log.

A pure ASGI middleware: after a state-changing request (POST, PUT, PATCH, DELETE) under
``/api/`` or ``/console`` has been answered with a success (< 400), one entry is written
naming who made it — ``request.state.audit_actor``, set by whatever authenticated the
request (``host.api.deps.get_caller`` for bearer credentials, the console's session guard
for people) — and what: ``request.state.audit_action`` when the route described it, else
the method and path. Webhooks are the services' calls, not people's changes: not recorded.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from host.audit import AuditLog
from host.client_address import ClientAddresses

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED_PREFIXES = ("/api/", "/console")


class AuditTrail:
    def __init__(self, app: ASGIApp, *, audit: AuditLog, addresses: ClientAddresses):
        self.app = app
        self.audit = audit
        self.addresses = addresses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in CHANGES
            or not scope["path"].startswith(AUDITED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        status = 0
        scope.setdefault("state", {})  # shared with request.state of every layer below

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        state: dict[str, Any] = scope.get("state", {})
        actor = state.get("audit_actor")
        if actor is None or not 0 < status < 400:
            return
        await run_in_threadpool(
            self.audit.record,
            actor=str(actor),
            action=str(state.get("audit_action") or f"{scope['method']} {scope['path']}"),
            method=scope["method"],
            path=scope["path"],
            status=status,
            client=self.client(scope),
        )

    def client(self, scope: Scope) -> str:
        peer = scope.get("client")
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name == b"x-forwarded-for"
        ]
        return self.addresses.client_of(peer[0] if peer else None, forwarded)
