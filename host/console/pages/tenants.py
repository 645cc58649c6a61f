"""Tenants (admin): create (the API key shown once), a tenant's modules, enabling a module
version with its settings form (generated from the module's schema), pin, rollback,
disable, and the webhook URL to copy. A tenant's overview is open to its marketers too."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Query, Request
from starlette.responses import Response

from host.accounts import Role
from host.api.bodies import checked_router
from host.console.csrf import CheckedForm
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import AdminViewer, TenantViewer
from host.console.settings_form import SettingsField, form_fields, settings_from_form
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.errors import Conflict, InvalidInput, NotFound
from host.platform import Host

router = checked_router(prefix="/console/tenants", include_in_schema=False)


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _list_page(
    request: Request, viewer: SignedIn, *, errors: FormErrors | None = None,
    values: dict[str, str] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    return render(
        request,
        "tenants.html",
        {"tenants": _host(request).tenants.list(), "errors": errors or FormErrors(),
         "values": values or {}},
        viewer=viewer,
        status_code=status,
    )  # fmt: skip


@router.get("")
def tenants(request: Request, viewer: AdminViewer) -> Response:
    return _list_page(request, viewer)


@router.post("")
def create_tenant(request: Request, viewer: AdminViewer, form: CheckedForm) -> Response:
    values = {"id": str(form.get("id") or "").strip(), "name": str(form.get("name") or "")}
    try:
        tenant, api_key = _host(request).tenants.create(values["id"], values["name"])
    except (InvalidInput, Conflict) as exc:
        return _list_page(
            request, viewer, errors=FormErrors.of(exc, ["id", "name"]), values=values, status=422
        )
    request.state.audit_action = f"created tenant {tenant.id}"
    return render(
        request, "tenant_created.html", {"tenant": tenant, "api_key": api_key}, viewer=viewer
    )


@router.get("/{tenant_id}")
def tenant(request: Request, tenant_id: str, viewer: TenantViewer) -> Response:
    host = _host(request)
    info = host.tenants.get(tenant_id)
    enabled = host.tenants.enablements(tenant_id)
    modules = host.registry.list() if viewer.role is Role.ADMIN else []
    used = {e.module_id for e in enabled}
    return render(
        request,
        "tenant.html",
        {
            "tenant": info,
            "enablements": enabled,
            "available": [(m.id, f"{m.id} — {m.name}") for m in modules if m.id not in used],
        },
        viewer=viewer,
    )


@router.get("/{tenant_id}/module")
def choose_module(
    tenant_id: str, viewer: AdminViewer, module: Annotated[str, Query(max_length=64)]
) -> Response:
    """Where the "Enable a module" picker goes: that module's page for this tenant."""
    return redirect(f"/console/tenants/{quote(tenant_id)}/modules/{quote(module)}")


def _enablement_page(
    request: Request, viewer: SignedIn, tenant_id: str, module_id: str, *,
    version: str | None = None, errors: FormErrors | None = None, status: int = 200,
) -> Response:  # fmt: skip
    host = _host(request)
    info = host.tenants.get(tenant_id)
    try:
        current = host.tenants.enablement(tenant_id, module_id)
    except NotFound:
        current = None
    module = host.registry.get(module_id)
    shown = version or (current.version if current else module.latest_version)
    manifest = host.registry.stored(module_id, shown).manifest
    fields = form_fields(manifest.settings, current.settings if current else {})
    return render(
        request,
        "enablement.html",
        {
            "tenant": info,
            "module": module,
            "current": current,
            "version": shown,
            "version_options": [(v.version, v.version) for v in reversed(module.versions)],
            "fields": fields,
            "errors": errors or FormErrors(),
        },
        viewer=viewer,
        status_code=status,
    )


@router.get("/{tenant_id}/modules/{module_id}")
def enablement(
    request: Request,
    tenant_id: str,
    module_id: str,
    viewer: AdminViewer,
    version: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    return _enablement_page(request, viewer, tenant_id, module_id, version=version)


@router.post("/{tenant_id}/modules/{module_id}")
def save_enablement(
    request: Request, tenant_id: str, module_id: str, viewer: AdminViewer, form: CheckedForm
) -> Response:
    """The form's settings replace the stored ones (a secret left empty is kept), as
    ``PUT /api/v1/tenants/{t}/modules/{m}`` does."""
    host = _host(request)
    version = str(form.get("version") or "") or None
    enabled = bool(form.get("enabled"))
    fields: list[SettingsField] | None = None
    try:
        manifest = host.registry.stored(module_id, version).manifest
        fields = form_fields(manifest.settings, {})
        settings = settings_from_form(form, fields)
        info = host.tenants.configure(
            tenant_id, module_id, version=version, settings=settings, enabled=enabled
        )
    except (InvalidInput, Conflict) as exc:
        names = _field_names(fields)
        return _enablement_page(
            request, viewer, tenant_id, module_id, version=version,
            errors=FormErrors.of(exc, ["version", "settings", *names]), status=422,
        )  # fmt: skip
    state = "enabled" if info.enabled else "disabled"
    request.state.audit_action = (
        f"configured module {module_id}@{info.version} for tenant {tenant_id} ({state})"
    )
    flash(request, viewer, f"Saved: {module_id} {info.version} is {state} for {tenant_id}.")
    return redirect(f"/console/tenants/{tenant_id}/modules/{module_id}")


def _field_names(fields: list[SettingsField] | None) -> list[str]:
    names: list[str] = []
    for f in fields or []:
        names.append(f.name)
        names.extend(_field_names(f.children))
    return names


@router.post("/{tenant_id}/modules/{module_id}/rollback")
def rollback(
    request: Request, tenant_id: str, module_id: str, viewer: AdminViewer, _form: CheckedForm
) -> Response:
    info = _host(request).tenants.rollback(tenant_id, module_id)
    request.state.audit_action = f"rolled module {module_id} back to {info.version} for {tenant_id}"
    flash(request, viewer, f"Rolled back: {module_id} is pinned to {info.version}.")
    return redirect(f"/console/tenants/{tenant_id}/modules/{module_id}")
