"""``crm-host module new``: a module folder that validates, runs and tests from minute one.

Every function of the kind is written as a stub that raises ``NotImplementedError`` (which the
host reports as "not implemented", and ``validate`` lists with the feature it disables), with
a docstring adapted from the platform's function template: when the host calls it, what the
arguments are, what it must return. The script imports its world from ``crm_module_sdk`` so
an editor completes and type-checks it; the sandbox serves the same import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from host.contract.enums import ModuleKind
from host.contract.functions import FUNCTIONS_BY_KIND
from host.errors import InvalidInput, Problem

SLUG = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")
"""The manifest schema's id pattern."""


@dataclass(frozen=True)
class Stub:
    signature: str  # parameters and return annotation, after the function name
    doc: str


_WEBHOOK_DOC = """Turn a request the service sent to this module's webhook URL into CRM actions.

    Called when an HTTP request arrives at the webhook URL the host shows for this module
    (one per tenant). `request` has method, url, headers, query and body (the body as text;
    use json.loads(request.body) for JSON). Return {"actions": [...], "response": {...}}:
    the actions (UpdateDeliveryStatus, Unsubscribe, UpdateCampaign, UpdateCampaignStats,
    SendEmail, and the host extensions Resubscribe and UpdateContact) are applied in one
    transaction; `response` (default 200 OK) is sent back to
    the service. Raising an exception answers 500 and applies nothing.
    """

_STATS_DOC = """Read a campaign's statistics from the service.

    Called when a user views the statistics of a campaign. `campaignExternalId` is the id
    the service gave the campaign (what Create...Campaign returned). Return
    CRM_Marketing_CampaignStats(total=..., sent=..., delivered=..., opened=..., clicked=...,
    bounced=..., unsubscribed=..., complained=..., failed=...); omitted counts are 0. The host
    caches the result and serves the last value, marked stale, if this call fails.
    """

