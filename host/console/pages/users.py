"""Users (admin): the people who sign in, their roles, creating and removing them, and
resetting one's password (a person who forgot theirs): every session of theirs ends, so
whoever held the old password is signed out at once. An admin's own password is changed on
their account page, which asks for the current one."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.csrf import CheckedForm
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import AdminViewer
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.errors import Conflict, InvalidInput
from host.platform import Host

router = checked_router(prefix="/console/users", include_in_schema=False)

FIELDS = ("email", "password", "role", "tenant")


def _page(
    request: Request, viewer: SignedIn, *, errors: FormErrors | None = None,
    values: dict[str, str] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    return render(
        request,
        "users.html",
        {
            "users": host.accounts.list(),
            "tenant_options": [("", "— none —")]
            + [(t.id, f"{t.id} — {t.name}") for t in host.tenants.list()],
            "errors": errors or FormErrors(),
            "values": values or {},
        },
        viewer=viewer,
        status_code=status,
    )


@router.get("")
def users(request: Request, viewer: AdminViewer) -> Response:
    return _page(request, viewer)


@router.post("")
def create_user(request: Request, viewer: AdminViewer, form: CheckedForm) -> Response:
    host: Host = request.app.state.host
    values = {name: str(form.get(name) or "") for name in FIELDS}
    try:
        user = host.accounts.create(
            values["email"], values["password"], values["role"], values["tenant"] or None
        )
    except (InvalidInput, Conflict) as exc:
        values.pop("password")
        return _page(request, viewer, errors=FormErrors.of(exc, FIELDS), values=values, status=422)
    where = f" of tenant {user.tenant_id}" if user.tenant_id else ""
    request.state.audit_action = f"created user {user.email} ({user.role.value}{where})"
    flash(request, viewer, f"User {user.email} created ({user.role.value}{where}).")
    return redirect("/console/users")


@router.post("/{user_id}/delete")
def delete_user(
    request: Request, user_id: int, viewer: AdminViewer, _form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    if viewer.user_id == user_id:
        raise Conflict("you cannot remove your own account while signed in with it")
    user = host.accounts.delete(user_id)
    request.state.audit_action = f"removed user {user.email}"
    flash(request, viewer, f"User {user.email} removed; their sessions have ended.")
    return redirect("/console/users")


def _password_page(
    request: Request, viewer: SignedIn, user_id: int, *, errors: FormErrors | None = None,
    status: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    return render(
        request,
        "user_password.html",
        {"user": host.accounts.get(user_id), "errors": errors or FormErrors()},
        viewer=viewer,
        status_code=status,
    )


def _not_own(viewer: SignedIn, user_id: int) -> None:
    if viewer.user_id == user_id:
        raise Conflict(
            "change your own password on your account page (/console/account): "
            "it asks for the current one"
        )


@router.get("/{user_id}/password")
def password_form(request: Request, user_id: int, viewer: AdminViewer) -> Response:
    _not_own(viewer, user_id)
    return _password_page(request, viewer, user_id)


@router.post("/{user_id}/password")
async def reset_password(
    request: Request, user_id: int, viewer: AdminViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    _not_own(viewer, user_id)
    password = str(form.get("password") or "")
    try:
        user = await run_in_threadpool(host.accounts.set_password, user_id, password)
    except InvalidInput as exc:
        return _password_page(
            request, viewer, user_id, errors=FormErrors.of(exc, ["password"]), status=422
        )
    request.state.audit_action = f"reset the password of user {user.email} (their sessions ended)"
    flash(request, viewer, f"Password of {user.email} reset; their sessions have ended.")
    return redirect("/console/users")
