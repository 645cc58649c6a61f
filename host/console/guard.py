"""Who may open a console page: the session cookie, the role guard, the tenant guard.

Routes declare what they need as a dependency — ``AdminViewer``, ``ModulesViewer``,
``AnyViewer`` or :func:`tenant_viewer` — and receive the signed-in
:class:`~host.console_sessions.SignedIn`. Signed out, a page redirects to the sign-in page
(``SignInRequired``); signed in with the wrong role, it is a 403 page. Every guard also names
the viewer for the audit log (``request.state.audit_actor``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from host.accounts import Role
from host.console_sessions import SignedIn
from host.errors import Forbidden

SESSION_COOKIE = "crm_console"


class SignInRequired(Exception):
    """Raised by a guard when no live session came with the request."""

    def __init__(self, next_path: str):
        self.next_path = next_path


def signed_in(request: Request) -> SignedIn:
    viewer = request.app.state.host.console_sessions.lookup(request.cookies.get(SESSION_COOKIE))
    if viewer is None:
        raise SignInRequired(request.url.path)
    request.state.audit_actor = viewer.who
    return viewer


def require(*roles: Role) -> Callable[[SignedIn], SignedIn]:
    """A dependency admitting only viewers with one of ``roles``."""
    allowed = frozenset(roles)

    def role_guard(viewer: Annotated[SignedIn, Depends(signed_in)]) -> SignedIn:
        if viewer.role not in allowed:
            raise Forbidden("your role does not give access to this page")
        return viewer

    return role_guard


AnyViewer = Annotated[SignedIn, Depends(signed_in)]
AdminViewer = Annotated[SignedIn, Depends(require(Role.ADMIN))]
ModulesViewer = Annotated[SignedIn, Depends(require(Role.ADMIN, Role.INTEGRATOR))]


def tenant_viewer(tenant_id: str, viewer: AnyViewer) -> SignedIn:
    """An admin, or a marketer of the tenant in the path. Checked before the tenant is
    looked up, so another tenant's marketer learns nothing, not even whether it exists."""
    if viewer.role is Role.ADMIN:
        return viewer
    if viewer.role is Role.MARKETER and viewer.tenant_id == tenant_id:
        return viewer
    raise Forbidden("you do not have access to this tenant")


TenantViewer = Annotated[SignedIn, Depends(tenant_viewer)]
