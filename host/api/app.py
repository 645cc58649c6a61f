"""The FastAPI application of a Host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from host.api.errors import install_error_handlers
from host.api.executors import RouteExecutors
from host.api.routes import (
    campaigns,
    contacts,
    invocations,
    messenger,
    meta,
    modules,
    templates,
    tenants,
    webhooks,
)
from host.api.webhook_gate import WebhookGate
from host.platform import Host

DESCRIPTION = """Runs CRM Marketing integration modules for many tenants.

Admin calls carry `Authorization: Bearer <admin token>`; tenant calls carry
`Authorization: Bearer <tenant API key>` (the admin token works there too). Every error
answers `{"error", "message", "problems": [{"location", "message"}]}`."""


def create_app(host: Host) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        host.campaign_runner.start()  # resumes campaigns a crash or restart interrupted
        yield
        host.campaign_runner.stop()
        executors.close()

    app = FastAPI(
        title="crm-module-host", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
    )
    executors = RouteExecutors(host.settings)
    app.state.host = host
    app.state.executors = executors
    app.state.webhook_gate = WebhookGate(host.settings)
    install_error_handlers(app)
    for router in (
        meta.router,
        modules.router,
        tenants.router,
        webhooks.router,
        contacts.router,
        templates.router,
        messenger.router,
        invocations.router,
        campaigns.router,
    ):
        app.include_router(router)
    return app
