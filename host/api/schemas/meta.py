"""API models: health, the system report and the plugins."""

from __future__ import annotations

from pydantic import Field

from host.api.api_model import ApiModel


class Health(ApiModel):
    status: str = Field(examples=["ok"])


class PluginOut(ApiModel):
    name: str
    hooks: list[str] = Field(description="Hook names the plugin implements, sorted")


class SandboxLayersOut(ApiModel):
    layers: list[str] = Field(
        description="Layers in force in every worker: seccomp, landlock, netns, uid"
    )
    required: list[str] = Field(description="CRM_HOST_SANDBOX_REQUIRE")
    missing_required: list[str]
    worker_uid: int | None = Field(description="The uid sandbox workers run as")
    landlock_abi: int = Field(description="Landlock ABI in force; 0 = none")
    notes: list[str] = Field(description="Why a layer is not in force, as the workers said")


class SystemOut(ApiModel):
    version: str
    sandbox: SandboxLayersOut
