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

from host.api.api_model import ApiModel, IsoTime
from host.api.schemas.admin import (
    AuditEntryOut,
    AuditPage,
    JobOut,
    JobPage,
    JobRetried,
)
from host.api.schemas.campaigns import (
    CampaignAttentionOut,
    CampaignOut,
    CampaignProgressOut,
    CampaignQueued,
    CampaignStatsOut,
    DeliveryOut,
    DeliveryPage,
)
from host.api.schemas.contacts import (
    ContactDetail,
    ContactErased,
    ContactExport,
    ContactOut,
    ContactPage,
    ContactsUpserted,
    ExportedContactOut,
    ExportedDeliveryOut,
    ExportedInvocationOut,
    ExportedMailOut,
    ExportedReceiptOut,
    UnsubscriptionOut,
)
from host.api.schemas.invocations import (
    InvocationOut,
    InvocationPage,
)
from host.api.schemas.messenger import (
    MessengerBotOut,
    MessengerBots,
    MessengerTypes,
)
from host.api.schemas.meta import (
    Health,
    PluginOut,
    SandboxLayersOut,
    SystemOut,
)
from host.api.schemas.modules import (
    CertificationCheck,
    CertificationOut,
    ModuleOut,
    VersionDetail,
    VersionOut,
    VersionRemoved,
)
from host.api.schemas.templates import (
    TemplateHtml,
    TemplateImportOut,
    TemplateOut,
)
from host.api.schemas.tenants import (
    EnablementOut,
    EnablementUpdate,
    TenantApiKey,
    TenantCreate,
    TenantCreated,
    TenantDeleted,
    TenantOut,
)
from host.api.schemas.webhooks import (
    OutboxMessageOut,
    ShadowResultOut,
    ShadowRunOut,
    ShadowSideOut,
    StoredRequestOut,
    WebhookReceiptOut,
    WebhookReplayOut,
)

__all__ = [
    "ApiModel",
    "AuditEntryOut",
    "AuditPage",
    "CampaignAttentionOut",
    "CampaignOut",
    "CampaignProgressOut",
    "CampaignQueued",
    "CampaignStatsOut",
    "CertificationCheck",
    "CertificationOut",
    "ContactDetail",
    "ContactErased",
    "ContactExport",
    "ContactOut",
    "ContactPage",
    "ContactsUpserted",
    "DeliveryOut",
    "DeliveryPage",
    "EnablementOut",
    "EnablementUpdate",
    "ExportedContactOut",
    "ExportedDeliveryOut",
    "ExportedInvocationOut",
    "ExportedMailOut",
    "ExportedReceiptOut",
    "Health",
    "InvocationOut",
    "InvocationPage",
    "IsoTime",
    "JobOut",
    "JobPage",
    "JobRetried",
    "MessengerBotOut",
    "MessengerBots",
    "MessengerTypes",
    "ModuleOut",
    "OutboxMessageOut",
    "PluginOut",
    "SandboxLayersOut",
    "ShadowResultOut",
    "ShadowRunOut",
    "ShadowSideOut",
    "StoredRequestOut",
    "SystemOut",
    "TemplateHtml",
    "TemplateImportOut",
    "TemplateOut",
    "TenantApiKey",
    "TenantCreate",
    "TenantCreated",
    "TenantDeleted",
    "TenantOut",
    "UnsubscriptionOut",
    "VersionDetail",
    "VersionOut",
    "VersionRemoved",
    "WebhookReceiptOut",
    "WebhookReplayOut",
]
