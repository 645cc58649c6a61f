"""The CRM_Marketing_* contract, defined once (SPEC §2): every function each module kind may
define, with its parameters and their optionality, the value the host accepts back, when the
host calls it, what it retries, and the words the CRM, the scaffold and the guide use for it.

Everything else is derived from these definitions, so the copies cannot disagree: the pluggy
hookspecs (:mod:`host.hookspecs`) and the sandbox bridge's hook implementations are built
from them at import time; the typed SDK (``crm_module_sdk``) and the guide's reference
sections are generated from them into checked-in files by :mod:`host.contract.generate`
(a test regenerates them and compares); ``crm-host module new`` writes its stubs from them.
"""

from __future__ import annotations

from host.contract.enums import AccountType, CampaignType, ModuleKind
from host.contract.function_model import ContractFunction, Parameter
from host.contract.types import (
    CampaignStats,
    CreateCampaignRequest,
    CreateCampaignResponse,
    CreateMessengerCampaignRequest,
    FetchRequest,
    ImportTemplate,
    MessengerBot,
    WebhookResult,
)

CONTRACT_VERSION = "1.0"
"""The contract these definitions describe. A manifest may declare the version it was written
for (``contractVersion``); the host refuses a version it does not know rather than guess."""

CONTRACT_VERSIONS = (CONTRACT_VERSION,)
"""Every contract version the host serves; a new version adds itself here."""


_CREATE_RETRY = (
    "Called again with the same campaignId only if the module declares it idempotent: the "
    "job records that it is creating before the call, so a host that dies during it does not "
    "know whether the campaign exists in the service. With "
    '`"idempotent": {"{name}": true}` in the manifest it calls the function again, and the '
    "module must then create nothing new for a campaignId it already created (look it up "
    "in the service, or record it with storage.set(key, value, durable=True) right after the "
    "creating call) and return that campaign; without it the host creates nothing, keeps "
    "the campaign's status and flags it as needing attention, for an admin who enters the "
    "service's id or marks it not created (then it is called again). An error marks the "
    "campaign failed with that error and no externalId."
)
_WEBHOOK_RETRY = (
    "The host does not retry: an exception (or an invalid return value) answers 500 and "
    "applies nothing, so the service's own retry delivers the request again; actions must "
    "therefore be safe to apply twice, and the host skips those that change nothing."
)


IMPORT_TEMPLATES = ContractFunction(
    name="CRM_Marketing_ImportTemplates",
    params=(Parameter("offset", int), Parameter("limit", int)),
    returns=list[ImportTemplate],
    summary="Import email templates from the service, one page at a time.",
    called_when=(
        'Called when a user presses "import templates": first with offset=0, then again with '
        "offset + limit while the module returns exactly `limit` templates; a page with fewer "
        "ends the import, and a module that never does is stopped after 100 pages (the import "
        "is then reported truncated)."
    ),
    arguments="`offset` and `limit` page through the service's templates.",
    returns_doc=(
        "Return a list of CRM_Marketing_ImportTemplate(externalId=..., name=..., subject=..., "
        "html=...); the host upserts the templates by externalId."
    ),
    retry=(
        "The host never retries a page: the import is all-or-nothing, so when a page fails "
        "nothing of the import is stored and the error is reported; importing again starts "
        "from offset 0 and never duplicates a template."
    ),
    feature="importing templates from the service",
)

EXPORT_CONTACTS = ContractFunction(
    name="CRM_Marketing_ExportContacts",
    params=(Parameter("contactIds", list[str]),),
    returns=None,
    summary="Sync CRM contacts to the service's subscriber list.",
    called_when=(
        "Called before a campaign is sent, once per chunk of the campaign's eligible recipients."
    ),
    arguments=(
        "`contactIds` are CRM contact ids: read the contacts with crm.contacts(contactIds) "
        "(id, name, email, phone, status) and create or update them in the service."
    ),
    returns_doc="Return nothing.",
    retry=(
        "At least once per chunk: ExportContacts may be called again with the same chunk after "
        "a crash (a host that dies between the call and recording the chunk repeats it on "
        "restart), so make it idempotent: create or update by email (an upsert), never add a "
        "second subscriber; an error fails the campaign."
    ),
    feature="syncing contacts to the service before a send",
)

