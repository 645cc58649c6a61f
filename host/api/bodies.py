"""Reading request bodies safely: streamed with a byte cap (a lying or absent
Content-Length cannot make the host buffer more), and JSON parsed so that any malformed or
pathological body — deeply nested arrays included — is a 4xx naming the body, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from host.errors import InvalidInput, PayloadTooLarge, Problem


async def capped_stream(request: Request, limit: int, what: str) -> AsyncIterator[bytes]:
    """The body as it streams in, stopped as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(what, limit)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(what, limit)
        yield chunk


async def capped_body(request: Request, limit: int, what: str) -> bytes:
    return b"".join([chunk async for chunk in capped_stream(request, limit, what)])


def too_large(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} is too large", [Problem("body", f"more than {limit} bytes")])


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidInput("request body is not JSON", [Problem("body", detail)]) from None
