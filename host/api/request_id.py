"""ASGI middleware giving every HTTP request its request id (:mod:`host.request_ids`) and
echoing it in the ``X-Request-ID`` response header, errors and webhooks included.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it neither buffers
bodies nor runs the app in another task, so the context variable it sets is the one the
routes, the thread pools they hand work to and uvicorn's access log line all see."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from host.request_ids import HEADER, accepted_or_new, request_scope

_HEADER_KEY = HEADER.lower().encode("latin-1")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = [v for k, v in scope["headers"] if k == _HEADER_KEY]
        header = incoming[0].decode("latin-1") if len(incoming) == 1 else None
        request_id = accepted_or_new(header)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with request_scope(request_id):
            await self.app(scope, receive, send_with_id)
