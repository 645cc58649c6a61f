"""A tenant's templates: *Import templates* from an enabled module (pages, truncated
warning), the list, the preview widget and *Publish*.

The preview shows HTML that came from a third-party service, so it is never rendered on
a console page: the page embeds ``…/preview`` in an ``<iframe sandbox>``, and that answer
carries a CSP of its own (``sandbox``, no script, nothing fetched but inline images and
styles), so the HTML can run nothing and reach nothing, even opened on its own."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from host.api.bodies import checked_router
from host.console.csrf import CheckedForm
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import TenantViewer
from host.console.templating import SECURITY_HEADERS, redirect, render
from host.console_sessions import SignedIn
from host.errors import HostError, InvalidInput, Problem
from host.platform import Host

router = checked_router(prefix="/console/tenants/{tenant_id}/templates", include_in_schema=False)

PREVIEW_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "frame-ancestors 'self'; form-action 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}
"""The preview's own headers: framed by the console only, and inert."""

DETAIL_CSP = SECURITY_HEADERS["Content-Security-Policy"] + "; frame-src 'self'"


def email_modules(host: Host, tenant_id: str) -> list[str]:
    """The tenant's enabled email modules (the *Email service* choices)."""
    return [
        e.module_id
        for e in host.tenants.enablements(tenant_id)
        if e.enabled and host.registry.get(e.module_id).kind == "email"
    ]


def _list_page(
    request: Request, viewer: SignedIn, tenant_id: str, *, errors: FormErrors | None = None,
    code: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    return render(
        request,
        "templates.html",
        {
            "tenant": tenant,
            "templates": host.templates.of_tenant(tenant_id),
            "modules": email_modules(host, tenant_id),
            "errors": errors or FormErrors(),
        },
        viewer=viewer,
        status_code=code,
    )


@router.get("")
def templates(request: Request, tenant_id: str, viewer: TenantViewer) -> Response:
    return _list_page(request, viewer, tenant_id)


@router.post("/import")
async def import_templates(
    request: Request, tenant_id: str, viewer: TenantViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    module = str(form.get("module") or "")
    try:
        if module not in email_modules(host, tenant_id):
            raise InvalidInput(
                "choose a module", [Problem("module", "one of this tenant's enabled email modules")]
            )
        report = await run_in_threadpool(host.templates.import_templates, tenant_id, module)
    except HostError as exc:
        return _list_page(request, viewer, tenant_id, errors=FormErrors.of(exc, ["module"]),
                          code=422 if isinstance(exc, InvalidInput) else 502)  # fmt: skip
    request.state.audit_action = (
        f"imported {report.imported} templates of {tenant_id} from {module}"
    )
    message = (
        f"Imported {report.imported} templates from {module} in {report.pages} page(s): "
        f"{report.created} new, {report.updated} updated."
    )
    if report.truncated:
        message += " Truncated: the module has more templates than the import's page limit."
    flash(request, viewer, message)
    return redirect(f"/console/tenants/{tenant_id}/templates")


def _detail(
    request: Request, viewer: SignedIn, tenant_id: str, template_id: str, *,
    errors: FormErrors | None = None, html: str | None = None, code: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    template = host.templates.get(tenant_id, template_id)
    preview_error = ""
    if html is None:
        try:
            html = host.templates.html(tenant_id, template_id)
        except HostError as exc:
            preview_error, html = exc.message, ""
    response = render(
        request,
        "template.html",
        {"tenant": tenant, "template": template, "html": html, "errors": errors or FormErrors(),
         "preview_error": preview_error},
        viewer=viewer,
        status_code=code,
    )  # fmt: skip
    response.headers["Content-Security-Policy"] = DETAIL_CSP
    return response


@router.get("/{template_id}")
def template(request: Request, tenant_id: str, template_id: str, viewer: TenantViewer) -> Response:
    return _detail(request, viewer, tenant_id, template_id)


@router.get("/{template_id}/preview")
def preview(request: Request, tenant_id: str, template_id: str, viewer: TenantViewer) -> Response:
    host: Host = request.app.state.host
    html = host.templates.html(tenant_id, template_id)
    return HTMLResponse(html, headers=PREVIEW_HEADERS)


@router.post("/{template_id}/publish")
async def publish(
    request: Request, tenant_id: str, template_id: str, viewer: TenantViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    name = str(form.get("name") or "").strip()
    subject = str(form.get("subject") or "")
    html = str(form.get("html") or "")
    try:
        if not name:
            raise InvalidInput("the template needs a name", [Problem("name", "required")])
        view = await run_in_threadpool(
            lambda: host.templates.publish(
                tenant_id, template_id, name=name, subject=subject or None, html=html
            )
        )
    except HostError as exc:
        errors = FormErrors.of(exc, ["name", "subject", "html"])
        return _detail(request, viewer, tenant_id, template_id, errors=errors, html=html,
                       code=422 if isinstance(exc, InvalidInput) else 502)  # fmt: skip
    request.state.audit_action = f"published template {template_id} of {tenant_id}"
    flash(request, viewer, f"Published {view.name} to {view.module} (id {view.external_id}).")
    return redirect(f"/console/tenants/{tenant_id}/templates/{template_id}")
