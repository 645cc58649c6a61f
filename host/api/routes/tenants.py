"""Admin routes for tenants and the modules enabled for them."""

from __future__ import annotations

from typing import Any

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep, TenantDep
from host.api.executors import tenant_work
from host.api.paging import paged_by
from host.api.schemas import EnablementOut, EnablementUpdate, TenantCreate, TenantCreated

router = checked_router(prefix="/api/v1/tenants", tags=["tenants"])


@router.post("", status_code=201)
def create_tenant(body: TenantCreate, host: HostDep, _admin: AdminDep) -> TenantCreated:
    """Create a tenant. The API key in the answer is shown this once; only its hash is kept."""
    tenant, key = host.tenants.create(body.id, body.name)
    return TenantCreated(id=tenant.id, name=tenant.name, apiKey=key)


@router.get("", dependencies=[paged_by()])
def list_tenants(host: HostDep, _admin: AdminDep) -> list[dict[str, Any]]:
    return [t.as_dict() for t in host.tenants.list()]


@router.get("/{tenant_id}")
@tenant_work
def show_tenant(tenant_id: TenantDep, host: HostDep) -> dict[str, Any]:
    return host.tenants.get(tenant_id).as_dict()


@router.get("/{tenant_id}/modules", dependencies=[paged_by()])
@tenant_work
def list_enablements(tenant_id: TenantDep, host: HostDep) -> list[EnablementOut]:
    return [EnablementOut(**e.as_dict()) for e in host.tenants.enablements(tenant_id)]


@router.put("/{tenant_id}/modules/{module_id}")
def configure_module(
    tenant_id: str, module_id: str, body: EnablementUpdate, host: HostDep, _admin: AdminDep
) -> EnablementOut:
    """Enable a module version for a tenant, pin another version, set its settings or
    disable it. ``settings`` replaces the stored settings (a secret left out keeps its value;
    PATCH merges instead). Settings are validated against the pinned version's manifest;
    secrets are never echoed."""
    info = host.tenants.configure(
        tenant_id, module_id, version=body.version, settings=body.settings, enabled=body.enabled
    )
    return EnablementOut(**info.as_dict())


@router.patch("/{tenant_id}/modules/{module_id}")
def update_module(
    tenant_id: str, module_id: str, body: EnablementUpdate, host: HostDep, _admin: AdminDep
) -> EnablementOut:
    """Like PUT, but ``settings`` is merged into the stored settings (RFC 7396: omitted
    fields are kept, ``null`` removes one)."""
    info = host.tenants.configure(
        tenant_id,
        module_id,
        version=body.version,
        settings=body.settings,
        enabled=body.enabled,
        settings_mode="patch",
    )
    return EnablementOut(**info.as_dict())


@router.get("/{tenant_id}/modules/{module_id}")
@tenant_work
def show_enablement(tenant_id: TenantDep, module_id: str, host: HostDep) -> EnablementOut:
    return EnablementOut(**host.tenants.enablement(tenant_id, module_id).as_dict())


@router.post("/{tenant_id}/modules/{module_id}/rollback")
def rollback_module(
    tenant_id: str, module_id: str, host: HostDep, _admin: AdminDep
) -> EnablementOut:
    """Pin the version that was pinned before the current one."""
    return EnablementOut(**host.tenants.rollback(tenant_id, module_id).as_dict())
