"""Request dependencies: the Host, and who is calling (admin token or tenant API key)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from host.errors import Forbidden, Unauthorized
from host.platform import Host

_bearer = HTTPBearer(auto_error=False, description="Admin token or a tenant's API key")


def get_host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


HostDep = Annotated[Host, Depends(get_host)]


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: the admin, or one tenant."""

    is_admin: bool
    tenant_id: str | None = None

    def may_act_for(self, tenant_id: str) -> bool:
        return self.is_admin or self.tenant_id == tenant_id


def get_caller(
    request: Request,
    host: HostDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Who is calling; also named for the audit log (``host.api.audit_trail``)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    token = credentials.credentials
    admin_name = host.admin_tokens.name_of(token)
    if admin_name is not None:
        request.state.audit_actor = f"admin token {admin_name}"
        return Caller(is_admin=True)
    tenant_id = host.tenants.tenant_for_key(token)
    if tenant_id is None:
        raise Unauthorized("invalid token")
    request.state.audit_actor = f"tenant {tenant_id} API key"
    return Caller(is_admin=False, tenant_id=tenant_id)


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this call needs the admin token")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


def require_tenant_access(tenant_id: str, caller: CallerDep, host: HostDep) -> str:
    """The tenant in the path, if the caller is the admin or that tenant, and the tenant
    exists: a deleted tenant (a tombstone until its rows are purged) is 404 on every route
    at once, whatever rows of it are still stored."""
    if not caller.may_act_for(tenant_id):
        raise Forbidden(f"this API key does not belong to tenant {tenant_id}")
    if caller.is_admin:
        host.tenants.get(tenant_id)
    return tenant_id


TenantDep = Annotated[str, Depends(require_tenant_access)]