PREPARE_CAMPAIGN = ContractFunction(
    name="CRM_Marketing_PrepareCampaign",
    params=(
        Parameter("campaignId", str),
        Parameter("type", CampaignType),
        Parameter("contacts", list[str]),
    ),
    returns=None,
    summary="Prepare one batch of a campaign's recipients, e.g. add them to a mailing list.",
    called_when=(
        "Called before the campaign is created in the service, once per batch of recipients "
        "(1,000 by default), so a large campaign calls it several times."
    ),
    arguments=(
        "`campaignId` is the CRM's campaign id, `type` the campaign type, `contacts` "
        "{recipients}. Keep what the create call needs in storage."
    ),
    returns_doc="Return nothing.",
    retry=(
        "At least once per batch: PrepareCampaign may be called again with the same batch "
        "after a crash (a host that dies between the call and recording the batch repeats it "
        "on restart; batches it recorded never come again), so make it idempotent: add "
        "recipients with the service's upsert semantics or dedupe by address, so that each "
        "is in the campaign's list once, and find a list or segment an earlier call created "
        "by its name instead of creating a second one; an error fails the campaign."
    ),
    feature="preparing the recipients of a campaign",
)

CREATE_CAMPAIGN = ContractFunction(
    name="CRM_Marketing_CreateCampaign",
    params=(Parameter("request", CreateCampaignRequest),),
    returns=CreateCampaignResponse,
    summary="Create (and send or schedule) the email campaign in the service.",
    called_when="Called once, after the last PrepareCampaign batch.",
    arguments=(
        "`request` has campaignId, name, type, subject, senderName, senderEmail and "
        "templateExternalId, html, scheduledAt (ISO 8601) and categoryExternalId, each None "
        "when not set (the host accepts a campaign with neither html nor template: raise if "
        "the service cannot send without one)."
    ),
    returns_doc=(
        "Return CRM_Marketing_CreateCampaignResponse(externalId=<the service's campaign id>, "
        "status=...); status defaults to Sending, or Scheduled when scheduledAt is set."
    ),
    retry=_CREATE_RETRY.replace("{name}", "CRM_Marketing_CreateCampaign"),
    feature="sending email campaigns",
)

CREATE_MESSENGER_CAMPAIGN = ContractFunction(
    name="CRM_Marketing_CreateMessengerCampaign",
    params=(Parameter("request", CreateMessengerCampaignRequest),),
    returns=CreateCampaignResponse,
    summary="Create the messenger campaign (the message) in the messenger.",
    called_when="Called once, after the last PrepareCampaign batch.",
    arguments=(
        "`request` has campaignId, name, campaignType (an AccountType, one of "
        "GetMessengerTypes), botId (one of GetMessengerBots), text and scheduledAt (None "
        "when not set)."
    ),
    returns_doc=(
        "Return CRM_Marketing_CreateCampaignResponse(externalId=..., status=...); status "
        "defaults to Sending, or Scheduled when scheduledAt is set."
    ),
    retry=_CREATE_RETRY.replace("{name}", "CRM_Marketing_CreateMessengerCampaign"),
    feature="sending messenger campaigns",
)

GET_CAMPAIGN_STATS = ContractFunction(
    name="CRM_Marketing_GetCampaignStats",
    params=(Parameter("campaignExternalId", str),),
    returns=CampaignStats,
    summary="Read a campaign's statistics from the service.",
    called_when=(
        "Called when a user views the statistics of a campaign and the cached value is older "
        "than its TTL (60 s by default)."
    ),
    arguments=(
        "`campaignExternalId` is the id the service gave the campaign (what the create call "
        "returned)."
    ),
    returns_doc=(
        "Return CRM_Marketing_CampaignStats(total=..., sent=..., delivered=..., opened=..., "
        "clicked=..., bounced=..., unsubscribed=..., complained=..., failed=...); omitted "
        "counts are 0."
    ),
    retry=(
        "Not retried: when the call fails the host serves the last cached value marked stale "
        "(or the error, if nothing was ever fetched) and asks again only after another TTL."
    ),
    feature="campaign statistics",
)

