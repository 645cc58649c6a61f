"""Running a module from its folder on the integrator's machine, the way the server would:
the same validation, the same ModuleCall, the same sandbox — shared by ``module run`` and
``module test`` so a local run and a test case can never disagree about what the host does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host.calls import ModuleCall
from host.contract.function_model import PREFIX
from host.module_program import ModuleProgram
from host.modules.packages import from_directory
from host.modules.registry import ValidatedModule, validate_package
from host.settings_schema import secret_values, validate_settings

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
