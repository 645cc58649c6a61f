"""``crm-host module test``: a module's own test cases, run offline in the real sandbox.

Why a case file and not pytest: an integrator writes a module, not a Python project; a case
is data (which function, which arguments and settings, which recording answers fetch(), what
must come back), runs through exactly the server's sandbox, limits and return validation,
and needs nothing installed besides ``crm-host``.

Case files are the ``*.json`` files directly in the module's ``tests/`` folder (recordings
usually live in ``tests/recordings/``). A file holds one case object or a list of them::

    {"name": "first page of templates",
     "function": "CRM_Marketing_ImportTemplates",      (the prefix is optional)
     "args": [0, 100],
     "settings": {"api_key": "test-key"},
     "replay": "recordings/templates.json",             (relative to the case file)
     "returns": [{"externalId": "t1", "name": "Welcome"}]}

Exactly one expectation: ``returns`` (the validated value, as ``module run`` prints it),
``actions`` (the ``actions`` of a WebhookResult only) or ``error`` (``{"kind": ...,
"message": <substring>}`` or just the kind). Without ``replay`` every fetch() fails: a case
never reaches the network. A replayed fetch() passes the module's egress policy on the
recorded addresses, so a recording made against a local fake service (a loopback address)
needs the same waiver as the live run: ``module test --allow-host`` or
``CRM_HOST_EGRESS_ALLOW``.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from host.calls import ModuleCall
from host.contract.enforce import validate_return
from host.contract.functions import contract_function
from host.errors import InvalidInput, ModuleCallFailed, Problem
from host.marketing.campaign_keys import offline_callbacks as offline_campaign_keys
from host.module_runtime import run_module_function
from host.modules.registry import ValidatedModule
from host.toolkit.local_run import full_name, local_call, plain
from host.toolkit.offline_state import OfflineContacts, OfflineStorage, offline_callbacks
from host.toolkit.recording import Recording
from host.toolkit.replayer import Replayer
from host.toolkit.webhook_cases import webhook_request
from sandbox.invocation import redact_data, redact_text
from sandbox.pool import SandboxPool

CASES_DIR = "tests"
EXPECTATIONS = ("returns", "actions", "error")
_KNOWN_KEYS = {
    "name",
    "description",
    "function",
    "args",
    "settings",
    "replay",
    "campaignKeys",
    "contacts",
    "storage",
    "storageAfter",
    *EXPECTATIONS,
}
WEBHOOK = "CRM_Marketing_ParseWebhookRequest"

Status = Literal["PASSED", "FAILED", "ERROR"]


@dataclass(frozen=True)
class Case:
    """One case, checked against the module (function of its kind, argument count)."""

    id: str  # tests/webhook.json::delivered events
    function: str
    args: list[Any]
    settings: dict[str, Any]
    replay: Path | None
    expect: str  # one of EXPECTATIONS
    expected: Any
    campaign_keys: dict[str, str] = field(default_factory=dict)
    """``campaignKeys``: what ``crm.campaign_for_key`` finds (the host's attribution map)."""
    contacts: OfflineContacts = field(default_factory=OfflineContacts)
    """``contacts``: the tenant's contacts ``crm.contacts(ids)`` serves."""
    storage: dict[str, Any] = field(default_factory=dict)
    """``storage``: the module's storage when the call starts."""
    storage_after: dict[str, Any] | None = None
    """``storageAfter``: the storage the call must leave (what a server would keep)."""


@dataclass
class Outcome:
    case_id: str
    status: Status
    detail: str = ""
    log: str = ""
    seconds: float = 0.0
    error_kind: str | None = None
    """The kind of the call's failure, expected or not (certification refuses limits hit)."""
    unrecorded: str | None = None
    """The first request no recording answered, as "METHOD URL" (a case never goes live)."""
    value: Any = None
    """What the call returned, as ``module run`` prints it (None on failure)."""


@dataclass
class Report:
    module: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.status == "PASSED" for o in self.outcomes)


def discover(directory: Path) -> list[Path]:
    folder = directory / CASES_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def load_cases(path: Path, module: ValidatedModule, root: Path) -> list[Case]:
    """The cases of one file; every problem is reported at once, located in the file."""
    shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            "case file is not JSON", [Problem(f"{shown}:{exc.lineno}", exc.msg)]
        ) from None
    items = data if isinstance(data, list) else [data]
    cases, problems = [], []
    for i, item in enumerate(items):
        where = f"{shown}: $[{i}]" if isinstance(data, list) else f"{shown}: $"
        default = f"{path.stem}[{i}]" if isinstance(data, list) else path.stem
        try:
            cases.append(_case(item, where, default, shown, path.parent, module))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput("case file is invalid", problems)
    return cases


