"""Checking the CRM_Marketing_* functions a script defines against the contract of its kind:
what upload and ``crm-host module validate`` report about a function's name and parameters."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from host.contract.enums import ModuleKind
from host.contract.function_model import PREFIX
from host.contract.functions import ALL_FUNCTIONS, FUNCTIONS_BY_KIND
from host.errors import Problem


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
