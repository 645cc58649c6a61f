"""Operational routes: health and the plugin listing (datasette's ``/-/plugins``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from host.api.deps import AdminDep, HostDep
from host.plugin_manager import describe_plugins

router = APIRouter(tags=["meta"])


@router.get("/healthz")
async def health() -> dict[str, str]:
    """Answered on the event loop: no thread pool, database or sandbox to queue behind."""
    return {"status": "ok"}


@router.get("/-/plugins")
def plugins(host: HostDep, _admin: AdminDep) -> list[dict[str, Any]]:
    return describe_plugins(host.hooks)