def _case(
    item: Any, where: str, default: str, shown: str, folder: Path, module: ValidatedModule
) -> Case:
    if not isinstance(item, dict):
        raise InvalidInput("", [Problem(where, "a case must be a JSON object")])
    problems = [Problem(f"{where}.{k}", "unknown key") for k in item if k not in _KNOWN_KEYS]
    name = full_name(str(item.get("function", "")))
    contract = contract_function(module.manifest.kind, name)
    if "function" not in item:
        problems.append(Problem(f"{where}.function", "required"))
    elif contract is None:
        problems.append(
            Problem(f"{where}.function", f"{name} is not a function of {module.manifest.kind}")
        )
    args = item.get("args", [])
    if not isinstance(args, list):
        problems.append(Problem(f"{where}.args", "must be a list of the function's arguments"))
    elif contract is not None and not contract.accepts_count(len(args)):
        problems.append(
            Problem(
                f"{where}.args",
                f"{name} takes {contract.expected_count()} "
                f"({contract.described_parameters()}), got {len(args)}",
            )
        )
    settings = item.get("settings", {})
    if not isinstance(settings, dict):
        problems.append(Problem(f"{where}.settings", "must be an object"))
    campaign_keys = item.get("campaignKeys", {})
    if not isinstance(campaign_keys, dict) or not all(
        isinstance(v, str) for v in campaign_keys.values()
    ):
        problems.append(Problem(f"{where}.campaignKeys", "must map keys to campaign ids"))
    contacts = _collect(problems, lambda: _contacts(item.get("contacts", []), where, folder))
    storage = _collect(
        problems, lambda: OfflineStorage.from_data(item.get("storage", {}), f"{where}.storage")
    )
    after = item.get("storageAfter")
    if after is not None and not isinstance(after, dict):
        problems.append(Problem(f"{where}.storageAfter", "must be a JSON object of stored keys"))
    replay = item.get("replay")
    replay_path = folder / replay if isinstance(replay, str) else None
    if replay is not None and (replay_path is None or not replay_path.is_file()):
        problems.append(Problem(f"{where}.replay", f"no recording file {replay!r}"))
    given = [k for k in EXPECTATIONS if k in item]
    if len(given) != 1:
        problems.append(Problem(where, "needs exactly one of returns, actions, error"))
    if name == WEBHOOK and isinstance(args, list) and args and isinstance(args[0], dict):
        request = _collect(problems, lambda: webhook_request(args[0], folder, f"{where}.args[0]"))
        args = [request]
    if problems:
        raise InvalidInput("", problems)
    assert contract is not None and contacts is not None and storage is not None
    args = contract.complete(args)
    case_id = f"{CASES_DIR}/{Path(shown).name}::{item.get('name') or default}"
    return Case(
        case_id,
        name,
        args,
        settings,
        replay_path,
        given[0],
        item[given[0]],
        dict(campaign_keys),
        contacts,
        storage.data,
        after,
    )


T = TypeVar("T")


def _collect(problems: list[Problem], build: Callable[[], T]) -> T | None:
    """``build()``, or None with its problems added to ``problems``."""
    try:
        return build()
    except InvalidInput as exc:
        problems.extend(exc.problems)
        return None


def _contacts(value: Any, where: str, folder: Path) -> OfflineContacts:
    """A case's ``contacts``: the list itself, or a JSON file of it beside the case."""
    if isinstance(value, str):
        path = folder / value
        if not path.is_file():
            raise InvalidInput("", [Problem(f"{where}.contacts", f"no contacts file {value!r}")])
        return OfflineContacts.load(path)
    return OfflineContacts.from_data(value, f"{where}.contacts")


def run_case(
    pool: SandboxPool, module: ValidatedModule, case: Case, allow: Sequence[str] = ()
) -> Outcome:
    started = time.perf_counter()
    outcome = _run(pool, module, case, allow)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _run(pool: SandboxPool, module: ValidatedModule, case: Case, allow: Sequence[str]) -> Outcome:
    try:
        call = local_call(module, case.function, case.settings)
        recording = Recording.load(case.replay) if case.replay else Recording()
    except InvalidInput as exc:
        return Outcome(case.id, "ERROR", "\n".join([exc.message, *map(str, exc.problems)]))
    replayer = Replayer(recording, call.secret_values, source=_source(case))
    outcome = _judge(pool, call, case, replayer, allow)
    outcome.unrecorded = replayer.misses[0] if replayer.misses else None
    # The report is script output: a secret the script returned or logged is masked in it.
    outcome.detail = redact_text(outcome.detail, call.secret_values)
    outcome.log = redact_text(outcome.log, call.secret_values)
    outcome.value = redact_data(outcome.value, call.secret_values)
    return outcome


def _source(case: Case) -> str:
    return str(case.replay.name) if case.replay else "this case (it has no replay)"


