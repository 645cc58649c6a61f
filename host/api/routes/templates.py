"""Tenant routes for email templates: import from a module, list, author locally, preview,
publish. Module calls are blocking (sandbox), so these are plain ``def`` routes that run in
the thread pool."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Query
from pydantic import Field

from host.api.bodies import checked_router
from host.api.deps import HostDep, TenantDep
from host.api.executors import tenant_work
from host.api.paging import paged_by
from host.api.schemas import ApiModel, TemplateHtml, TemplateImportOut, TemplateOut
from host.marketing.templates import DEFAULT_MAX_PAGES, DEFAULT_PAGE_SIZE

router = checked_router(prefix="/api/v1/tenants/{tenant_id}", tags=["templates"])


class TemplateCreate(ApiModel):
    module: str = Field(description="Module (enabled for the tenant) it will be published to")
    name: str = Field(min_length=1, max_length=500)
    subject: str | None = None
    html: str


class TemplatePublish(ApiModel):
    name: str | None = Field(None, min_length=1, max_length=500)
    subject: str | None = None
    html: str | None = Field(None, description="Replaces the stored HTML before publishing")


@router.post("/modules/{module_id}/templates/import")
@tenant_work
def import_templates(
    tenant_id: TenantDep,
    module_id: str,
    host: HostDep,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=500)] = DEFAULT_PAGE_SIZE,
    max_pages: Annotated[int, Query(alias="maxPages", ge=1, le=1000)] = DEFAULT_MAX_PAGES,
) -> TemplateImportOut:
    """Page through the module's `CRM_Marketing_ImportTemplates` and upsert the templates by
    externalId → `{imported, pages, truncated, created, updated}`. All or nothing: when a page
    fails, nothing is stored and the answer is the module's error (502, or 501)."""
    report = host.templates.import_templates(
        tenant_id, module_id, page_size=page_size, max_pages=max_pages
    )
    return TemplateImportOut.model_validate(report)


@router.get("/templates", dependencies=[paged_by()])
@tenant_work
def list_templates(
    tenant_id: TenantDep,
    host: HostDep,
    module: Annotated[str | None, Query(description="Only this module's templates")] = None,
) -> list[TemplateOut]:
    """The tenant's templates, without their HTML (`hasHtml` says whether one is stored)."""
    host.tenants.get(tenant_id)
    return [TemplateOut.model_validate(t) for t in host.templates.of_tenant(tenant_id, module)]


@router.post("/templates", status_code=201)
@tenant_work
def create_template(tenant_id: TenantDep, body: TemplateCreate, host: HostDep) -> TemplateOut:
    """Author a template locally; publish it to give it an externalId in the service."""
    view = host.templates.create(tenant_id, body.module, body.name, body.html, body.subject)
    return TemplateOut.model_validate(view)


@router.get("/templates/{template_id}")
@tenant_work
def show_template(tenant_id: TenantDep, template_id: str, host: HostDep) -> TemplateOut:
    return TemplateOut.model_validate(host.templates.get(tenant_id, template_id))


@router.get("/templates/{template_id}/html")
@tenant_work
def template_html(
    tenant_id: TenantDep,
    template_id: str,
    host: HostDep,
    refresh: Annotated[bool, Query(description="Ask the module even if cached")] = False,
) -> TemplateHtml:
    """The template's HTML as JSON `{id, html}`: stored, or asked of the module with
    `CRM_Marketing_GetTemplateHTML` and cached. JSON rather than `text/html`, so HTML from a
    third-party service is never rendered on the API's origin."""
    html = host.templates.html(tenant_id, template_id, refresh=refresh)
    return TemplateHtml(id=template_id, html=html)


@router.post("/templates/{template_id}/publish")
@tenant_work
def publish_template(
    tenant_id: TenantDep,
    template_id: str,
    host: HostDep,
    body: Annotated[TemplatePublish | None, Body()] = None,
) -> TemplateOut:
    """`CRM_Marketing_SetTemplateHTML` with the template (fields in the body replace the
    stored ones first); stores the returned id as `externalId`."""
    body = body or TemplatePublish(name=None, subject=None, html=None)
    view = host.templates.publish(
        tenant_id, template_id, name=body.name, subject=body.subject, html=body.html
    )
    return TemplateOut.model_validate(view)
