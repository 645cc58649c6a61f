"""CSRF protection of every console form (the synchronizer-token pattern).

Each session has a random CSRF token (``host.console_sessions``); every form renders it as
the hidden field ``csrf_token`` (``{{ csrf() }}`` in templates), and :func:`checked_form`
refuses a post whose field is missing or differs — a 403 page, nothing changed. The session
cookie is ``SameSite=Strict`` as well; the token is what makes a forged post fail even where
a browser ignores that. The sign-in form, before there is a session, is protected the same
way by a token in a short-lived cookie of its own (``host.console.pages.auth``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from host.api.bodies import too_large
from host.console.guard import AnyViewer
from host.console_sessions import SignedIn
from host.errors import Forbidden, InvalidInput, Problem
from host.json_values import text_problem

FIELD = "csrf_token"
MAX_FORM_BYTES = 64 * 1024
"""The largest plain form; uploads (``max_bytes``) may be larger."""


class CsrfRefused(Forbidden):
    """A console post without its session's CSRF token."""


async def read_form(request: Request, *, max_bytes: int = MAX_FORM_BYTES) -> FormData:
    """The posted form, refused above ``max_bytes`` (a declared length is required, as
    browsers always send one for forms) or when Starlette's multipart limits are hit."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise InvalidInput("form is invalid", [Problem("body", "Content-Length is required")])
    if int(declared) > max_bytes:
        raise too_large("form", max_bytes)
    try:
        form = await request.form(max_files=200, max_fields=1000)
    except HTTPException as exc:
        raise InvalidInput("form is invalid", [Problem("body", str(exc.detail))]) from None
    problems = [
        Problem(f"form.{name}", reason)
        for name, value in form.multi_items()
        if isinstance(value, str)
        for reason in [text_problem(name) or text_problem(value)]
        if reason is not None
    ]
    if problems:  # NUL or lone surrogates: no lookup or storage may see them (as in the API)
        raise InvalidInput("form is invalid; nothing was stored", problems)
    return form


def check_token(viewer: SignedIn, form: FormData) -> None:
    token = form.get(FIELD)
    if not isinstance(token, str) or not viewer.csrf_matches(token):
        raise CsrfRefused(
            "this form was sent without its security token (CSRF); reload the page and try again"
        )


async def checked_form(request: Request, viewer: AnyViewer) -> FormData:
    """A dependency: the posted form, after its CSRF token was checked."""
    form = await read_form(request)
    check_token(viewer, form)
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]
