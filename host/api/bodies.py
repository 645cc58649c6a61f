"""Reading request bodies safely: streamed with a byte cap (a lying or absent
Content-Length cannot make the host buffer more), and JSON parsed so that any malformed or
pathological body — invalid UTF-8, NUL characters, lone surrogates, nesting deeper than
:data:`~sandbox.limits.MAX_NESTING_DEPTH` — is a 422 naming the body or the path inside it,
never a 500 and never stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from host.errors import InvalidInput, PayloadTooLarge, Problem
from host.json_values import InvalidJson, loads_checked, text_problem


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
        return loads_checked(raw, "body")
    except InvalidJson as exc:
        problem = Problem(exc.problem.path, exc.problem.reason)
        raise InvalidInput("request body is invalid; nothing was stored", [problem]) from None


MAX_JSON_BODY_BYTES = 8 * 1024 * 1024
"""Bytes of a JSON body that a route declares as a pydantic model (settings, campaigns,
templates); routes that stream their body (contacts, modules, webhooks) have their own cap."""


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse this body as JSON (absent, ``application/json``, ``+json``)."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media in ("", "application/json") or (
        media.startswith("application/") and media.endswith("+json")
    )


def _parameter_problems(request: Request) -> list[Problem]:
    """NUL or lone surrogates in the path or query: no lookup or storage may see them."""
    problems = []
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            for text in (name, value):
                reason = text_problem(text) if isinstance(text, str) else None
                if reason is not None:
                    problems.append(Problem(f"{where}.{name}", reason))
                    break
    return problems


class CheckedRoute(APIRoute):
    """Every API route: path and query parameters and a declared JSON body are checked
    before FastAPI parses them, so bad text or deep nesting is a 422 naming the field and
    nothing reaches a service (FastAPI's own parser would store ``"\\ud800"`` and only fail
    when the database encodes it, or answer a generic 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        declares_json_body = self.body_field is not None

        async def checked_handler(request: Request) -> Response:
            problems = _parameter_problems(request)
            if problems:
                raise InvalidInput("request is invalid; nothing was stored", problems)
            if declares_json_body and _is_json(request.headers.get("content-type")):
                raw = await capped_body(request, MAX_JSON_BODY_BYTES, "request body")
                # FastAPI reads the body through these caches (the stream is consumed now)
                request._body = raw
                if raw:
                    request._json = parse_json(raw)
            return await handler(request)

        return checked_handler


def checked_router(**options: Any) -> APIRouter:
    """An ``APIRouter`` whose routes are :class:`CheckedRoute`: what every router uses."""
    return APIRouter(route_class=CheckedRoute, **options)
