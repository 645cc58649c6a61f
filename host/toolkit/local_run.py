"""Running a module from its folder on the integrator's machine, the way the server would:
the same validation, the same ModuleCall, the same sandbox — shared by ``module run`` and
``module test`` so a local run and a test case can never disagree about what the host does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.contract.enforce import validate_return
from host.contract.function_model import PREFIX
from host.contract.functions import contract_function
from host.errors import InvalidInput, ModuleCallFailed, Problem
from host.module_program import ModuleProgram
from host.module_runtime import run_module_function
from host.modules.packages import from_directory
from host.modules.registry import ValidatedModule, validate_package
from host.settings_schema import secret_values, validate_settings
from sandbox.invocation import redact_data
from sandbox.pool import SandboxPool

LOCAL_TENANT = "local"
"""The tenant id local runs use (storage and contacts are empty)."""


def load_module(directory: Path, *, max_script_bytes: int) -> ValidatedModule:
    """The module in ``directory``, validated as an upload would be (raises InvalidInput)."""
    package = from_directory(directory, max_script_bytes=max_script_bytes)
    return validate_package(package, max_script_bytes=max_script_bytes)


def full_name(function: str) -> str:
    """``ImportTemplates`` → ``CRM_Marketing_ImportTemplates`` (the prefix is optional)."""
    return function if function.startswith(PREFIX) else PREFIX + function


def local_call(module: ValidatedModule, function: str, settings: Any) -> ModuleCall:
    """A call of ``function`` for the local tenant; ``settings`` are validated against the
    manifest first (raises InvalidInput naming ``settings.<field>``)."""
    manifest = module.manifest
    checked = validate_settings(manifest, settings)
    return ModuleCall(
        tenant_id=LOCAL_TENANT,
        module_id=manifest.id,
        version=manifest.version,
        function=full_name(function),
        program=ModuleProgram.of(manifest, module.script),
        settings=checked,
        secret_values=secret_values(manifest, checked),
        purpose="local",
    )


def plain(value: Any) -> Any:
    """Validated pydantic values back to JSON data, in the module's camelCase shape: what
    ``module run`` prints and what a test case's expectation is compared with."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class LocalRun:
    """What one local run shows: the validated return value (secrets masked) or the
    failure, and the run's trace — captured log and fetches as the invocation log records
    them."""

    value: Any = None
    failure: ModuleCallFailed | None = None
    log: str = ""
    fetches: list[dict[str, Any]] = field(default_factory=list)


def run_function(
    module: ValidatedModule,
    function: str,
    args: Sequence[Any],
    settings: Any,
    *,
    egress_allow: Sequence[str],
) -> LocalRun:
    """Run ``function`` of ``module`` once in a throwaway worker of its own, on the local
    tenant with empty scratch storage (never a tenant's live data), through the server's
    egress policy. ``args`` are checked against the contract and ``settings`` against the
    manifest first (InvalidInput naming ``arguments`` or ``settings.<field>``)."""
    call = local_call(module, function, settings)
    contract = contract_function(module.manifest.kind, call.function)
    if contract is None:
        raise InvalidInput(
            "the function cannot be run",
            [
                Problem(
                    "function",
                    f"{call.function} is not a function of {module.manifest.kind} modules",
                )
            ],
        )
    if not contract.accepts_count(len(args)):
        raise InvalidInput(
            "the arguments do not fit the function",
            [Problem("arguments", f"expected {contract.expected_count()} argument(s) "
                     f"({contract.described_parameters()}), got {len(args)}")],
        )  # fmt: skip
    with SandboxPool(size=1) as pool:
        try:
            ran = run_module_function(
                pool, call, contract.complete(list(args)), egress_allow=egress_allow, storage={}
            )
            result = validate_return(call, ran)
        except ModuleCallFailed as exc:
            trace = exc.trace if isinstance(exc.trace, ModuleResult) else None
            return LocalRun(
                failure=exc,
                log=trace.log if trace else "",
                fetches=list(trace.fetches) if trace else [],
            )
    return LocalRun(
        value=redact_data(plain(result.value), call.secret_values),
        log=result.log,
        fetches=list(result.fetches),
    )
