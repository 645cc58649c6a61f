"""The shapes of the HTTP API: one pydantic model per resource, camelCase on the wire.

Why a model per resource and not dicts: every route declares its response model, so
``/openapi.json`` documents every answer and API clients can be generated from it
(``tests/host/test_openapi_responses.py`` proves no 2xx JSON answer is left untyped).

Where the line runs (the decision this module documents):

- **The domain layer returns frozen dataclasses** (``TenantInfo``, ``CampaignView``,
  ``TemplateView``, ...): snake_case attributes, ``datetime`` values, no JSON names and no
  ``as_dict()``. Services, the CLI and the flows work with those objects; they do not depend
  on pydantic's wire configuration or on FastAPI. (One exception for now: a module
  version's detail is read from the stored, immutable ``ModuleVersion`` row, the object the
  registry hands out.)
- **The API edge converts them** with ``Model.model_validate(obj)`` (``from_attributes``):
  the models here name the fields in snake_case, as the dataclasses do, and the
  ``to_camel`` alias generator gives the JSON names of SPEC §7 (``webhookUrl``,
  ``previousVersion``). Where a JSON name is not the camelCase of the attribute
  (``tenant`` for ``tenant_id``), the model says so with ``validation_alias``.
- Times leave as ``datetime.isoformat()`` (``+00:00``, as the API always answered), not
  pydantic's ``Z`` form: clients parse the strings they always got.
- Request bodies use the same base: their fields are single words or declared in camelCase,
  so what a client may send is unchanged; ``extra="forbid"`` still names an unknown field.
- The CLI works with the domain objects and prints an answer's JSON through these models
  (``campaign status --json`` prints what ``GET .../campaigns/{id}`` answers); the demo
  scenario, a client of the HTTP API, parses every answer into them, so a drift between
  server and client is a validation error naming the field, not a ``KeyError`` far away.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

IsoTime = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""A time as the API has always written it: ``datetime.isoformat()``."""


class ApiModel(BaseModel):
    """Base of every body and answer: camelCase JSON names, snake_case attributes, built
    from a domain dataclass by attribute (or from a stored JSON answer by name)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        from_attributes=True,
    )


def _from(*names: str) -> Any:
    """A field read from the domain object's attribute of another name, or from its JSON
    name (a stored answer); the domain name comes first, so that an attribute of the JSON
    name with another meaning (an ORM row's integer ``id``) is not taken instead."""
    return AliasChoices(*names)


# --- meta --------------------------------------------------------------------------------


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


# --- modules -----------------------------------------------------------------------------


class VersionOut(ApiModel):
    id: str
    version: str
    name: str
    kind: str = Field(description="email or messenger")
    functions: list[str] = Field(description="CRM_Marketing_* functions the script defines")
    uploaded_at: IsoTime


class ModuleOut(ApiModel):
    id: str
    kind: str
    name: str = Field(description="Name in the latest version's manifest")
    latest_version: str
    versions: list[VersionOut] = Field(description="Oldest first")


class VersionDetail(ApiModel):
    id: str = Field(validation_alias=_from("module_id", "id"))
    version: str
    functions: list[str]
    manifest: dict[str, Any] = Field(description="Validated, defaults filled in")
    script: str = Field(description="As uploaded")
    uploaded_at: IsoTime


class CertificationCheck(ApiModel):
    name: str
    passed: bool
    details: list[str]


class CertificationOut(ApiModel):
    """A version's certification report; ``valid``: it is bound to this version's content
    and its sealed digest verifies."""

    format: int
    module: str
    version: str
    content_hash: str
    passed: bool
    checks: list[CertificationCheck]
    certified_at: datetime
    certified_by: str
    digest: str
    valid: bool


class VersionRemoved(ApiModel):
    id: str
    version: str
    removed: bool = True


# --- tenants -----------------------------------------------------------------------------


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
    tenant: str = Field(validation_alias=_from("tenant_id", "tenant"))
    module: str = Field(validation_alias=_from("module_id", "module"))
    version: str
    previous_version: str | None = Field(
        validation_alias=_from("previous_version", "previousVersion")
    )
    enabled: bool
    settings: dict[str, Any] = Field(description="Secrets appear only as a 'set' marker")
    webhook_url: str = Field(validation_alias=_from("webhook_url", "webhookUrl"))


# --- contacts ----------------------------------------------------------------------------


class ContactsUpserted(ApiModel):
    ids: list[str] = Field(description="One id per input row, in input order")
    created: int
    updated: int


class ContactOut(ApiModel):
    """A contact in a listing: the categories it unsubscribed from, by name."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    unsubscribed_categories: list[str]
    created_at: IsoTime
    updated_at: IsoTime


class ContactPage(ApiModel):
    items: list[ContactOut]
    next: str | None = Field(description="`after` of the next page; null on the last one")


class UnsubscriptionOut(ApiModel):
    category: str
    module: str | None = Field(description="Module whose webhook unsubscribed it")
    at: IsoTime


class ContactDetail(ApiModel):
    """One contact, with when and through which module it left each category."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    unsubscribed_categories: list[UnsubscriptionOut] = Field(
        validation_alias=_from("unsubscribed", "unsubscribedCategories")
    )
    created_at: IsoTime
    updated_at: IsoTime