def _judge(
    pool: SandboxPool, call: ModuleCall, case: Case, replayer: Replayer, allow: Sequence[str]
) -> Outcome:
    storage = OfflineStorage(json.loads(json.dumps(case.storage)))
    try:
        callbacks = {
            **offline_campaign_keys(dict(case.campaign_keys)),
            **offline_callbacks(case.contacts, storage),
        }
        ran = run_module_function(
            pool,
            call,
            case.args,
            egress_allow=allow,
            network=replayer.network(),
            callbacks=callbacks,
            storage=storage.snapshot(),
        )
        result = validate_return(call, ran)
    except ModuleCallFailed as exc:
        log = getattr(exc.trace, "log", "") or ""
        outcome = _check_error(case, exc, log)
        outcome.error_kind = exc.kind
        return _check_storage(case, storage, outcome) if outcome.status == "PASSED" else outcome
    storage.apply(result.storage_changes)
    if replayer.misses:
        detail = f"unmatched request in replay (the script caught it): {replayer.misses[0]}"
        return Outcome(case.id, "FAILED", detail, result.log)
    if case.expect == "error":
        return Outcome(
            case.id,
            "FAILED",
            f"expected an error {case.expected!r}, but {case.function} returned:\n"
            + _dump(plain(result.value)),
            result.log,
        )
    actual = plain(result.value)
    outcome = _compare(case, actual, result.log)
    outcome.value = actual
    return _check_storage(case, storage, outcome) if outcome.status == "PASSED" else outcome


def _compare(case: Case, actual: Any, log: str) -> Outcome:
    if case.expect == "actions":
        actual = actual.get("actions", []) if isinstance(actual, dict) else actual
    if actual == case.expected:
        return Outcome(case.id, "PASSED", log=log)
    what = "actions differ from the expected ones"
    if case.expect == "returns":
        what = "return value differs from the expected one"
    detail = f"{case.function}: the {what}\n" + diff(case.expected, actual)
    return Outcome(case.id, "FAILED", detail, log)


def _check_storage(case: Case, storage: OfflineStorage, passed: Outcome) -> Outcome:
    """A passed case fails when ``storageAfter`` is not what the call left behind (a failed
    call leaves only its ``durable=True`` writes)."""
    if case.storage_after is None or storage.data == case.storage_after:
        return passed
    detail = f"{case.function}: the storage left behind differs from storageAfter\n"
    return Outcome(case.id, "FAILED", detail + diff(case.storage_after, storage.data), passed.log)


def _check_error(case: Case, exc: ModuleCallFailed, log: str) -> Outcome:
    where = f" (line {exc.line})" if exc.line else ""
    got = f"{exc.kind}: {exc.message}{where}"
    if case.expect != "error":
        return Outcome(case.id, "FAILED", f"{case.function} failed: {got}", log)
    wanted = case.expected if isinstance(case.expected, dict) else {"kind": case.expected}
    kind_ok = wanted.get("kind") in (None, exc.kind)
    message_ok = str(wanted.get("message", "")) in exc.message
    if kind_ok and message_ok:
        return Outcome(case.id, "PASSED", log=log)
    return Outcome(case.id, "FAILED", f"expected error {_dump(wanted)}, got {got}", log)


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def diff(expected: Any, actual: Any) -> str:
    """A unified diff of the two values as sorted, indented JSON."""
    lines = difflib.unified_diff(
        _dump(expected).splitlines(),
        _dump(actual).splitlines(),
        fromfile="expected",
        tofile="actual",
        lineterm="",
    )
    return "\n".join(lines)


def run_module_cases(directory: Path, module: ValidatedModule, allow: Sequence[str] = ()) -> Report:
    """Every case of the module in ``directory``, one sandbox pool for all of them;
    ``allow`` is the admin's egress allow-list the replays run under."""
    started = time.perf_counter()
    report = Report(f"{module.manifest.id}@{module.manifest.version}")
    loaded: list[Case] = []
    for path in discover(directory):
        try:
            loaded.extend(load_cases(path, module, directory))
        except InvalidInput as exc:
            shown = f"{CASES_DIR}/{path.name}"
            report.outcomes.append(
                Outcome(shown, "ERROR", "\n".join([exc.message, *map(str, exc.problems)]))
            )
    if loaded:
        with SandboxPool(size=1) as pool:
            report.outcomes.extend(run_case(pool, module, case, allow) for case in loaded)
    report.seconds = time.perf_counter() - started
    return report


def render(report: Report, width: int = 80) -> str:
    """The report as pytest prints one: a line per case, then the failures, then a tally."""
    lines = [_rule(f"module test: {report.module}", "=", width)]
    lines += [f"{o.case_id} {o.status}" for o in report.outcomes]
    if not report.outcomes:
        lines.append(f"no cases found: add *.json case files to {CASES_DIR}/")
    failures = [o for o in report.outcomes if o.status != "PASSED"]
    if failures:
        lines += ["", _rule("FAILURES", "=", width)]
        for outcome in failures:
            lines += [_rule(outcome.case_id, "_", width), outcome.detail]
            if outcome.log:
                lines += [_rule("captured log", "-", width), outcome.log.rstrip("\n")]
    counts = []
    for status, word in (("FAILED", "failed"), ("ERROR", "error"), ("PASSED", "passed")):
        n = sum(1 for o in report.outcomes if o.status == status)
        if n:
            counts.append(f"{n} {word}{'s' if word == 'error' and n > 1 else ''}")
    tally = f"{', '.join(counts) or 'no cases'} in {report.seconds:.2f}s"
    lines.append(_rule(tally, "=", width))
    return "\n".join(lines)


def _rule(text: str, char: str, width: int) -> str:
    return f" {text} ".center(width, char)
