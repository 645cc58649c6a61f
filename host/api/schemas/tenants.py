"""API models: tenants, their API keys and module enablements."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime, from_names


class TenantCreate(ApiModel):
    id: str = Field(description="Slug: lowercase letters, digits, '-', '_'", examples=["acme"])
    name: str = Field(examples=["Acme Corp"])


class TenantCreated(ApiModel):
    id: str
    name: str
    api_key: str = Field(description="Shown once; store it now.")


class TenantOut(ApiModel):
    id: str
    name: str
    created_at: IsoTime


class TenantApiKey(ApiModel):
    id: str
    api_key: str = Field(description="The new key, shown once; the old one no longer works.")


class TenantDeleted(ApiModel):
    id: str
    deleted: bool = True
    purge: str = Field(
        description="`pending`: the tenant is gone from the API; its rows are purged in "
        "the background, in batches, resuming after a restart."
    )


class EnablementUpdate(ApiModel):
    version: str | None = Field(None, description="Version to pin; default: current or latest")
    settings: dict[str, Any] | None = Field(
        None,
        description="Settings: PUT replaces the stored ones, PATCH merges; a secret left out "
        "keeps its stored value, null removes it.",
    )
    enabled: bool | None = Field(None, description="Default: true for a new enablement")


class EnablementOut(ApiModel):
    tenant: str = Field(validation_alias=from_names("tenant_id", "tenant"))
    module: str = Field(validation_alias=from_names("module_id", "module"))
    version: str
    previous_version: str | None = Field(
        validation_alias=from_names("previous_version", "previousVersion")
    )
    enabled: bool
    settings: dict[str, Any] = Field(description="Secrets appear only as a 'set' marker")
    webhook_url: str = Field(validation_alias=from_names("webhook_url", "webhookUrl"))
