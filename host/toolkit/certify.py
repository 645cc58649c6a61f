"""``crm-host module certify``: the standard checks every module must pass before it reaches
tenants, like a connector acceptance suite, and the report that proves it.

Why a fixed suite besides the module's own cases: the cases say what the integrator thought
of; certification asks what every module owes the host whatever it integrates:

``manifest``         the upload checks (manifest schema, compile, contract parameters);
``settings-schema``  every secret-looking setting is ``writeOnly`` (so it is encrypted and
                     masked), every required setting has a description (an admin fills it in);
``egress``           every ``fetch`` whose host is known statically goes to a declared host;
``cases``            each implemented function has cases, at least one of them expecting a
                     value (an error case alone checks no return value), and they all pass
                     offline — the values they return are contract-valid (validated as on
                     a server);
``recorded-fetch``   no case fetches anything its recording does not answer;
``limits``           no case hits a limit of the manifest (time, memory, fetches, storage);
``webhook-stable``   ParseWebhookRequest gives the same result for the same request twice;
``webhook-malformed`` stricter than the runtime contract: an empty body, invalid JSON,
                     an invalid form, a huge body and a wrong content type are each answered
                     with a 4xx ``response``, not an exception (a 500 makes services retry).

The report is bound to the module's exact content by its ``contentHash`` (the hash the host
stores a version under) and hashed as a whole (``digest``); the host that certifies an upload
also seals the digest with its secret key, so a stored report that was edited no longer
verifies (:mod:`host.certification`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from host.contract.enforce import validate_return
from host.errors import InvalidInput, ModuleCallFailed
from host.module_runtime import run_module_function
from host.modules.packages import ModulePackage
from host.modules.registry import ValidatedModule, validate_package
from host.toolkit.cases import WEBHOOK, Case, Outcome, discover, load_cases, run_case
from host.toolkit.lint import egress_findings
from host.toolkit.local_run import local_call, plain
from host.toolkit.recording import Recording
from host.toolkit.replayer import Replayer
from host.version import host_version
from sandbox.pool import SandboxPool

FORMAT = 1
REPORT_NAME = "certification.json"
LIMIT_KINDS = ("timeout", "memory_limit", "limit_exceeded")
SECRET_NAME = re.compile(r"secret|token|password|passwd|api_?key|private_?key|access_?key", re.I)
HUGE_BODY_BYTES = 1024 * 1024


@dataclass
class Check:
    name: str
    passed: bool
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "details": self.details}


@dataclass
class Certification:
    module: str
    version: str
    content_hash: str
    checks: list[Check]
    certified_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    certified_by: str = field(default_factory=lambda: f"crm-module-host {host_version()}")

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def body(self) -> dict[str, Any]:
        """The report without its digest: what the digest covers."""
        return {
            "format": FORMAT,
            "module": self.module,
            "version": self.version,
            "contentHash": self.content_hash,
            "passed": self.passed,
            "checks": [c.as_dict() for c in self.checks],
            "certifiedAt": self.certified_at,
            "certifiedBy": self.certified_by,
        }

    def as_dict(self) -> dict[str, Any]:
        body = self.body()
        return {**body, "digest": digest(body)}


def digest(body: dict[str, Any]) -> str:
    """sha256 of the report's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def certify(
    directory: Path,
    package: ModulePackage,
    *,
    max_script_bytes: int,
    allow: Sequence[str] = (),
    pool: SandboxPool | None = None,
) -> Certification:
    """Every check on the module whose cases are in ``directory/tests``; a package that fails
    the upload checks gets the ``manifest`` check only (nothing else can run)."""
    identity = _identity(package)
    try:
        module = validate_package(package, max_script_bytes=max_script_bytes)
    except InvalidInput as exc:
        failed = Check("manifest", False, [str(p) for p in exc.problems])
        return Certification(*identity, "", [failed])
    checks = [Check("manifest", True), _settings_schema(module), _egress(module)]
    if pool is None:
        with SandboxPool(size=1) as own:
            checks += _dynamic(directory, module, allow, own)
    else:
        checks += _dynamic(directory, module, allow, pool)
    return Certification(module.manifest.id, module.manifest.version, module.content_hash, checks)


def _identity(package: ModulePackage) -> tuple[str, str]:
    try:
        data = json.loads(package.manifest_text)
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    return str(data.get("id", "")), str(data.get("version", ""))


# --------------------------------------------------------------------------- static


def _settings_schema(module: ValidatedModule) -> Check:
    schema = module.manifest.settings or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required", []) if isinstance(schema, dict) else []
    details = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        if SECRET_NAME.search(name) and spec.get("writeOnly") is not True:
            details.append(
                f"manifest.json: $.settings.properties.{name}: looks like a secret but is not "
                '"writeOnly": true (it would be stored unencrypted and shown unmasked)'
            )
        if name in required and not str(spec.get("description", "")).strip():
            details.append(
                f"manifest.json: $.settings.properties.{name}: required but has no "
                "description (the admin who fills it in is not told what it is)"
            )
    return Check("settings-schema", not details, details)


def _egress(module: ValidatedModule) -> Check:
    tree = ast.parse(module.script)
    name = module.manifest.script
    findings = egress_findings(tree, name, list(module.manifest.egress))
    return Check("egress", not findings, [f"{f.location}: {f.message}" for f in findings])


