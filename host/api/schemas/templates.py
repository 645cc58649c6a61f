"""API models: templates, their import and HTML."""

from __future__ import annotations

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime


class TemplateOut(ApiModel):
    id: str
    module: str
    external_id: str | None = Field(description="Id in the service; null until published")
    name: str
    subject: str | None
    has_html: bool = Field(description="Whether HTML is stored (the listing never carries it)")
    html_cached_at: IsoTime | None
    published_at: IsoTime | None
    created_at: IsoTime
    updated_at: IsoTime


class TemplateImportOut(ApiModel):
    imported: int
    pages: int
    truncated: bool = Field(description="Stopped at maxPages while the module had more")
    created: int
    updated: int


class TemplateHtml(ApiModel):
    id: str
    html: str
