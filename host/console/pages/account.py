"""The signed-in person's own account: who they are and changing their password.

A change needs the current password (a borrowed, unlocked browser cannot take the account
over), is counted by the sign-in limits like a sign-in (a wrong current password is a failed
attempt for the account and the client address, so the form is no way around them), hashes
the new one with argon2 (``host.accounts``) and ends every other session of the user in the
same transaction. A session begun with the admin token has no password: the page says how
that token is rotated instead.
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from host.accounts import WrongCurrentPassword
from host.api.bodies import checked_router
from host.console.csrf import CheckedForm
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import AnyViewer
from host.console.pages.auth import client_address
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.errors import Conflict, InvalidInput, Problem, RateLimited
from host.platform import Host

router = checked_router(prefix="/console/account", include_in_schema=False)

FIELDS = ("current_password", "new_password", "new_password_again")


def _page(
    request: Request, viewer: SignedIn, *, errors: FormErrors | None = None, status: int = 200
) -> Response:
    return render(
        request, "account.html", {"errors": errors or FormErrors()}, viewer=viewer,
        status_code=status,
    )  # fmt: skip


@router.get("")
def account(request: Request, viewer: AnyViewer) -> Response:
    return _page(request, viewer)


@router.post("/password")
async def change_password(request: Request, viewer: AnyViewer, form: CheckedForm) -> Response:
    host: Host = request.app.state.host
    if viewer.user_id is None or viewer.email is None:
        raise Conflict(
            "you signed in with an admin token, which has no password: rotate the token with "
            "`crm-host admin token rotate NAME` instead"
        )
    current, new, again = (str(form.get(name) or "") for name in FIELDS)
    address = client_address(request)
    try:
        host.sign_in_limits.check(viewer.email, address)
    except RateLimited as exc:
        page = _page(request, viewer, errors=FormErrors(exc.message), status=429)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    try:
        if new != again:
            raise InvalidInput(
                "the password was not changed",
                [Problem("new_password_again", "does not match the new password")],
            )
        await run_in_threadpool(
            host.accounts.change_password, viewer.user_id, current, new,
            keep_session=viewer.token_sha256,
        )  # fmt: skip
    except WrongCurrentPassword as exc:
        host.sign_in_limits.failed(viewer.email, address)
        return _page(request, viewer, errors=FormErrors.of(exc, FIELDS), status=422)
    except InvalidInput as exc:
        return _page(request, viewer, errors=FormErrors.of(exc, FIELDS), status=422)
    host.sign_in_limits.succeeded(viewer.email)
    request.state.audit_action = "changed their console password (their other sessions ended)"
    flash(request, viewer, "Password changed; your other sessions have ended.")
    return redirect("/console/account")