STUBS: dict[str, Stub] = {
    "CRM_Marketing_ImportTemplates": Stub(
        "(offset: int, limit: int) -> list[CRM_Marketing_ImportTemplate]",
        """Import email templates from the service, one page at a time.

    Called when a user presses "import templates". The first call has offset=0; while you
    return exactly `limit` templates the host calls again with offset + limit, and stops
    when you return fewer. Return a list of CRM_Marketing_ImportTemplate(externalId=...,
    name=..., subject=..., html=...); templates are upserted by externalId.
    """,
    ),
    "CRM_Marketing_ExportContacts": Stub(
        "(contactIds: list[str]) -> None",
        """Sync CRM contacts to the service's subscriber list.

    Called before a campaign is sent, in chunks. `contactIds` are CRM contact ids: read the
    contacts with crm.contacts(contactIds) (id, name, email, phone, status) and create or
    update them in the service. Return nothing.
    """,
    ),
    "CRM_Marketing_PrepareCampaign": Stub(
        "(campaignId: str, type: CRM_Marketing_CampaignType, contacts: list[str]) -> None",
        """Prepare one batch of a campaign's recipients, e.g. add them to a mailing list.

    Called before the campaign is created in the service, once per batch of recipients
    (1,000 by default), so a large campaign calls it several times. `campaignId` is the
    CRM's campaign id, `type` the campaign type, `contacts`
    {contacts}. Keep what CreateCampaign needs in storage. Return nothing.
    """,
    ),
    "CRM_Marketing_CreateCampaign": Stub(
        "(request: CRM_Marketing_CreateCampaignRequest) -> CRM_Marketing_CreateCampaignResponse",
        """Create (and send or schedule) the email campaign in the service.

    Called after every PrepareCampaign batch. `request` has campaignId, name, type,
    subject, senderName, senderEmail and optionally templateExternalId, html, scheduledAt
    (ISO 8601) and categoryExternalId. Return CRM_Marketing_CreateCampaignResponse(
    externalId=<the service's campaign id>, status=...); status defaults to Sending, or
    Scheduled when scheduledAt is set. If this raises, the campaign is marked failed.
    """,
    ),
    "CRM_Marketing_GetCampaignStats": Stub(
        "(campaignExternalId: str) -> CRM_Marketing_CampaignStats", _STATS_DOC
    ),
    "CRM_Marketing_ParseWebhookRequest": Stub(
        "(request: FetchRequest) -> CRM_Marketing_WebhookResult", _WEBHOOK_DOC
    ),
    "CRM_Marketing_GetTemplateHTML": Stub(
        "(templateExternalId: str) -> str",
        """Return the HTML of a template, for its preview.

    Called by the template preview; `templateExternalId` is the template's id in the
    service. The host caches the HTML until SetTemplateHTML changes that template.
    """,
    ),
    "CRM_Marketing_SetTemplateHTML": Stub(
        "(html: str, name: str, templateExternalId: str | None = None) -> str",
        """Publish a template to the service.

    Called when a template is published. `html` is its content, `name` its name, and
    `templateExternalId` its id in the service, or None for a new template. Return the
    template's id in the service; the host stores it.
    """,
    ),
    "CRM_Marketing_CreateMessengerCampaign": Stub(
        "(request: CRM_Marketing_CreateMessengerCampaignRequest)"
        " -> CRM_Marketing_CreateCampaignResponse",
        """Create the messenger campaign (the message) in the messenger.

    Called after every PrepareCampaign batch. `request` has campaignId, name, campaignType
    (an AccountType, one of GetMessengerTypes), botId (one of GetMessengerBots), text and
    optionally scheduledAt. Return CRM_Marketing_CreateCampaignResponse(externalId=...,
    status=...). If this raises, the campaign is marked failed.
    """,
    ),
    "CRM_Marketing_GetMessengerTypes": Stub(
        "() -> list[AccountType]",
        """The messengers this module sends through.

    Called when a user sets up a messenger campaign; the chosen one arrives as
    request.campaignType in CreateMessengerCampaign. Return e.g. [AccountType.Telegram].
    """,
    ),
    "CRM_Marketing_GetMessengerBots": Stub(
        "() -> list[CRM_Marketing_MessengerBot]",
        """The bots or groups a campaign can be sent from.

    Called when a user sets up a messenger campaign. Return a list of
    CRM_Marketing_MessengerBot(id=..., name=..., type=AccountType..., description=...).
    """,
    ),
}

_RECIPIENTS = {
    ModuleKind.email: "the email addresses (Email campaigns) or phone numbers (Sms)",
    ModuleKind.messenger: "the CRM contact ids",
}

SDK_IMPORTS = {
    ModuleKind.email: (
        "CRM_Marketing_CampaignStats",
        "CRM_Marketing_CampaignType",
        "CRM_Marketing_CreateCampaignRequest",
        "CRM_Marketing_CreateCampaignResponse",
        "CRM_Marketing_DeliveryStatus",
        "CRM_Marketing_ImportTemplate",
        "CRM_Marketing_WebhookResult",
        "FetchRequest",
        "crm",
        "fetch",
        "log",
        "settings",
        "storage",
    ),
    ModuleKind.messenger: (
        "AccountType",
        "CRM_Marketing_CampaignStats",
        "CRM_Marketing_CampaignType",
        "CRM_Marketing_CreateCampaignResponse",
        "CRM_Marketing_CreateMessengerCampaignRequest",
        "CRM_Marketing_DeliveryStatus",
        "CRM_Marketing_MessengerBot",
        "CRM_Marketing_WebhookResult",
        "FetchRequest",
        "crm",
        "fetch",
        "log",
        "settings",
        "storage",
    ),
}


