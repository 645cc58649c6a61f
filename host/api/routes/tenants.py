"""Admin routes for tenants and the modules enabled for them."""

from __future__ import annotations

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep, TenantDep
from host.api.executors import tenant_work
from host.api.paging import paged_by
from host.api.schemas import (
    EnablementOut,
    EnablementUpdate,
    TenantApiKey,
    TenantCreate,
    TenantCreated,
    TenantDeleted,
    TenantOut,
)
from host.marketing.suppression_policy import SuppressionPolicy

router = checked_router(prefix="/api/v1/tenants", tags=["tenants"])


@router.post("", status_code=201)
def create_tenant(body: TenantCreate, host: HostDep, _admin: AdminDep) -> TenantCreated:
    """Create a tenant. The API key in the answer is shown this once; only its hash is kept."""
    tenant, key = host.tenants.create(body.id, body.name)
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)


@router.get("", dependencies=[paged_by()])
def list_tenants(host: HostDep, _admin: AdminDep) -> list[TenantOut]:
    return [TenantOut.model_validate(t) for t in host.tenants.list()]


@router.get("/{tenant_id}")
@tenant_work
def show_tenant(tenant_id: TenantDep, host: HostDep) -> TenantOut:
    return TenantOut.model_validate(host.tenants.get(tenant_id))


@router.delete("/{tenant_id}", status_code=202)
def delete_tenant(tenant_id: str, host: HostDep, _admin: AdminDep) -> TenantDeleted:
    """Delete the tenant: at once it is 404 everywhere, its API key stops working and its
    webhook URLs answer 404 (unfinished campaigns are cancelled, queued mail failed); its
    rows are then purged in the background in batches of at most 10,000 rows, resuming after
    a restart. The id can be used again once the purge has finished."""
    host.delete_tenant(tenant_id)
    return TenantDeleted(id=tenant_id, purge="pending")


@router.post("/{tenant_id}/api-key/rotate")
def rotate_api_key(tenant_id: str, host: HostDep, _admin: AdminDep) -> TenantApiKey:
    """Replace the tenant's API key: the old key stops working at once; the new one is in
    this answer only (only its hash is stored)."""
    return TenantApiKey(id=tenant_id, api_key=host.tenants.rotate_key(tenant_id))


@router.get("/{tenant_id}/modules", dependencies=[paged_by()])
@tenant_work
def list_enablements(tenant_id: TenantDep, host: HostDep) -> list[EnablementOut]:
    return [EnablementOut.model_validate(e) for e in host.tenants.enablements(tenant_id)]


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
    return EnablementOut.model_validate(info)


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
    return EnablementOut.model_validate(info)


@router.get("/{tenant_id}/modules/{module_id}")
@tenant_work
def show_enablement(tenant_id: TenantDep, module_id: str, host: HostDep) -> EnablementOut:
    return EnablementOut.model_validate(host.tenants.enablement(tenant_id, module_id))


@router.post("/{tenant_id}/modules/{module_id}/rollback")
def rollback_module(
    tenant_id: str, module_id: str, host: HostDep, _admin: AdminDep
) -> EnablementOut:
    """Pin the version that was pinned before the current one."""
    return EnablementOut.model_validate(host.tenants.rollback(tenant_id, module_id))


@router.get("/{tenant_id}/suppression-policy")
@tenant_work
def show_suppression_policy(tenant_id: TenantDep, host: HostDep) -> SuppressionPolicy:
    """The tenant's suppression policy (the defaults until an admin sets one)."""
    return host.suppression_policies.get(tenant_id)


@router.put("/{tenant_id}/suppression-policy")
def set_suppression_policy(
    tenant_id: str, body: SuppressionPolicy, host: HostDep, _admin: AdminDep
) -> SuppressionPolicy:
    """Replace the tenant's suppression policy (a field left out takes its default): which
    delivery events make a contact Bounced or Complained, after how many soft bounces in a
    row, and whether a service's subscribe event lifts those."""
    return host.suppression_policies.set(tenant_id, body)
