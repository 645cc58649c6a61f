"""The pluggy hooks of the host: who serves each CRM_Marketing_* function, and the events
trusted plugins may react to.

Every ``crm_marketing_*`` hook is ``firstresult``: the first plugin that returns a value
serves the call (the sandbox bridge serves it from the tenant's module; a trusted plugin
registered earlier may serve it instead). Each receives ``call``, a :class:`ModuleCall`
saying which tenant's which module version is being called, then the function's own
arguments. Returning ``None`` means "not served here". Wrappers (``wrapper=True``) see
every call and may time, log, cache or veto it.

Event hooks (``crm_host_*``) are notifications after the fact: their results are ignored and
a plugin that raises is logged without undoing the event.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

import pluggy

from host.calls import ModuleCall

PROJECT = "crm_module_host"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- CRM_Marketing_* functions -------------------------------------------------------------


@hookspec(firstresult=True)
def crm_marketing_import_templates(call: ModuleCall, offset: int, limit: int) -> Any:
    """Called when a user imports templates: once per page, first with offset 0, again with
    ``offset + limit`` while a full page comes back. Returns a list of ImportTemplate."""


@hookspec(firstresult=True)
def crm_marketing_export_contacts(call: ModuleCall, contactIds: list[str]) -> Any:
    """Called before a campaign is sent, once per chunk of CRM contact ids, so the module can
    sync them to the service (it reads them through ``crm.contacts``). Returns None."""


@hookspec(firstresult=True)
def crm_marketing_prepare_campaign(
    call: ModuleCall,
    campaignId: str,
    type: str,
    contacts: list[str],
) -> Any:
    """Called once per batch of recipients before CreateCampaign: email addresses for Email
    campaigns, phone numbers for Sms, contact ids for Messenger. Returns None."""


@hookspec(firstresult=True)
def crm_marketing_create_campaign(call: ModuleCall, request: dict[str, Any]) -> Any:
    """Called once, after the last prepare batch, to create the email campaign in the
    service. Returns CreateCampaignResponse; the host then tracks it by ``externalId``."""


@hookspec(firstresult=True)
def crm_marketing_create_messenger_campaign(call: ModuleCall, request: dict[str, Any]) -> Any:
    """Called once, after the last prepare batch, to create a messenger campaign. Returns
    CreateCampaignResponse."""


@hookspec(firstresult=True)
def crm_marketing_get_campaign_stats(call: ModuleCall, campaignExternalId: str) -> Any:
    """Called when campaign stats are viewed and the cached value is older than its TTL.
    Returns CampaignStats."""


@hookspec(firstresult=True)
def crm_marketing_parse_webhook_request(call: ModuleCall, request: dict[str, Any]) -> Any:
    """Called when the service posts to the module's webhook URL, with the FetchRequest.
    Returns WebhookResult; its actions are applied in one transaction."""


@hookspec(firstresult=True)
def crm_marketing_get_template_html(call: ModuleCall, templateExternalId: str) -> Any:
    """Called for a template preview when no cached HTML exists. Returns the HTML string."""


@hookspec(firstresult=True)
def crm_marketing_set_template_html(
    call: ModuleCall,
    html: str,
    name: str,
    templateExternalId: str | None,
) -> Any:
    """Called when a template is published. Returns the template's id in the service."""


@hookspec(firstresult=True)
def crm_marketing_get_messenger_types(call: ModuleCall) -> Any:
    """Called when messenger activities are configured. Returns a list of AccountType."""


@hookspec(firstresult=True)
def crm_marketing_get_messenger_bots(call: ModuleCall) -> Any:
    """Called when a messenger campaign is set up, to list bots. Returns MessengerBot list."""


# --- host events ---------------------------------------------------------------------------


@hookspec
def crm_host_module_uploaded(module_id: str, version: str, kind: str) -> None:
    """A new module version was stored (not called for an identical re-upload)."""


@hookspec
def crm_host_module_enabled(tenant_id: str, module_id: str, version: str) -> None:
    """A module version was enabled or pinned for a tenant."""


@hookspec
def crm_host_module_disabled(tenant_id: str, module_id: str) -> None:
    """A module was disabled for a tenant; its settings are kept."""


@hookspec
def crm_host_settings_changed(tenant_id: str, module_id: str, fields: list[str]) -> None:
    """A tenant's settings of a module changed. ``fields`` names the changed top-level
    settings; values are never passed, since some are secrets."""


@hookspec
def crm_host_campaign_status_changed(
    tenant_id: str, campaign_id: str, old_status: str, new_status: str, error: str | None
) -> None:
    """A campaign moved from ``old_status`` to ``new_status`` (CampaignStatus values), after
    the change was committed."""


@hookspec
def crm_host_actions_applied(
    tenant_id: str, module_id: str, applied: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> None:
    """A webhook's actions were committed in one transaction. ``applied`` are the actions
    that changed something; ``skipped`` carry a ``reason`` (unknown campaign or contact,
    replay that changes nothing)."""


@hookspec
def crm_host_contact_unsubscribed(
    tenant_id: str, contact_id: str, email: str, category: str | None
) -> None:
    """A contact unsubscribed, from one category or (``category`` None) from everything."""


# --- helpers for plugins -------------------------------------------------------------------

C = TypeVar("C", bound=type)


def wraps_every_function(**options: Any) -> Callable[[C], C]:
    """Class decorator: make ``cls.around_call(self, call)`` (a generator, pluggy's new-style
    wrapper protocol) a ``wrapper=True`` hookimpl of every ``crm_marketing_*`` hook."""
    from host.contract.functions import HOOK_NAMES

    def decorate(cls: C) -> C:
        for name in HOOK_NAMES.values():

            def wrapper(self: Any, call: ModuleCall) -> Generator[None, Any, Any]:
                return (yield from self.around_call(call))

            wrapper.__name__ = name
            setattr(cls, name, hookimpl(wrapper=True, **options)(wrapper))
        return cls

    return decorate
