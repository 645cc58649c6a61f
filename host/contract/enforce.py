"""The host's own wrapper plugin: every value a module returns is validated against the
contract before any caller sees it (SPEC §3), whoever served the call."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pydantic import ValidationError

from host.calls import ModuleCall, ModuleResult
from host.contract.functions import ALL_FUNCTIONS
from host.errors import ModuleCallFailed
from host.hookspecs import wraps_every_function
from host.json_values import value_problem


def describe_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(value)"
        parts.append(f"{path}: {item['msg']}")
    return "; ".join(parts)


def validate_return(call: ModuleCall, result: ModuleResult) -> ModuleResult:
    contract = ALL_FUNCTIONS[call.function]
    if contract.returns is None:
        result.value = None
        return result
    # before pydantic: text the database cannot store, or nesting past the shared limit,
    # is refused with its path whoever served the call (the sandbox refuses the same)
    unstorable = value_problem(result.value, root="value")
    try:
        if unstorable is not None:
            raise _invalid(call, result, str(unstorable))
        result.value = contract.return_adapter.validate_python(result.value)
    except ValidationError as exc:
        raise _invalid(call, result, describe_validation_error(exc)) from None
    return result


def _invalid(call: ModuleCall, result: ModuleResult, detail: str) -> ModuleCallFailed:
    return ModuleCallFailed(
        "invalid_return",
        f"{call.function} returned an invalid value: {detail}",
        module=call.module_ref,
        function=call.function,
        trace=result,
    )


@wraps_every_function(trylast=True)
class ContractEnforcer:
    """Validates the envelope returned by whichever plugin served a CRM_Marketing_* hook."""

    def around_call(self, call: ModuleCall) -> Generator[None, Any, Any]:
        result = yield
        if isinstance(result, ModuleResult):
            return validate_return(call, result)
        return result
