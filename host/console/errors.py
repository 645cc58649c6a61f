"""Errors on console pages are pages: the same domain errors the API answers as JSON
(``host/api/errors.py`` keeps the status codes) are rendered in the layout here, and a
signed-out visit is a redirect to the sign-in page. Paths outside ``/console`` keep the
API's JSON answers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from host.api.errors import error_headers, status_for
from host.console.guard import SignInRequired, signed_in
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.errors import HostError, InvalidInput, NotFound, Problem

CONSOLE_PREFIX = "/console"


def is_console(request: Request) -> bool:
    path = request.url.path
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def _viewer(request: Request) -> SignedIn | None:
    try:
        return signed_in(request)
    except SignInRequired:
        return None


def error_page(request: Request, error: HostError) -> Response:
    status = status_for(error, request.url.path)
    response = render(
        request,
        "error.html",
        {"status": status, "error": error},
        viewer=_viewer(request),
        status_code=status,
        flash="",
    )
    for name, value in (error_headers(error) or {}).items():
        if name != "WWW-Authenticate":
            response.headers[name] = value
    return response


async def _answer(handler: Callable[..., Any], request: Request, exc: Exception) -> Response:
    """Call an exception handler, sync or async, as Starlette would."""
    answer = handler(request, exc)
    if inspect.isawaitable(answer):
        answer = await answer
    assert isinstance(answer, Response)
    return answer


def install_console_errors(app: FastAPI) -> None:
    """Wrap the API's handlers: console paths get pages, every other path what it got."""
    api_host_error = app.exception_handlers[HostError]
    api_invalid = app.exception_handlers[RequestValidationError]
    starlette_http = app.exception_handlers.get(HTTPException)

    async def host_error(request: Request, exc: Exception) -> Response:
        if is_console(request) and isinstance(exc, HostError):
            return error_page(request, exc)
        return await _answer(api_host_error, request, exc)

    async def invalid(request: Request, exc: Exception) -> Response:
        if is_console(request) and isinstance(exc, RequestValidationError):
            problems = [
                Problem(".".join(str(p) for p in item["loc"]), item["msg"]) for item in exc.errors()
            ]
            return error_page(request, InvalidInput("the request is invalid", problems))
        return await _answer(api_invalid, request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        if is_console(request) and isinstance(exc, HTTPException):
            if exc.status_code == 404:
                return error_page(request, NotFound("there is no such page"))
            if exc.status_code == 405:
                return error_page(request, InvalidInput("this page does not take that method"))
        assert starlette_http is not None
        return await _answer(starlette_http, request, exc)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return redirect(f"{CONSOLE_PREFIX}/sign-in?next={quote(exc.next_path, safe='/')}")

    app.add_exception_handler(HostError, host_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(SignInRequired, sign_in_first)