def script_text(module_id: str, kind: ModuleKind) -> str:
    imports = "".join(f"    {name},\n" for name in SDK_IMPORTS[kind])
    parts = [
        f'"""{module_id}: a CRM Marketing {kind.value} module.\n\n'
        "Implement the functions the service supports; leave the others raising\n"
        "NotImplementedError (the CRM then shows that feature as unsupported).\n"
        'See docs/writing-modules.md for the whole guide."""\n\n'
        f"from crm_module_sdk import (  # noqa: F401  (names the script may use)\n{imports})\n"
        f"\nAPI = {json.dumps(f'https://{API_HOST}/v1')}\n"
    ]
    for function in FUNCTIONS_BY_KIND[kind]:
        stub = STUBS[function.name]
        doc = stub.doc.replace("{contacts}", _RECIPIENTS[kind])
        parts.append(
            f'\n\ndef {function.name}{stub.signature}:\n    """{doc}"""\n'
            "    raise NotImplementedError\n"
        )
    return "".join(parts)


API_HOST = "api.example.com"


def manifest_data(module_id: str, kind: ModuleKind) -> dict[str, object]:
    return {
        "id": module_id,
        "name": module_id.replace("-", " ").title(),
        "version": "0.1.0",
        "kind": kind.value,
        "script": "module.py",
        "description": f"Connects the CRM to ... (a {kind.value} module).",
        "egress": [API_HOST],
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {
                    "type": "string",
                    "writeOnly": True,
                    "description": "API key of the service",
                }
            },
            "required": ["api_key"],
        },
    }


def example_case(kind: ModuleKind) -> dict[str, object]:
    """A case that passes on the fresh scaffold and shows every key a case uses."""
    return {
        "name": "webhook is not implemented yet (replace with the actions you expect)",
        "function": "CRM_Marketing_ParseWebhookRequest",
        "args": [{"json": {"events": [{"email": "ann@example.com", "event": "delivered"}]}}],
        "settings": {"api_key": "test-key"},
        "error": {"kind": "not_implemented"},
    }


README = """# {module_id}

A CRM Marketing {kind} module for crm-module-host.

| file | what |
|---|---|
| `manifest.json` | id, version, kind, the hosts `fetch()` may reach (`egress`), settings schema |
| `module.py` | the `CRM_Marketing_*` functions (stubs raise `NotImplementedError`) |
| `tests/*.json` | offline test cases; `tests/recordings/` holds recorded HTTP traffic |

    crm-host module validate .
    crm-host module run . ImportTemplates 0 10 --settings '{{"api_key": "..."}}' --show-log
    crm-host module run . ImportTemplates 0 10 --settings ... --record tests/recordings/t.json
    crm-host module test .
    crm-host module upload . --url https://crm-host.example --token $CRM_HOST_ADMIN_TOKEN

Bump `version` in `manifest.json` for every upload: versions are immutable.
"""


def create_module(parent: Path, module_id: str, kind: ModuleKind | str) -> Path:
    """Write the folder ``parent/module_id``; refuses a bad id or a non-empty folder."""
    kind = ModuleKind(kind)
    if not SLUG.match(module_id):
        raise InvalidInput(
            "module name is invalid",
            [
                Problem(
                    module_id,
                    "use 2-64 lowercase letters, digits, '-' or '_', starting with a letter "
                    "(e.g. acme-mail)",
                )
            ],
        )
    root = parent / module_id
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InvalidInput(
            "module folder already exists", [Problem(str(root), "exists and is not empty")]
        )
    (root / "tests" / "recordings").mkdir(parents=True, exist_ok=True)
    manifest = json.dumps(manifest_data(module_id, kind), indent=2)
    (root / "manifest.json").write_text(manifest + "\n", encoding="utf-8")
    (root / "module.py").write_text(script_text(module_id, kind), encoding="utf-8")
    case = json.dumps(example_case(kind), indent=2)
    (root / "tests" / "example_webhook.json").write_text(case + "\n", encoding="utf-8")
    readme = README.format(module_id=module_id, kind=kind.value)
    (root / "README.md").write_text(readme, encoding="utf-8")
    return root
