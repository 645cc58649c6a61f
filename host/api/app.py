"""The FastAPI application of a Host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from host.api.audit_trail import AuditTrail
from host.api.errors import install_error_handlers
from host.api.executors import RouteExecutors
from host.api.request_id import RequestIdMiddleware
from host.api.routes import (
    audit,
    campaigns,
    contacts,
    invocations,
    jobs,
    messenger,
    meta,
    metrics,
    modules,
    shadow_runs,
    system,
    templates,
    tenants,
    webhooks,
)
from host.api.secret_masking import TenantAnswerMasking
from host.api.webhook_gate import WebhookGate
from host.api.webhook_origin import WebhookOriginGate
from host.console.mount import install_console
from host.origins import authority_of
from host.platform import Host

DESCRIPTION = """Runs CRM Marketing integration modules for many tenants.

Admin calls carry `Authorization: Bearer <admin token>`; tenant calls carry
`Authorization: Bearer <tenant API key>` (the admin token works there too). Every error
answers `{"error", "message", "problems": [{"location", "message"}]}`."""


def create_app(host: Host) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Served, the host does its background work: campaign jobs (resuming what a crash or
        # restart interrupted), the mail outbox and the purge of deleted tenants. Shutdown
        # stops that work; closing the host stays with whoever built it.
        host.start()
        yield
        host.stop()
        executors.close()

    # /docs and /redoc load Swagger UI and ReDoc from assets installed with the package (no
    # CDN: the docs work on a machine without internet access).
    app = FastAPIOffline(
        title="crm-module-host",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/docs-assets",
    )
    executors = RouteExecutors(host.settings)
    app.state.host = host
    app.state.executors = executors
    app.state.webhook_gate = WebhookGate(host.settings)
    install_error_handlers(app)
    app.add_middleware(TenantAnswerMasking, tenants=host.tenants)
    for router in (
        meta.router,
        metrics.router,
        system.router,
        modules.router,
        tenants.router,
        webhooks.router,
        contacts.router,
        templates.router,
        messenger.router,
        invocations.router,
        campaigns.router,
        shadow_runs.router,
        audit.router,
        jobs.router,
    ):
        app.include_router(router)
    install_console(app)
    app.add_middleware(AuditTrail, audit=host.audit, addresses=host.client_addresses)
    if host.settings.webhook_base_url:
        app.add_middleware(
            WebhookOriginGate, webhook_origin=authority_of(host.settings.webhook_base_url)
        )
    # added last, so outermost: every answer, a gate's refusal included, carries the id
    app.add_middleware(RequestIdMiddleware)
    return app
