"""The console's home: where each role starts."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from host.accounts import Role
from host.api.bodies import checked_router
from host.console.guard import AnyViewer
from host.console.templating import redirect, render
from host.platform import Host

router = checked_router(prefix="/console", include_in_schema=False)


@router.get("")
def home(request: Request, viewer: AnyViewer) -> Response:
    host: Host = request.app.state.host
    if viewer.role is Role.MARKETER and viewer.tenant_id:
        return redirect(f"/console/tenants/{viewer.tenant_id}")
    context = {
        "module_count": len(host.registry.list()),
        "tenant_count": len(host.tenants.list()) if viewer.role is Role.ADMIN else None,
        "user_count": host.accounts.count() if viewer.role is Role.ADMIN else None,
    }
    return render(request, "home.html", context, viewer=viewer)
