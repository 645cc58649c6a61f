"""The host's own wrapper plugin: every value a module returns is validated against the
contract before any caller sees it (SPEC §3), whoever served the call."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pydantic import ValidationError

from host.calls import ModuleCall, ModuleResult, mask_secrets
from host.contract.functions import ALL_FUNCTIONS
from host.errors import ModuleCallFailed
from host.hook_wrappers import wraps_every_function
from host.json_values import ValueProblem, value_problem


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
    unstorable = _return_problem(call.function, result.value)
    try:
        if unstorable is not None:
            raise _invalid(call, result, str(unstorable))
        result.value = contract.return_adapter.validate_python(result.value)
    except ValidationError as exc:
        raise _invalid(call, result, describe_validation_error(exc)) from None
    return result


SENT_NOT_STORED = {"CRM_Marketing_ParseWebhookRequest": "response"}
"""Return fields that the host sends on as bytes and never stores: NUL is allowed there (a
module may echo a binary challenge), nesting and lone surrogates are still refused."""


def _return_problem(function: str, value: Any) -> ValueProblem | None:
    sent = SENT_NOT_STORED.get(function)
    if sent is None or not isinstance(value, dict) or sent not in value:
        return value_problem(value, root="value")
    stored = {key: item for key, item in value.items() if key != sent}
    return value_problem(stored, root="value") or value_problem(
        {sent: value[sent]}, root="value", refuse_nul=False
    )


def _invalid(call: ModuleCall, result: ModuleResult, detail: str) -> ModuleCallFailed:
    return ModuleCallFailed(
        "invalid_return",
        # field paths name the returned keys, which may be a secret
        mask_secrets(f"{call.function} returned an invalid value: {detail}", call.secret_values)
        or "",
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
