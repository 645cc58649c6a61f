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


class TenantApiKey(ApiModel):
    id: str
    apiKey: str = Field(description="The new key, shown once; the old one no longer works.")


class TenantDeleted(ApiModel):
    id: str
    deleted: bool = True
    purge: str = Field(
        description="`pending`: the tenant is gone from the API; its rows are purged in "
        "the background, in batches, resuming after a restart."
    )


class VersionRemoved(ApiModel):
    id: str
    version: str
    removed: bool = True


class ContactsUpserted(ApiModel):
    ids: list[str] = Field(description="One id per input row, in input order")
    created: int
    updated: int


class ContactOut(ApiModel):
    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    unsubscribedCategories: list[str]
    createdAt: str
    updatedAt: str


class ContactPage(ApiModel):
    items: list[ContactOut]
    next: str | None = Field(description="`after` of the next page; null on the last one")


class ContactErased(ApiModel):
    id: str
    erased: bool
    deliveriesAnonymised: int
    webhookReceiptsRedacted: int
    invocationsRedacted: int
    outboxDeleted: int
    suppressionsKept: int = Field(
        description="Hashed addresses kept so that an unsubscribed person stays unsubscribed "
        "when imported again"
    )


class ContactExport(ApiModel):
    contact: dict[str, Any]
    unsubscriptions: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    webhookReceipts: list[dict[str, Any]] = Field(description="Receipts mentioning the contact")
    outbox: list[dict[str, Any]] = Field(description="Mail addressed to the contact")
    invocations: list[dict[str, Any]] = Field(description="Calls whose log mentions the contact")


class CampaignQueued(ApiModel):
    id: str
    status: str
    stage: str