class ContactErased(ApiModel):
    id: str = Field(validation_alias=_from("contact_id", "id"))
    erased: bool = True
    deliveries_anonymised: int = Field(validation_alias=_from("deliveries", "deliveriesAnonymised"))
    webhook_receipts_redacted: int = Field(
        validation_alias=_from("webhook_receipts", "webhookReceiptsRedacted")
    )
    invocations_redacted: int = Field(validation_alias=_from("invocations", "invocationsRedacted"))
    outbox_deleted: int = Field(validation_alias=_from("outbox", "outboxDeleted"))
    suppressions_kept: int = Field(
        validation_alias=_from("suppressions", "suppressionsKept"),
        description="Hashed addresses kept so that an unsubscribed person stays unsubscribed "
        "when imported again",
    )


class ExportedContactOut(ApiModel):
    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    created_at: IsoTime
    updated_at: IsoTime


class ExportedDeliveryOut(ApiModel):
    campaign_id: str
    campaign_name: str
    module: str
    email: str | None
    phone: str | None
    status: str = Field(description="DeliveryStatus")
    history: list[Any]
    updated_at: IsoTime


class ExportedReceiptOut(ApiModel):
    id: int
    module: str
    received_at: IsoTime
    status: int
    skipped: list[Any]
    error: str | None
    actions: list[Any] | None = Field(None, description="The actions the module returned")


class ExportedMailOut(ApiModel):
    id: int
    module: str
    recipient: str
    subject: str
    html: str
    status: str
    created_at: IsoTime
    sent_at: IsoTime | None


class ExportedInvocationOut(ApiModel):
    id: int
    module: str
    function: str
    started_at: IsoTime
    log: str | None
    error: str | None


class ContactExport(ApiModel):
    contact: ExportedContactOut
    unsubscriptions: list[UnsubscriptionOut]
    deliveries: list[ExportedDeliveryOut]
    webhook_receipts: list[ExportedReceiptOut] = Field(
        description="Receipts mentioning the contact"
    )
    outbox: list[ExportedMailOut] = Field(description="Mail addressed to the contact")
    invocations: list[ExportedInvocationOut] = Field(
        description="Calls whose log mentions the contact"
    )


# --- templates ---------------------------------------------------------------------------


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


# --- messenger ---------------------------------------------------------------------------


class MessengerTypes(ApiModel):
    types: list[str] = Field(description="AccountType values", examples=[["Telegram"]])


class MessengerBotOut(ApiModel):
    id: str
    name: str
    type: str = Field(description="AccountType")
    description: str | None


class MessengerBots(ApiModel):
    bots: list[MessengerBotOut]


# --- invocation log ----------------------------------------------------------------------


class InvocationOut(ApiModel):
    id: int
    module: str
    version: str
    function: str
    started_at: IsoTime
    duration_ms: float
    outcome: str = Field(description="ok, not_implemented, or a failure kind (SPEC §7)")
    error: str | None
    error_line: int | None
    log: str | None = Field(description="Captured output, secrets masked")
    fetches: list[dict[str, Any]] = Field(description="method, host, status, ms of each fetch")
    cpu_ms: float | None
    peak_memory_kb: int | None
    request_id: str | None = Field(
        description="`X-Request-ID` of the HTTP request that caused the call; null for "
        "background work (campaign jobs, acknowledge-first webhooks)"
    )


class InvocationPage(ApiModel):
    items: list[InvocationOut]
    next_before: int | None = Field(description="`before` of the next page; null on the last")


# --- campaigns ---------------------------------------------------------------------------


class CampaignQueued(ApiModel):
    id: str
    status: str
    stage: str


class CampaignProgressOut(ApiModel):
    stage: str
    total: int
    exported: int
    prepared: int
    skipped: int
    skipped_by: dict[str, int] = Field(
        description="Why recipients were left out: unsubscribed, bounced, complained, "
        "noAddress, category"
    )
    batches: int
    batch_size: int
    percent: float


class CampaignStatsOut(ApiModel):
    values: dict[str, int] | None = Field(
        description="CampaignStats (total, sent, delivered, ...); null when never fetched"
    )
    fetched_at: IsoTime | None
    stale: bool = Field(description="The module failed; these are the last cached values")
    error: str | None


class CampaignAttentionOut(ApiModel):
    reason: str
    at: IsoTime


class CampaignOut(ApiModel):
    id: str
    module: str
    module_version: str
    type: str = Field(description="CampaignType")
    name: str
    status: str = Field(description="CampaignStatus")
    external_id: str | None
    error: str | None
    cancel_requested: bool
    progress: CampaignProgressOut
    created_at: IsoTime
    finished_at: IsoTime | None
    attention: CampaignAttentionOut | None = Field(
        None,
        description="Set while an admin must resolve the campaign "
        "(POST .../campaigns/{id}/resolve): it may or may not exist in the service",
    )
    stats: CampaignStatsOut | None = Field(
        description="Only on the single-campaign call, once it exists in the service"
    )