PARSE_WEBHOOK_REQUEST = ContractFunction(
    name="CRM_Marketing_ParseWebhookRequest",
    params=(Parameter("request", FetchRequest),),
    returns=WebhookResult,
    summary="Turn a request the service sent to this module's webhook URL into CRM actions.",
    called_when=(
        "Called when an HTTP request arrives at the webhook URL the host shows for this module "
        "(one per tenant)."
    ),
    arguments=(
        "`request` has method, url, headers, query and body (the body as text; use "
        "json.loads(request.body) for JSON)."
    ),
    returns_doc=(
        'Return {"actions": [...], "response": {...}}: the actions (UpdateDeliveryStatus, '
        "Unsubscribe, UpdateCampaign, UpdateCampaignStats, SendEmail, and the host extensions "
        "Resubscribe and UpdateContact) are applied in one transaction, and `response` is sent "
        'back to the service (without one the host answers 200 {"ok": true}).'
    ),
    retry=_WEBHOOK_RETRY,
    feature="webhooks (delivery statuses, unsubscribes)",
)

GET_TEMPLATE_HTML = ContractFunction(
    name="CRM_Marketing_GetTemplateHTML",
    params=(Parameter("templateExternalId", str),),
    returns=str,
    summary="Return the HTML of a template, for its preview.",
    called_when="Called by the template preview when the host holds no HTML for the template.",
    arguments="`templateExternalId` is the template's id in the service.",
    returns_doc=(
        "Return the HTML; the host caches it until SetTemplateHTML or an import changes that "
        "template."
    ),
    retry="Not retried: an error is shown to the user, and the next preview asks again.",
    feature="template preview",
)

SET_TEMPLATE_HTML = ContractFunction(
    name="CRM_Marketing_SetTemplateHTML",
    params=(
        Parameter("html", str),
        Parameter("name", str),
        Parameter("templateExternalId", str | None),
    ),
    optional=1,
    returns=str,
    summary="Publish a template to the service.",
    called_when="Called when a template is published.",
    arguments=(
        "`html` is its content, `name` its name, and `templateExternalId` its id in the "
        "service, or None for a new template."
    ),
    returns_doc="Return the template's id in the service; the host stores it.",
    retry="Not retried: an error is shown to the user and nothing is stored.",
    feature="publishing templates to the service",
)

GET_MESSENGER_TYPES = ContractFunction(
    name="CRM_Marketing_GetMessengerTypes",
    params=(),
    returns=list[AccountType],
    summary="The messengers this module sends through.",
    called_when=(
        "Called when a user sets up a messenger campaign; the chosen one arrives as "
        "request.campaignType in CreateMessengerCampaign."
    ),
    arguments="",
    returns_doc="Return a list of AccountType, e.g. [AccountType.Telegram].",
    retry="Not retried: an error is shown to the user.",
    feature="choosing the messenger of a campaign",
)

GET_MESSENGER_BOTS = ContractFunction(
    name="CRM_Marketing_GetMessengerBots",
    params=(),
    returns=list[MessengerBot],
    summary="The bots or groups a campaign can be sent from.",
    called_when="Called when a user sets up a messenger campaign, to list its bots.",
    arguments="",
    returns_doc=(
        "Return a list of CRM_Marketing_MessengerBot(id=..., name=..., type=AccountType..., "
        "description=...)."
    ),
    retry="Not retried: an error is shown to the user.",
    feature="choosing the bot of a campaign",
)

FUNCTIONS_BY_KIND: dict[ModuleKind, tuple[ContractFunction, ...]] = {
    ModuleKind.email: (
        IMPORT_TEMPLATES,
        EXPORT_CONTACTS,
        PREPARE_CAMPAIGN,
        CREATE_CAMPAIGN,
        GET_CAMPAIGN_STATS,
        PARSE_WEBHOOK_REQUEST,
        GET_TEMPLATE_HTML,
        SET_TEMPLATE_HTML,
    ),
    ModuleKind.messenger: (
        PREPARE_CAMPAIGN,
        CREATE_MESSENGER_CAMPAIGN,
        GET_CAMPAIGN_STATS,
        PARSE_WEBHOOK_REQUEST,
        GET_MESSENGER_TYPES,
        GET_MESSENGER_BOTS,
    ),
}

ALL_FUNCTIONS: dict[str, ContractFunction] = {
    f.name: f for functions in FUNCTIONS_BY_KIND.values() for f in functions
}

HOOK_NAMES: dict[str, str] = {name: f.hook for name, f in ALL_FUNCTIONS.items()}
"""Contract function name → hook name."""


def contract_function(kind: ModuleKind | str, name: str) -> ContractFunction | None:
    """The function ``name`` as defined for modules of ``kind``, or None if it is not theirs."""
    for function in FUNCTIONS_BY_KIND[ModuleKind(kind)]:
        if function.name == name:
            return function
    return None
