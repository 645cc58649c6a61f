"""Users (admin): the people who sign in, their roles, creating and removing them."""

from __future__ import annotations

from fastapi import Request
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
