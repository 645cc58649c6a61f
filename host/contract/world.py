"""What scripts see of the contract besides their arguments: the enums and the record
constructors of SPEC §3, and the ``crm`` namespace of host callbacks — described as data
for the sandbox (it knows nothing about CRM marketing)."""

from __future__ import annotations

import functools
import typing
from typing import Any

from host.contract.enums import SCRIPT_ENUMS
from host.contract.script_names import ACTION_NAME
from host.contract.types import RECORD_TYPES, SCRIPT_TYPES, ContractModel
from sandbox.facades import ALLOWED_MODULES
from sandbox.world import WorldSpec

CRM_CALLBACKS = {"crm": ["contacts", "set_campaign_keys", "campaign_for_key"]}
"""Host callbacks scripts may call: ``crm.contacts(ids)``, and the attribution map
``crm.set_campaign_keys(campaignExternalId, keys)`` / ``crm.campaign_for_key(key)``
(``host/marketing/campaign_keys.py``)."""

SDK_MODULE = "crm_module_sdk"
"""What scripts import lent names from, matching the installable stub package of that name
(``crm_module_sdk/``) so one source runs in the sandbox and type-checks in an editor."""

SCRIPT_IMPORTS = (*ALLOWED_MODULES, SDK_MODULE)
"""Every module a script may import; upload refuses any other import with its line."""

TYPE_ONLY_NAMES = (
    *(name for name in SCRIPT_TYPES if name not in RECORD_TYPES),
    ACTION_NAME,
    "FetchResponse",
)
"""SDK names that exist for annotations only; in the sandbox each is its own name as a
string, so importing it works (the compiler drops annotations, so none is ever evaluated)."""


def _record_defaults(model: type[ContractModel]) -> dict[str, Any]:
    """Field → default. A Literal discriminator (an action's ``type``) defaults to its one
    value, so ``CRM_Marketing_UnsubscribeAction(email=..., externalId=...)`` is complete.
    Required fields default to None and are reported by validation if left out."""
    defaults: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        choices = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal and len(choices) == 1:
            defaults[name] = choices[0]
        elif field.is_required():
            defaults[name] = None
        else:
            defaults[name] = field.get_default(call_default_factory=True)
    return defaults


@functools.cache
def script_world() -> WorldSpec:
    return WorldSpec(
        enums={name: {m.name: m.value for m in enum} for name, enum in SCRIPT_ENUMS.items()},
        record_types={name: _record_defaults(model) for name, model in RECORD_TYPES.items()},
        constants={name: name for name in TYPE_ONLY_NAMES},
        namespaces=CRM_CALLBACKS,
        sdk_module=SDK_MODULE,
    )
