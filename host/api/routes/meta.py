"""Operational routes: health and the plugin listing (datasette's ``/-/plugins``)."""

from __future__ import annotations

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep
from host.api.paging import paged_by
from host.api.schemas import Health, PluginOut
from host.plugin_manager import describe_plugins

router = checked_router(tags=["meta"])


@router.get("/healthz")
async def health() -> Health:
    """Answered on the event loop: no thread pool, database or sandbox to queue behind."""
    return Health(status="ok")


@router.get("/-/plugins", dependencies=[paged_by()])
def plugins(host: HostDep, _admin: AdminDep) -> list[PluginOut]:
    """Registered plugins and the hooks each implements."""
    return [PluginOut.model_validate(p) for p in describe_plugins(host.hooks)]
