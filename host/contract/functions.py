"""The CRM_Marketing_* functions each module kind may define, with their parameters and the
type of value the host accepts back (SPEC §2)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter

from host.contract.enums import AccountType, ModuleKind
from host.contract.types import (
    CampaignStats,
    CreateCampaignResponse,
    ImportTemplate,
    MessengerBot,
    WebhookResult,
)
from host.errors import Problem

PREFIX = "CRM_Marketing_"


@dataclass(frozen=True)
class ContractFunction:
    """One function of the contract: how the host calls it and what it must return.

    The last ``optional`` parameters are optional in the SPEC sense (``=None``): a caller
    (the host, ``module run``, a ``module test`` case) may leave them out, and the module
    then receives ``None`` for them. The host always passes every parameter positionally,
    so a module never depends on its own default values.
    """

    name: str
    parameters: tuple[str, ...]
    returns: Any
    summary: str
    optional: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.optional <= len(self.parameters):
            raise ValueError(f"{self.name}: more optional parameters than parameters")

    @cached_property
    def return_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.returns)

    @property
    def required(self) -> tuple[str, ...]:
        """The parameters every call must give."""
        return self.parameters[: len(self.parameters) - self.optional]

    def described_parameters(self) -> str:
        """``html, name, templateExternalId=None`` (or ``no arguments``)."""
        shown = [*self.required, *(f"{p}=None" for p in self.parameters[len(self.required) :])]
        return ", ".join(shown) or "no arguments"

    def expected_count(self) -> str:
        """``2`` or ``2 to 3``: how many arguments a call may give."""
        if not self.optional:
            return str(len(self.parameters))
        return f"{len(self.required)} to {len(self.parameters)}"

    def accepts_count(self, count: int) -> bool:
        return len(self.required) <= count <= len(self.parameters)

    def complete(self, values: Sequence[Any]) -> list[Any]:
        """All positional arguments of a call that gave ``values``: omitted optional ones
        become ``None``. Raises ``ValueError`` for a count the contract does not accept."""
        if not self.accepts_count(len(values)):
            raise ValueError(
                f"{self.name} takes {self.expected_count()} argument(s) "
                f"({self.described_parameters()}), got {len(values)}"
            )
        return [*values, *([None] * (len(self.parameters) - len(values)))]

    def complete_keywords(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword form of :meth:`complete`, for the hooks: every parameter present."""
        unknown = sorted(set(arguments) - set(self.parameters))
        missing = [p for p in self.required if p not in arguments]
        if unknown or missing:
            raise ValueError(
                f"{self.name}({self.described_parameters()}) called with "
                f"unknown {unknown} / missing {missing} argument(s)"
            )
        return {p: arguments.get(p) for p in self.parameters}

    def signature(self) -> str:
        return f"{self.name}({self.described_parameters() if self.parameters else ''})"


def _fn(
    name: str, params: tuple[str, ...], returns: Any, summary: str, optional: int = 0
) -> ContractFunction:
    return ContractFunction(PREFIX + name, params, returns, summary, optional)


_IMPORT_TEMPLATES = _fn(
    "ImportTemplates", ("offset", "limit"), list[ImportTemplate], "import templates, one page"
)
_EXPORT_CONTACTS = _fn("ExportContacts", ("contactIds",), None, "sync contacts before a send")
_PREPARE = _fn(
    "PrepareCampaign", ("campaignId", "type", "contacts"), None, "one batch of recipients"
)
_CREATE = _fn(
    "CreateCampaign", ("request",), CreateCampaignResponse, "create the campaign in the service"
)
_STATS = _fn("GetCampaignStats", ("campaignExternalId",), CampaignStats, "read campaign stats")
_WEBHOOK = _fn("ParseWebhookRequest", ("request",), WebhookResult, "turn a webhook into actions")
_GET_HTML = _fn("GetTemplateHTML", ("templateExternalId",), str, "template preview")
_SET_HTML = _fn(
    "SetTemplateHTML",
    ("html", "name", "templateExternalId"),
    str,
    "publish a template",
    optional=1,
)
_CREATE_MESSENGER = _fn(
    "CreateMessengerCampaign", ("request",), CreateCampaignResponse, "create a messenger campaign"
)
_MESSENGER_TYPES = _fn(
    "GetMessengerTypes", (), list[AccountType], "messenger types the module serves"
)
_MESSENGER_BOTS = _fn("GetMessengerBots", (), list[MessengerBot], "bots available for campaigns")

