"""Holding one chosen request at an in-process emulator, so a test can crash the process
that sent it at that exact moment: before the service saw the request, or after the service
acted on it and before its answer left."""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hold:
    """Hold the ``nth`` request matching ``method`` and ``path`` at the emulator: before the
    service sees it (``applied=False``: it never acts on it) or after it acted and before
    its answer leaves (``applied=True``)."""

    method: str
    path: str
    nth: int = 1
    applied: bool = False
    seen: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, scope: dict[str, Any]) -> bool:
        if scope["method"] != self.method or not re.fullmatch(self.path, scope["path"]):
            return False
        self.seen += 1
        return self.seen == self.nth


class Gate:
    """ASGI middleware in front of the emulator that holds one request (see :class:`Hold`)."""

    def __init__(self, app: Any):
        self.app = app
        self.hold: Hold | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        hold = self.hold
        if scope["type"] != "http" or hold is None or not hold.matches(scope):
            await self.app(scope, receive, send)
            return
        if not hold.applied:
            hold.arrived.set()
            await asyncio.to_thread(hold.release.wait)
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        messages: list[dict[str, Any]] = []

        async def keep(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        hold.arrived.set()
        await asyncio.to_thread(hold.release.wait)
        for message in messages:
            await send(message)
