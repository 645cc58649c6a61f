"""Tenant routes of messenger modules: the account types and bots a campaign may use.

Both ask the module each time (the list lives in the service); a module that does not
implement the function answers 501, a failing one 502 with its error kind."""

from __future__ import annotations

from host.api.bodies import checked_router
from host.api.deps import HostDep, TenantDep
from host.api.executors import tenant_work
from host.api.paging import paged_by
from host.api.schemas import MessengerBotOut, MessengerBots, MessengerTypes

router = checked_router(
    prefix="/api/v1/tenants/{tenant_id}/modules/{module_id}/messenger", tags=["messenger"]
)


@router.get("/types", dependencies=[paged_by()])
@tenant_work
def messenger_types(tenant_id: TenantDep, module_id: str, host: HostDep) -> MessengerTypes:
    """`CRM_Marketing_GetMessengerTypes` → `{"types": ["Telegram", ...]}`."""
    types = host.invoker.call(tenant_id, module_id, "CRM_Marketing_GetMessengerTypes")
    return MessengerTypes(types=[getattr(t, "value", t) for t in types])


@router.get("/bots", dependencies=[paged_by()])
@tenant_work
def messenger_bots(tenant_id: TenantDep, module_id: str, host: HostDep) -> MessengerBots:
    """`CRM_Marketing_GetMessengerBots` → `{"bots": [{id, name, type, description}]}`."""
    bots = host.invoker.call(tenant_id, module_id, "CRM_Marketing_GetMessengerBots")
    return MessengerBots(
        bots=[MessengerBotOut.model_validate(bot.model_dump(mode="json")) for bot in bots]
    )
