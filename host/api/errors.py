"""The one place where domain errors become HTTP responses.

Every error body has the same shape: ``{"error": kind, "message": ..., "problems":
[{"location": ..., "message": ...}]}``, so clients handle all failures one way.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from host.errors import (
    Conflict,
    Forbidden,
    HostError,
    InvalidInput,
    ModuleCallFailed,
    NotFound,
    PayloadTooLarge,
    Problem,
    RateLimited,
    ServiceBusy,
    Unauthorized,
)

WEBHOOK_PATH_PREFIX = "/hooks/"
"""Where the public webhook endpoint lives; its busy answer differs from the API's."""

STATUS_BY_ERROR: dict[type[HostError], int] = {
    PayloadTooLarge: 413,
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    ServiceBusy: 429,
}

MODULE_FAILURE_STATUS = {"not_implemented": 501}
"""Module failures are the upstream's fault (502), except "does not implement" (501)."""


def status_for(error: HostError, path: str = "") -> int:
    """``path`` tells a webhook from an API call: a busy share answers a webhook sender 503
    (services retry on 5xx, and the sender did nothing wrong), an API client 429; a webhook
    URL's own rate limit is 429 everywhere."""
    if isinstance(error, ServiceBusy) and not isinstance(error, RateLimited):
        return 503 if path.startswith(WEBHOOK_PATH_PREFIX) else 429
    if isinstance(error, ModuleCallFailed):
        return MODULE_FAILURE_STATUS.get(error.kind, 502)
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return 500


def error_body(error: HostError) -> dict[str, object]:
    body: dict[str, object] = {
        "error": error.kind,
        "message": error.message,
        "problems": [p.as_dict() for p in error.problems],
    }
    if isinstance(error, ModuleCallFailed):
        body["module"] = error.module
        body["function"] = error.function
        body["line"] = error.line
    return body


def error_headers(error: HostError) -> dict[str, str] | None:
    if isinstance(error, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(error, ServiceBusy):
        return {"Retry-After": str(error.retry_after_s)}
    return None


async def _host_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HostError)
    status = status_for(error, request.url.path)
    return JSONResponse(error_body(error), status_code=status, headers=error_headers(error))


async def _request_invalid(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        Problem(".".join(str(p) for p in item["loc"]), item["msg"]) for item in error.errors()
    ]
    return await _host_error(_request, InvalidInput("request is invalid", problems))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HostError, _host_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
