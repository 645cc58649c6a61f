"""Rendering console pages: one Jinja2 environment over the package's templates, and the
headers every console page is sent with.

Every page extends ``base.html`` (the layout: skip link, header with the navigation for the
viewer's role, the flash message, ``main``). :func:`render` gives each template ``viewer``
(who is signed in, or None), ``csrf_token``, ``flash``, ``nav`` and ``tenant_nav``, plus
the page's own context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from host.accounts import Role
from host.console_sessions import SignedIn

SECURITY_HEADERS = {
    # no inline script or style anywhere: the console's own CSS and JS are files under
    # /console/static, so an injected <script> cannot run even if escaping ever failed
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    roles: frozenset[Role]


NAV: list[NavItem] = [
    NavItem("Home", "/console", frozenset(Role)),
    NavItem("Modules", "/console/modules", frozenset({Role.ADMIN, Role.INTEGRATOR})),
    NavItem("Tenants", "/console/tenants", frozenset({Role.ADMIN})),
    NavItem("Users", "/console/users", frozenset({Role.ADMIN})),
    NavItem("Needs attention", "/console/attention", frozenset({Role.ADMIN})),
    NavItem("Audit log", "/console/audit", frozenset({Role.ADMIN})),
]
"""The main navigation; an item shows only to the roles listed (the routes guard
themselves as well: hiding a link is not access control)."""

UPLOAD_HEADER = "x-console-upload"
"""Sent by ``console.js`` on an upload it posts itself. The request follows the answer's
redirect, so the page it fetches must leave the one-shot message for the page the browser
opens next."""

TENANT_NAV: list[tuple[str, str]] = [
    ("Overview", ""),
    ("Contacts", "/contacts"),
    ("Templates", "/templates"),
    ("Campaigns", "/campaigns"),
    ("Activity", "/activity"),
]
"""Tabs of a tenant's pages, as (label, path after ``/console/tenants/{id}``)."""

environment = Environment(
    loader=PackageLoader("host.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    viewer: SignedIn | None = None,
    status_code: int = 200,
    flash: str | None = None,
) -> HTMLResponse:
    """The page ``template`` for ``viewer``; the flash left in the session (or ``flash``)
    is shown once."""
    if viewer is not None and flash is None and UPLOAD_HEADER in request.headers:
        flash = ""  # the upload script's own request: the page it then opens shows the flash
    elif viewer is not None and flash is None:
        flash = request.app.state.host.console_sessions.take_flash(viewer.token_sha256)
    token = viewer.csrf_token if viewer else ""
    page = environment.get_template(template).render(
        {
            "viewer": viewer,
            "csrf_token": token,
            "csrf": lambda: Markup(
                f'<input type="hidden" name="csrf_token" value="{escape(token)}">'
            ),
            "flash": flash,
            "nav": [i for i in NAV if viewer is not None and viewer.role in i.roles],
            "tenant_nav": TENANT_NAV,
            "path": request.url.path,
            "Role": Role,
            **(context or {}),
        }
    )
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)


def redirect(to: str, *, status_code: int = 303) -> RedirectResponse:
    """After a post (Post/Redirect/Get), or to the sign-in page."""
    return RedirectResponse(to, status_code=status_code, headers=SECURITY_HEADERS)
