"""The pluggy hooks of the host: who serves each CRM_Marketing_* function, and the events
trusted plugins may react to.

Every ``crm_marketing_*`` hook is ``firstresult``: the first plugin that returns a value
serves the call (the sandbox bridge serves it from the tenant's module; a trusted plugin
registered earlier may serve it instead). Each receives ``call``, a :class:`ModuleCall`
saying which tenant's which module version is being called, then the function's own
arguments, by the names of the contract. A plugin that serves a call returns a
:class:`~host.calls.ModuleResult` whose ``value`` is what the module returned (validated by
the host's contract wrapper before any caller sees it); returning ``None`` means "not served
here" — a bare value is not a result, because ``None`` is itself a legitimate return of
ExportContacts and PrepareCampaign. Wrappers (``wrapper=True``) see every call and may time,
log, cache or veto it.

The ``crm_marketing_*`` specs are built from the contract's one definition
(:mod:`host.contract.functions`): one spec per function, named by its hook, with its
parameters and a docstring saying when the host calls it, what the result's value is and
what the host retries. ``python -m host.contract.generate`` lists them in the guide's
reference appendix.

Event hooks (``crm_host_*``) are notifications after the fact: their results are ignored and
a plugin that raises is logged without undoing the event.
"""

from __future__ import annotations

from typing import Any

import pluggy

from host.contract.function_model import ContractFunction
from host.contract.functions import ALL_FUNCTIONS
from host.contract.hooks import spec_function

PROJECT = "crm_module_host"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- CRM_Marketing_* functions -------------------------------------------------------------


def _function_spec(function: ContractFunction) -> Any:
    doc = (
        f"{function.signature()}. {function.called_when} A plugin serves it by returning a "
        f"ModuleResult whose value is the module's return value. The module's part: "
        f"{function.returns_doc} {function.retry}"
    )
    return hookspec(firstresult=True)(spec_function(function, doc))


for _function in ALL_FUNCTIONS.values():
    globals()[_function.hook] = _function_spec(_function)
del _function


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