# --------------------------------------------------------------------------- dynamic


def _dynamic(
    directory: Path, module: ValidatedModule, allow: Sequence[str], pool: SandboxPool
) -> list[Check]:
    cases: list[Case] = []
    broken: list[str] = []
    for path in discover(directory):
        try:
            cases.extend(load_cases(path, module, directory))
        except InvalidInput as exc:
            broken += [str(p) for p in exc.problems]  # located in tests/<file> already
    outcomes = [(case, run_case(pool, module, case, allow)) for case in cases]
    checks = [
        _cases(module, cases, outcomes, broken),
        Check(
            "recorded-fetch",
            not any(o.unrecorded for _, o in outcomes),
            [
                f"{o.case_id}: {o.unrecorded} has no recorded answer"
                for _, o in outcomes
                if o.unrecorded
            ],
        ),
        Check(
            "limits",
            not any(o.error_kind in LIMIT_KINDS for _, o in outcomes),
            [
                f"{o.case_id}: {o.error_kind} under the manifest's limits"
                for _, o in outcomes
                if o.error_kind in LIMIT_KINDS
            ],
        ),
    ]
    if WEBHOOK in module.functions:
        webhooks = [(c, o) for c, o in outcomes if c.function == WEBHOOK]
        checks.append(_stable(pool, module, webhooks, allow))
        checks.append(_malformed(pool, module, [c for c, _ in webhooks], allow))
    return checks


def _cases(
    module: ValidatedModule,
    cases: list[Case],
    outcomes: list[tuple[Case, Outcome]],
    broken: list[str],
) -> Check:
    details = list(broken)
    covered = {c.function for c in cases}
    returning = {c.function for c in cases if c.expect != "error"}
    for function in module.functions:
        if function not in covered:
            details.append(f"{function} is implemented but no case in tests/ calls it")
        elif function not in returning:
            details.append(
                f"{function}: every case in tests/ expects an error, so none checks that "
                "it returns a contract-valid value (add a case with returns or actions)"
            )
    for _, outcome in outcomes:
        if outcome.status != "PASSED":
            first = outcome.detail.splitlines()[0] if outcome.detail else ""
            details.append(f"{outcome.case_id} {outcome.status}: {first}")
    if not cases and not broken:
        details.append("no cases: add *.json case files to tests/ (see `crm-host module test`)")
    return Check("cases", not details, details)


def _stable(
    pool: SandboxPool,
    module: ValidatedModule,
    webhooks: list[tuple[Case, Outcome]],
    allow: Sequence[str],
) -> Check:
    """Each webhook case that returned a value, run again: the same value both times."""
    details = []
    for case, first in webhooks:
        if first.value is None:
            continue
        again = run_case(pool, module, case, allow)
        if again.value != first.value:
            details.append(f"{case.id}: a second run of the same request gave another result")
    return Check("webhook-stable", not details, details)


def malformed_requests(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Bodies no service sends on purpose, on ``base``'s URL, query and other headers (so
    a secret in the URL still matches and only the body is wrong)."""
    headers = {k: v for k, v in base.get("headers", {}).items() if k.lower() != "content-type"}

    def request(body: str, content_type: str | None) -> dict[str, Any]:
        extra = {"content-type": content_type} if content_type else {}
        return {**base, "method": "POST", "headers": {**headers, **extra}, "body": body}

    return {
        "an empty body": request("", None),
        "invalid JSON": request('{"events": [', "application/json"),
        "an invalid form": request("%zz=&&=%", "application/x-www-form-urlencoded"),
        "a huge body": request("x" * HUGE_BODY_BYTES, "application/json"),
        "a wrong content type": request("<event>delivered</event>", "application/xml"),
    }


def _malformed(
    pool: SandboxPool, module: ValidatedModule, cases: list[Case], allow: Sequence[str]
) -> Check:
    if not cases:
        return Check("webhook-malformed", False, [f"{WEBHOOK} has no case to start from"])
    base = cases[0]
    call = local_call(module, WEBHOOK, base.settings)
    details = []
    for what, request in malformed_requests(base.args[0]).items():
        replayer = Replayer(Recording(), call.secret_values, source="a malformed request")
        try:
            ran = run_module_function(
                pool, call, [request], egress_allow=allow, network=replayer.network()
            )
            value = plain(validate_return(call, ran).value)
        except ModuleCallFailed as exc:
            details.append(f"{what}: raised {exc.kind}: {exc.message} (answer it with a 4xx)")
            continue
        status = ((value or {}).get("response") or {}).get("status", 200)
        if not 400 <= int(status) < 500:
            details.append(f"{what}: answered {status}, expected a 4xx response")
    return Check("webhook-malformed", not details, details)


def render(report: Certification) -> str:
    """One line per check, the details of failed ones under it, then the verdict."""
    lines = [f"certify {report.module}@{report.version} (content {report.content_hash[:12]})"]
    for check in report.checks:
        lines.append(f"{'PASSED' if check.passed else 'FAILED'} {check.name}")
        lines += [f"  - {d}" for d in check.details if not check.passed]
    verdict = "certified" if report.passed else "NOT certified"
    failed = [c.name for c in report.checks if not c.passed]
    lines.append(verdict + (f": failed {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)