FUNCTIONS_BY_KIND: dict[ModuleKind, tuple[ContractFunction, ...]] = {
    ModuleKind.email: (
        _IMPORT_TEMPLATES,
        _EXPORT_CONTACTS,
        _PREPARE,
        _CREATE,
        _STATS,
        _WEBHOOK,
        _GET_HTML,
        _SET_HTML,
    ),
    ModuleKind.messenger: (
        _PREPARE,
        _CREATE_MESSENGER,
        _STATS,
        _WEBHOOK,
        _MESSENGER_TYPES,
        _MESSENGER_BOTS,
    ),
}

ALL_FUNCTIONS: dict[str, ContractFunction] = {
    f.name: f for functions in FUNCTIONS_BY_KIND.values() for f in functions
}


def contract_function(kind: ModuleKind | str, name: str) -> ContractFunction | None:
    """The function ``name`` as defined for modules of ``kind``, or None if it is not theirs."""
    for function in FUNCTIONS_BY_KIND[ModuleKind(kind)]:
        if function.name == name:
            return function
    return None


@dataclass(frozen=True)
class DefinedFunction:
    """What the compiler learnt about a function a script defines (a neutral view of it)."""

    name: str
    line: int
    positional: tuple[str, ...]
    required_positional: int
    has_varargs: bool


def check_defined_functions(
    kind: ModuleKind | str, defined: list[DefinedFunction], script_name: str
) -> list[Problem]:
    """Every problem with the CRM_Marketing_* functions a script defines, for its kind.

    A function of the kind must accept exactly the documented positional arguments (the host
    calls positionally). A ``CRM_Marketing_*`` name that is not a function of the kind is a
    mistake (a typo, or a function of the other kind) and is reported with a suggestion.
    """
    kind = ModuleKind(kind)
    expected = {f.name: f for f in FUNCTIONS_BY_KIND[kind]}
    problems: list[Problem] = []
    for fn in defined:
        if not fn.name.startswith(PREFIX):
            continue
        where = f"{script_name}:{fn.line}"
        contract = expected.get(fn.name)
        if contract is None:
            hint = difflib.get_close_matches(fn.name, expected, n=1)
            other = "" if fn.name not in ALL_FUNCTIONS else " (it belongs to other module kinds)"
            suggestion = f"; did you mean {hint[0]}?" if hint else ""
            problems.append(
                Problem(
                    where,
                    f"{fn.name} is not a function of {kind.value} modules{other}{suggestion}",
                )
            )
            continue
        wanted = len(contract.parameters)
        accepts = fn.has_varargs or len(fn.positional) >= wanted
        if fn.required_positional > wanted or not accepts:
            problems.append(
                Problem(
                    where,
                    f"{fn.name} must accept the parameters ({', '.join(contract.parameters)}); "
                    f"it is defined as ({', '.join(fn.positional)})",
                )
            )
    return problems


def hook_name(function: str) -> str:
    """The pluggy hook of a contract function: ``CRM_Marketing_ImportTemplates`` →
    ``crm_marketing_import_templates``."""
    bare = function.removeprefix(PREFIX)
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in bare).lstrip("_")
    return "crm_marketing_" + snake.replace("h_t_m_l", "html")


HOOK_NAMES: dict[str, str] = {name: hook_name(name) for name in ALL_FUNCTIONS}
"""Contract function name → hook name."""