class DeliveryOut(ApiModel):
    contact_id: str
    email: str | None
    phone: str | None
    status: str = Field(description="DeliveryStatus")
    history: list[dict[str, Any]]
    updated_at: IsoTime


class DeliveryPage(ApiModel):
    items: list[DeliveryOut]
    next: str | None = Field(description="`after` of the next page; null on the last one")


# --- webhooks and outbox -----------------------------------------------------------------


class WebhookReceiptOut(ApiModel):
    id: int
    module: str
    received_at: IsoTime
    status: int = Field(description="HTTP status answered")
    applied: int = Field(description="Actions applied")
    skipped: list[Any] = Field(description="Actions skipped, with their reasons")
    error: str | None
    version: str | None = Field(None, description="The module version that served it")
    request_id: int | None = Field(None, description="The stored request (for replay)")
    replay_of: int | None = Field(None, description="The receipt this one replayed")


class StoredRequestOut(ApiModel):
    """A stored webhook request, masked: the URL's token, credential and signature headers
    and every secret setting are `***`; `body` is a preview."""

    id: int
    module: str
    received_at: str
    size_bytes: int
    method: str
    url: str
    headers: list[list[str]]
    body: str
    body_truncated: bool


class WebhookReplayOut(ApiModel):
    replay_of: int = Field(description="The receipt whose request was replayed")
    version: str
    dry_run: bool
    receipt: int | None = Field(description="The new receipt (None for a dry run)")
    status: int
    applied: list[Any]
    skipped: list[Any]
    error: str | None = Field(None, description="Why the module call failed, if it did")


class ShadowSideOut(ApiModel):
    """What one version did with a stored request (`source`: `receipt`, or `rerun` for a
    receipt older than kept actions) or would do (`shadow`); `none` when nothing is known."""

    version: str | None
    source: str
    status: int | None = Field(description="The reply status (500/501 when the call failed)")
    error: str | None = Field(description="`kind: message` when the call failed")
    actions: list[Any] | None = Field(
        description="The returned actions (secrets masked; a SendEmail body as its length "
        "and SHA-256); null when the call failed"
    )
    duration_ms: float | None
    unmatched_fetches: list[str] = Field(
        description="Fetches refused because no recording answered them (never made)"
    )
    storage_writes: list[str] = Field(
        description="Storage keys the call wrote and host callbacks it was refused "
        "(none of it stored)"
    )
    fetches: list[Any]


class ShadowResultOut(ApiModel):
    request: int = Field(description="The stored webhook request")
    received_at: IsoTime
    verdict: str = Field(description="`same`, `differs` or `no_baseline`")
    current: ShadowSideOut
    candidate: ShadowSideOut
    only_current: list[Any] = Field(description="Actions only the current version returned")
    only_candidate: list[Any] = Field(description="Actions only the shadowed version returned")
    reordered: bool = Field(description="The same actions, in another order")


class ShadowRunOut(ApiModel):
    tenant: str
    module: str
    version: str = Field(description="The shadowed version")
    current_version: str = Field(description="The version pinned for the tenant")
    matched: int = Field(description="Stored requests in the window (at most `limit` ran)")
    stopped: str = Field(description="`complete`, or `time` when the time was up first")
    elapsed_ms: float
    same: int
    differs: int
    no_baseline: int
    requests: list[ShadowResultOut]


class OutboxMessageOut(ApiModel):
    id: int
    module: str
    recipient: str
    subject: str
    status: str = Field(description="queued, sent or failed")
    attempts: int
    error: str | None
    created_at: IsoTime
    sent_at: IsoTime | None


class AuditEntryOut(ApiModel):
    id: int
    at: IsoTime
    actor: str = Field(
        description="Who: a console user's email, an admin token by name, or a tenant's API key"
    )
    action: str = Field(description="What, in words (or the method and path)")
    method: str
    path: str
    status: int
    client: str = Field(description="The client's address (see CRM_HOST_TRUSTED_PROXIES)")


class AuditPage(ApiModel):
    items: list[AuditEntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page")


class JobOut(ApiModel):
    id: int
    status: str = Field(description="todo, doing or failed (finished jobs are deleted)")
    campaign_id: str
    tenant_id: str | None
    attempts: int = Field(
        description="Runs that ended in a retry: crashes, a lease held elsewhere, a shutdown"
    )
    crashes: int = Field(description="Runs that crashed (the retry limit counts these)")
    error: str | None = Field(description="The last crash, masked; null if it never crashed")
    error_at: IsoTime | None
    deferred_at: IsoTime | None
    updated_at: IsoTime | None = Field(description="The job's last status change")
    scheduled_at: IsoTime | None = Field(description="When a retried job may run again")


class JobPage(ApiModel):
    items: list[JobOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page")
