"""The host's own wrapper plugin: every value a module returns is validated against the
contract before any caller sees it (SPEC §3), whoever served the call."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pydantic import ValidationError

from host.calls import ModuleCall, ModuleResult, mask_secrets
from host.contract.functions import ALL_FUNCTIONS
from host.errors import ModuleCallFailed
from host.hookspecs import wraps_every_function


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
    try:
        result.value = contract.return_adapter.validate_python(result.value)
    except ValidationError as exc:
        raise ModuleCallFailed(
            "invalid_return",
            # field paths name the returned keys, which may be a secret
            mask_secrets(
                f"{call.function} returned an invalid value: {describe_validation_error(exc)}",
                call.secret_values,
            )
            or "",
            module=call.module_ref,
            function=call.function,
            trace=result,
        ) from None
    return result


@wraps_every_function(trylast=True)
class ContractEnforcer:
    """Validates the envelope returned by whichever plugin served a CRM_Marketing_* hook."""

    def around_call(self, call: ModuleCall) -> Generator[None, Any, Any]:
        result = yield
        if isinstance(result, ModuleResult):
            return validate_return(call, result)
        return result
