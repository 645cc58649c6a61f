"""``crm-host module run``: one function of a local module, in the server's sandbox and
limits, printing the validated return value as JSON (SPEC §7)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from host.calls import ModuleCall
from host.cli.output import err
from host.config import HostSettings
from host.contract.enforce import validate_return
from host.contract.functions import PREFIX, contract_function
from host.errors import InvalidInput, ModuleCallFailed
from host.module_runtime import run_module_function
from host.modules.packages import from_directory
from host.modules.registry import validate_package
from host.settings_schema import secret_values, validate_settings
from sandbox.compiler import compile_script
from sandbox.errors import ScriptCompileError
from sandbox.pool import SandboxPool

LOCAL_TENANT = "local"


def _usage(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(2)


def _failure(kind: str, message: str) -> typer.Exit:
    err.print(f"error: {kind}: {message}", markup=False, highlight=False)
    return typer.Exit(1)


def _one_line(problems: list[Any]) -> str:
    return "; ".join(str(p) for p in problems)


def module_run(
    directory: Annotated[Path, typer.Argument(help="Module folder (manifest.json + script).")],
    function: Annotated[str, typer.Argument(help="e.g. CRM_Marketing_ImportTemplates.")],
    args: Annotated[
        list[str] | None, typer.Argument(help="The function's arguments, one JSON value each.")
    ] = None,
    settings: Annotated[
        str, typer.Option("--settings", help="The tenant settings, as a JSON object.")
    ] = "{}",
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Host, host:port or CIDR to allow although private/loopback (repeatable).",
        ),
    ] = None,
) -> None:
    """Run one function of the module in DIR and print its return value as JSON."""
    host_settings = HostSettings()
    try:
        package = from_directory(directory, max_script_bytes=host_settings.max_script_bytes)
    except InvalidInput as exc:
        raise _failure("invalid_module", f"{exc.message}: {_one_line(exc.problems)}") from None
    try:
        module = validate_package(package, max_script_bytes=host_settings.max_script_bytes)
    except InvalidInput as exc:
        kind = _compile_kind(package.script)
        raise _failure(kind, f"{exc.message}: {_one_line(exc.problems)}") from None
    manifest = module.manifest
    name = function if function.startswith(PREFIX) else PREFIX + function
    contract = contract_function(manifest.kind, name)
    if contract is None:
        raise _usage(f"{name} is not a function of {manifest.kind} modules")
    values = _parse_arguments(args or [], contract.parameters)
    tenant_settings = _parse_settings(settings, manifest)
    call = ModuleCall(
        tenant_id=LOCAL_TENANT,
        module_id=manifest.id,
        version=manifest.version,
        function=name,
        manifest=manifest.as_json(),
        script=module.script,
        settings=tenant_settings,
        secret_values=secret_values(manifest, tenant_settings),
    )
    allow = [*host_settings.egress_allow, *(allow_host or [])]
    with SandboxPool(size=1) as pool:
        try:
            result = validate_return(
                call, run_module_function(pool, call, values, egress_allow=allow)
            )
        except ModuleCallFailed as exc:
            where = f" (line {exc.line})" if exc.line else ""
            raise _failure(exc.kind, f"{exc.message}{where}") from None
        except ValueError as exc:  # a malformed egress entry or allow-list value
            raise _usage(str(exc)) from None
    json.dump(_plain(result.value), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _compile_kind(script: str | None) -> str:
    """policy_violation when the sandbox policy refused the script, else invalid_module."""
    try:
        compile_script(script or "")
    except ScriptCompileError as exc:
        return exc.kind
    return "invalid_module"


def _parse_arguments(raw: list[str], parameters: tuple[str, ...]) -> list[Any]:
    if len(raw) != len(parameters):
        expected = ", ".join(parameters) or "no arguments"
        raise _usage(f"expected {len(parameters)} argument(s) ({expected}), got {len(raw)}")
    values = []
    for name, text in zip(parameters, raw, strict=True):
        try:
            values.append(json.loads(text))
        except ValueError as exc:
            raise _usage(f"argument {name} is not JSON ({exc}): {text!r}") from None
    return values


def _parse_settings(text: str, manifest: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _usage(f"--settings is not JSON: {exc}") from None
    try:
        return validate_settings(manifest, value)
    except InvalidInput as exc:
        raise _usage(f"--settings: {_one_line(exc.problems)}") from None


def _plain(value: Any) -> Any:
    """Validated pydantic values back to JSON data, as the module's camelCase shape."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
