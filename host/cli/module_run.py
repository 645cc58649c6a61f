"""``crm-host module run``: one function of a local module, in the server's sandbox and
limits, printing the validated return value as JSON (SPEC §7).

``--record FILE`` keeps the run's HTTP exchanges (secrets masked), ``--replay FILE`` answers
fetch() from them offline (see host/toolkit/recording.py for the format and matching rules),
``--show-log`` prints the captured log and fetch calls on stderr. ``--contacts FILE`` serves
``crm.contacts(ids)`` from a JSON list of contacts, ``--storage FILE`` keeps the module's
storage between runs (created if missing; see host/toolkit/offline_state.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from host.calls import ModuleCall, ModuleResult
from host.cli.output import err
from host.config import HostSettings
from host.contract.enforce import validate_return
from host.contract.functions import ContractFunction, contract_function
from host.contract.world import SCRIPT_IMPORTS
from host.errors import InvalidInput, ModuleCallFailed
from host.json_values import InvalidJson, loads_checked
from host.marketing.campaign_keys import offline_callbacks as offline_campaign_keys
from host.module_runtime import run_module_function
from host.modules.packages import from_directory
from host.modules.registry import ValidatedModule, validate_package
from host.toolkit.local_run import full_name, local_call, plain
from host.toolkit.offline_state import OfflineContacts, OfflineStorage, offline_callbacks
from host.toolkit.recorder import Recorder
from host.toolkit.recording import Recording
from host.toolkit.replayer import Replayer
from sandbox.compiler import compile_script
from sandbox.errors import ScriptCompileError
from sandbox.invocation import redact_data
from sandbox.pool import SandboxPool

T = TypeVar("T")


def _usage(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(2)


def _failure(kind: str, message: str) -> typer.Exit:
    err.print(f"error: {kind}: {message}", markup=False, highlight=False)
    return typer.Exit(1)


def _one_line(problems: list[Any]) -> str:
    return "; ".join(str(p) for p in problems)


RecordOption = Annotated[
    Path | None,
    typer.Option(
        "--record",
        help="Perform fetch() for real and save the exchanges (secrets masked) to this file.",
        dir_okay=False,
    ),
]
ContactsOption = Annotated[
    Path | None,
    typer.Option(
        "--contacts",
        help="JSON list of contacts ({id, name, email, phone, status}) crm.contacts(ids) serves.",
        dir_okay=False,
    ),
]
StorageOption = Annotated[
    Path | None,
    typer.Option(
        "--storage",
        help="JSON file holding the module's storage; read before and written after the run.",
        dir_okay=False,
    ),
]
ReplayOption = Annotated[
    Path | None,
    typer.Option(
        "--replay",
        help="Answer fetch() from this recording instead of the network.",
        dir_okay=False,
    ),
]


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
    record: RecordOption = None,
    replay: ReplayOption = None,
    contacts: ContactsOption = None,
    storage: StorageOption = None,
    show_log: Annotated[
        bool,
        typer.Option("--show-log", help="Print the captured log and fetch calls on stderr."),
    ] = False,
) -> None:
    """Run one function of the module in DIR and print its return value as JSON."""
    host_settings = HostSettings()
    if record is not None and replay is not None:
        raise _usage("--record and --replay exclude each other")
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
    name = full_name(function)
    contract = contract_function(manifest.kind, name)
    if contract is None:
        raise _usage(f"{name} is not a function of {manifest.kind} modules")
    values = _parse_arguments(args or [], contract)
    call = _local_call(module, name, settings)
    crm_contacts = _offline(OfflineContacts.load, contacts, "--contacts") or OfflineContacts()
    kept = _offline(OfflineStorage.load, storage, "--storage") or OfflineStorage()
    callbacks = {**offline_campaign_keys({}), **offline_callbacks(crm_contacts, kept)}
    replayer = _replayer(replay, call) if replay is not None else None
    recorder = Recorder(call.secret_values) if record is not None else None
    network = recorder.network() if recorder else replayer.network() if replayer else None
    allow = [*host_settings.egress_allow, *(allow_host or [])]
    failure: ModuleCallFailed | None = None
    with SandboxPool(size=1) as pool:
        try:
            result = validate_return(
                call,
                run_module_function(
                    pool,
                    call,
                    values,
                    egress_allow=allow,
                    network=network,
                    callbacks=callbacks,
                    storage=kept.snapshot(),
                ),
            )
            _keep_storage(kept, result, storage)
        except ModuleCallFailed as exc:
            failure = exc
        except ValueError as exc:  # a malformed egress entry or allow-list value
            raise _usage(str(exc)) from None
    trace = failure.trace if failure is not None else result
    if recorder is not None and record is not None:
        recorder.recording.module = call.module_ref
        recorder.recording.function = call.function
        if isinstance(trace, ModuleResult):
            recorder.recording.fetches = trace.fetches
        _save_recording(recorder, record)
    if show_log:
        _print_trace(trace)
    if failure is not None:
        where = f" (line {failure.line})" if failure.line else ""
        raise _failure(failure.kind, f"{failure.message}{where}")
    if replayer is not None and replayer.misses:
        # the script caught the FetchError, but the run did not replay what was recorded
        raise _failure("script_error", f"unmatched request in replay: {replayer.misses[0]}")
    # The return value is script output: a secret in it is masked here, as in the server.
    shown = redact_data(plain(result.value), call.secret_values)
    json.dump(shown, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _local_call(module: ValidatedModule, name: str, settings_text: str) -> ModuleCall:
    try:
        value = loads_checked(settings_text, root="--settings")
    except InvalidJson as exc:
        raise _usage(str(exc)) from None
    try:
        return local_call(module, name, value)
    except InvalidInput as exc:
        raise _usage(f"--settings: {_one_line(exc.problems)}") from None


def _offline(load: Callable[[Path], T], path: Path | None, option: str) -> T | None:
    """A contacts or storage file, or a usage error naming the option and the file."""
    if path is None:
        return None
    try:
        return load(path)
    except InvalidInput as exc:
        raise _usage(f"{option}: {exc.message}: {_one_line(exc.problems)}") from None


def _keep_storage(kept: OfflineStorage, result: ModuleResult, path: Path | None) -> None:
    """The storage writes of a successful, validated call, written to ``--storage``."""
    try:
        kept.apply(result.storage_changes)
    except OSError as exc:
        raise _usage(f"--storage: cannot write {path}: {exc.strerror or exc}") from None


def _replayer(path: Path, call: ModuleCall) -> Replayer:
    try:
        recording = Recording.load(path)
    except InvalidInput as exc:
        raise _usage(f"--replay: {exc.message}: {_one_line(exc.problems)}") from None
    return Replayer(recording, call.secret_values, source=str(path))


def _save_recording(recorder: Recorder, path: Path) -> None:
    try:
        recorder.recording.save(path)
    except OSError as exc:
        raise _usage(f"--record: cannot write {path}: {exc.strerror or exc}") from None
    count = len(recorder.recording.exchanges)
    err.print(f"recorded {count} exchange(s) to {path}", markup=False, highlight=False)


def _print_trace(trace: object) -> None:
    """The captured log and the fetch calls of a run, for ``--show-log``."""
    if not isinstance(trace, ModuleResult):
        return
    for line in trace.log.splitlines():
        err.print(f"log: {line}", markup=False, highlight=False)
    for fetch in trace.fetches:
        err.print(f"fetch: {fetch_line(fetch)}", markup=False, highlight=False)


def fetch_line(fetch: dict[str, Any]) -> str:
    """One fetch-log entry as ``--show-log`` prints it:
    ``GET https://api.x.com/v1/t?key=*** -> 200 (3.1 ms, 120 bytes)``."""
    target = fetch.get("url") or fetch.get("host") or ""
    outcome = fetch.get("status") if fetch.get("error") is None else fetch.get("error")
    return (
        f"{fetch.get('method', 'GET')} {target} -> {outcome} "
        f"({fetch.get('ms', 0)} ms, {fetch.get('bytes', 0)} bytes)"
    )


def _compile_kind(script: str | None) -> str:
    """policy_violation when the sandbox policy refused the script, else invalid_module."""
    try:
        compile_script(script or "", allowed_imports=SCRIPT_IMPORTS)
    except ScriptCompileError as exc:
        return exc.kind
    return "invalid_module"


def _parse_arguments(raw: list[str], contract: ContractFunction) -> list[Any]:
    """The JSON arguments of the command line; omitted optional ones are ``None``."""
    if not contract.accepts_count(len(raw)):
        raise _usage(
            f"expected {contract.expected_count()} argument(s) "
            f"({contract.described_parameters()}), got {len(raw)}"
        )
    values = []
    for name, text in zip(contract.parameters, raw, strict=False):
        try:
            values.append(loads_checked(text, root=f"argument {name}"))
        except InvalidJson as exc:
            raise _usage(_shortened(str(exc))) from None
    return contract.complete(values)


def _shortened(message: str, limit: int = 300) -> str:
    """One readable line, whatever was typed (a 100,000-character argument included)."""
    return message if len(message) <= limit else f"{message[: limit - 3]}..."
