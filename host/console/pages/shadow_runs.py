"""A shadow run from the console (admin): pick a stored version of a tenant's module, a
window of its stored webhook requests and a limit, and see what that version would do with
them — per request the verdict, the differing actions, errors, timing, refused fetches and
unstored writes.

No logic of its own: the post calls :meth:`host.marketing.shadow_runs.ShadowRunner.run`
as ``POST /api/v1/tenants/{t}/modules/{m}/shadow`` does, and renders its report, which the
service has already masked (secrets in actions, errors and fetches). Nothing is stored, so
the answer is the report itself rather than a redirect."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.csrf import CheckedForm
from host.console.forms import FormErrors
from host.console.guard import AdminViewer
from host.console.templating import render
from host.console_sessions import SignedIn
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.marketing.shadow_runs import DEFAULT_REQUESTS, MAX_REQUESTS, ShadowReport, ShadowWindow
from host.platform import Host

router = checked_router(
    prefix="/console/tenants/{tenant_id}/modules/{module_id}/shadow", include_in_schema=False
)

FIELDS = ("version", "since", "until", "limit")


def _page(
    request: Request, viewer: SignedIn, tenant_id: str, module_id: str, *,
    values: dict[str, str] | None = None, errors: FormErrors | None = None,
    report: ShadowReport | None = None, status: int = 200,
) -> Response:  # fmt: skip
    """The form (the module's stored versions, newest first) and, after a run, its report.
    An unknown tenant or module, or one not set up for the tenant, is a 404 page."""
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    current = host.tenants.enablement(tenant_id, module_id)
    module = host.registry.get(module_id)
    versions = [v.version for v in reversed(module.versions)]
    default = next((v for v in versions if v != current.version), current.version)
    return render(
        request,
        "shadow_run.html",
        {
            "tenant": tenant,
            "module": module,
            "current": current,
            "version_options": [(v, v) for v in versions],
            "values": values or {"version": default, "limit": str(DEFAULT_REQUESTS)},
            "max_requests": MAX_REQUESTS,
            "errors": errors or FormErrors(),
            "report": report,
        },
        viewer=viewer,
        status_code=status,
    )


@router.get("")
def shadow_form(request: Request, tenant_id: str, module_id: str, viewer: AdminViewer) -> Response:
    return _page(request, viewer, tenant_id, module_id)


@router.post("")
def shadow_run(
    request: Request, tenant_id: str, module_id: str, viewer: AdminViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    values = {name: str(form.get(name) or "").strip() for name in FIELDS}
    host.tenants.enablement(tenant_id, module_id)  # 404 page before reading the form
    try:
        window = _window(form)
        if not values["version"]:
            raise InvalidInput("choose a version", [Problem("version", "is required")])
        try:
            report = host.shadow_runs.run(tenant_id, module_id, values["version"], window)
        except NotFound as exc:  # the tenant's module exists (above): the version does not
            raise InvalidInput("no such version", [Problem("version", exc.message)]) from None
    except (InvalidInput, Conflict) as exc:
        return _page(
            request, viewer, tenant_id, module_id, values=values,
            errors=FormErrors.of(exc, FIELDS), status=422 if isinstance(exc, InvalidInput) else 409,
        )  # fmt: skip
    request.state.audit_action = (
        f"shadow-ran module {module_id}@{report.version} for tenant {tenant_id} "
        f"over {len(report.requests)} stored requests"
    )
    return _page(request, viewer, tenant_id, module_id, values=values, report=report)


def _window(form: FormData) -> ShadowWindow:
    """The form's window; every field's problem at once (the service checks the bounds)."""
    problems: list[Problem] = []
    since = _time(form, "since", problems)
    until = _time(form, "until", problems)
    limit = DEFAULT_REQUESTS
    text = str(form.get("limit") or "").strip()
    if text:
        try:
            limit = int(text)
        except ValueError:
            problems.append(Problem("limit", f"a whole number from 1 to {MAX_REQUESTS}"))
    if problems:
        raise InvalidInput("the shadow run's window is invalid", problems)
    return ShadowWindow(since, until, limit).checked()


def _time(form: FormData, name: str, problems: list[Problem]) -> datetime | None:
    """A ``datetime-local`` value (``2024-05-01T10:30``) read as UTC, or one with an offset;
    empty is no bound."""
    text = str(form.get(name) or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        problems.append(Problem(name, "a date and time (UTC), e.g. 2024-05-01T10:30"))
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
