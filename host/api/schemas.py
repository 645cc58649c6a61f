"""Bodies of the admin API (camelCase, as in SPEC §7)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(ApiModel):
    id: str = Field(description="Slug: lowercase letters, digits, '-', '_'", examples=["acme"])
    name: str = Field(examples=["Acme Corp"])


class TenantCreated(ApiModel):
    id: str
    name: str
    apiKey: str = Field(description="Shown once; store it now.")


class EnablementUpdate(ApiModel):
    version: str | None = Field(None, description="Version to pin; default: current or latest")
    settings: dict[str, Any] | None = Field(
        None,
        description="Settings: PUT replaces the stored ones, PATCH merges; a secret left out "
        "keeps its stored value, null removes it.",
    )
    enabled: bool | None = Field(None, description="Default: true for a new enablement")


class EnablementOut(ApiModel):
    tenant: str
    module: str
    version: str
    previousVersion: str | None
    enabled: bool
    settings: dict[str, Any] = Field(description="Secrets appear only as a 'set' marker")
    webhookUrl: str


class SandboxLayersOut(ApiModel):
    layers: list[str] = Field(
        description="Layers in force in every worker: seccomp, landlock, netns, uid"
    )
    required: list[str] = Field(description="CRM_HOST_SANDBOX_REQUIRE")
    missingRequired: list[str]
    workerUid: int | None = Field(description="The uid sandbox workers run as")
    landlockAbi: int = Field(description="Landlock ABI in force; 0 = none")
    notes: list[str] = Field(description="Why a layer is not in force, as the workers said")


class SystemOut(ApiModel):
    version: str
    sandbox: SandboxLayersOut
