"""Signing in and out.

Two ways in, on one page: a user's email and password, or an admin token (how the first
admin gets in, to create the users). Failed attempts are limited per account and per client
address (``host.sign_in_limits``); a refused attempt says only that the credentials were
wrong, never which part. The session cookie is ``HttpOnly``, ``SameSite=Strict``, scoped to
``/console``, and ``Secure`` when ``CRM_HOST_PUBLIC_URL`` is https.

Before there is a session, the form is protected against login CSRF by a random token in a
cookie of its own, repeated in the form (double submit); the cookie is cleared at sign-in.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.csrf import CheckedForm, CsrfRefused, read_form
from host.console.forms import FormErrors
from host.console.guard import SESSION_COOKIE, AnyViewer, SignInRequired, signed_in
from host.console.templating import redirect, render
from host.errors import Problem, RateLimited
from host.platform import Host

router = checked_router(prefix="/console", include_in_schema=False)

SIGN_IN_COOKIE = "crm_console_sign_in"
ADMIN_TOKEN_ACCOUNT = "(admin token)"
"""The account name failed admin-token attempts are counted under."""


def _secure(request: Request) -> bool:
    host: Host = request.app.state.host
    return host.settings.public_url.startswith("https://")


def _safe_next(next_path: str | None) -> str:
    """Only a console path: never another site (``//evil``, ``/console@evil``)."""
    if (
        next_path
        and next_path.startswith("/console")
        and not next_path.startswith("//")
        and "\\" not in next_path
        and (len(next_path) == len("/console") or next_path[len("/console")] in "/?")
    ):
        return next_path
    return "/console"


def _sign_in_page(
    request: Request, *, next_path: str, errors: FormErrors | None = None, status: int = 200,
    email: str = "",
) -> Response:  # fmt: skip
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        {
            "sign_in_token": token,
            "next": _safe_next(next_path),
            "errors": errors or FormErrors(),
            "email": email,
        },
        status_code=status,
        flash="",
    )
    response.set_cookie(
        SIGN_IN_COOKIE, token, max_age=3600, path="/console", httponly=True,
        secure=_secure(request), samesite="strict",
    )  # fmt: skip
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: Annotated[str, Query(max_length=2000)] = "/console"):
    try:
        signed_in(request)
        return redirect(_safe_next(next))
    except SignInRequired:
        return _sign_in_page(request, next_path=next)


def _check_sign_in_token(request: Request, form: FormData) -> None:
    cookie = request.cookies.get(SIGN_IN_COOKIE, "")
    field = form.get("csrf_token")
    if not cookie or not isinstance(field, str) or not hmac.compare_digest(cookie, field):
        raise CsrfRefused(
            "this sign-in form was sent without its security token; reload the page and try again"
        )


def client_address(request: Request) -> str:
    """The client address the sign-in limits count by (``X-Forwarded-For`` only from a
    trusted proxy)."""
    host: Host = request.app.state.host
    peer = request.client.host if request.client else None
    return host.client_addresses.client_of(peer, request.headers.getlist("x-forwarded-for"))


def _signed_in_response(request: Request, token: str, next_path: str) -> Response:
    response = redirect(_safe_next(next_path))
    host: Host = request.app.state.host
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(host.settings.console_session_hours * 3600),
        path="/console", httponly=True, secure=_secure(request), samesite="strict",
    )  # fmt: skip
    response.delete_cookie(SIGN_IN_COOKIE, path="/console")
    return response


async def _attempt(
    request: Request,
    account: str,
    check: Callable[[FormData], str | None],
    *,
    what: str,
    field: str,
) -> Response:
    """Run ``check`` (the posted form → a session token, or None) under the limits."""
    host: Host = request.app.state.host
    client = client_address(request)
    form = await read_form(request)
    next_path = str(form.get("next") or "/console")
    _check_sign_in_token(request, form)
    try:
        host.sign_in_limits.check(account, client)
    except RateLimited as exc:
        errors = FormErrors(exc.message)
        page = _sign_in_page(request, next_path=next_path, errors=errors, status=429,
                             email=str(form.get("email") or ""))  # fmt: skip
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    token = await run_in_threadpool(check, form)
    if token is None:
        host.sign_in_limits.failed(account, client)
        errors = FormErrors(f"sign-in failed: {what}")
        errors.add(Problem(field, what), {field})
        return _sign_in_page(request, next_path=next_path, errors=errors, status=401,
                                   email=str(form.get("email") or ""))  # fmt: skip
    host.sign_in_limits.succeeded(account)
    return _signed_in_response(request, token, next_path)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    host: Host = request.app.state.host
    form = await read_form(request)
    email = str(form.get("email") or "").strip().lower()[:254]

    def check(posted: FormData) -> str | None:
        user = host.accounts.authenticate(email, str(posted.get("password") or ""))
        if user is None:
            return None
        request.state.audit_actor = user.email
        request.state.audit_action = "signed in to the console"
        return host.console_sessions.start_for_user(user)

    return await _attempt(request, email, check, what="wrong email or password", field="password")


@router.post("/sign-in/admin-token")
async def sign_in_with_admin_token(request: Request) -> Response:
    host: Host = request.app.state.host

    def check(posted: FormData) -> str | None:
        token = str(posted.get("token") or "")[:500]
        name = host.admin_tokens.name_of(token)
        if name is None:
            return None
        request.state.audit_actor = f"admin token {name}"
        request.state.audit_action = "signed in to the console with the admin token"
        return host.console_sessions.start_for_admin_token(name, token)

    return await _attempt(
        request, ADMIN_TOKEN_ACCOUNT, check, what="not an admin token", field="token"
    )


@router.post("/sign-out")
def sign_out(request: Request, viewer: AnyViewer, _form: CheckedForm) -> Response:
    host: Host = request.app.state.host
    host.console_sessions.end(viewer.token_sha256)
    request.state.audit_action = "signed out of the console"
    response = redirect("/console/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response
