"""What one function of the CRM_Marketing_* contract is: its parameters, its return type and
the sentences that describe it (the functions themselves are in :mod:`host.contract.functions`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter

from host.contract.enums import ModuleKind

PREFIX = "CRM_Marketing_"


@dataclass(frozen=True)
class Parameter:
    """One parameter: its name and the type of the value the host passes (the SDK and the
    scaffold annotate it with that type's script name)."""

    name: str
    type: Any


@dataclass(frozen=True)
class ContractFunction:
    """One function of the contract: how the host calls it and what it must return.

    The last ``optional`` parameters are optional in the SPEC sense (``=None``): a caller
    (the host, ``module run``, a ``module test`` case) may leave them out, and the module
    then receives ``None`` for them. The host always passes every parameter positionally,
    so a module never depends on its own default values.

    The prose fields are sentences, so the scaffold's docstrings, the hookspecs' docstrings
    and the guide's tables are put together from the same words: ``summary`` (imperative,
    the docstring's first line), ``called_when``, ``arguments`` (``{recipients}`` is replaced
    by what the kind passes), ``returns_doc``, ``retry`` (what the host does when the call
    fails or is interrupted), ``feature`` (what the CRM shows as unsupported without it).
    """

    name: str
    params: tuple[Parameter, ...]
    returns: Any
    summary: str
    called_when: str
    arguments: str
    returns_doc: str
    retry: str
    feature: str
    optional: int = 0
    hook: str = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.optional <= len(self.params):
            raise ValueError(f"{self.name}: more optional parameters than parameters")
        names = [self.name, *self.parameters]
        if not all(n.isidentifier() and not n.startswith("_") for n in names):
            raise ValueError(f"{self.name}: names must be public identifiers: {names}")
        object.__setattr__(self, "hook", hook_name(self.name))

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameter names, in call order."""
        return tuple(p.name for p in self.params)

    @cached_property
    def return_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.returns)

    @property
    def required(self) -> tuple[str, ...]:
        """The parameters every call must give."""
        return self.parameters[: len(self.parameters) - self.optional]

    def arguments_for(self, kind: ModuleKind | str) -> str:
        """:attr:`arguments` as modules of ``kind`` receive them."""
        return self.arguments.replace("{recipients}", RECIPIENTS[ModuleKind(kind)])

    def docstring(self, kind: ModuleKind | str) -> str:
        """The whole story for a module author: the scaffold's docstring of this function."""
        body = " ".join(
            part
            for part in (self.called_when, self.arguments_for(kind), self.returns_doc, self.retry)
            if part
        )
        return f"{self.summary}\n\n{body}"

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


def hook_name(function: str) -> str:
    """The pluggy hook of a contract function: ``CRM_Marketing_ImportTemplates`` →
    ``crm_marketing_import_templates``."""
    bare = function.removeprefix(PREFIX)
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in bare).lstrip("_")
    return "crm_marketing_" + snake.replace("h_t_m_l", "html")


RECIPIENTS = {
    ModuleKind.email: "the email addresses (Email campaigns) or phone numbers (Sms)",
    ModuleKind.messenger: "the CRM contact ids",
}
"""What ``PrepareCampaign``'s ``contacts`` holds, by module kind."""
