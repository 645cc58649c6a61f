"""``crm-host module validate``: the upload checks plus warnings about what would only fail
later, when a tenant uses the module.

Errors are exactly what an upload refuses (manifest schema, compile, contract parameters),
so ``validate`` passing means ``upload`` will accept the module. Warnings point at what an
upload accepts but a user would trip over:

* a ``fetch(...)`` whose URL is a literal (a string, an f-string or ``CONSTANT + ...`` whose
  host is known statically) to a host the manifest's ``egress`` does not list — that call is
  denied at run time;
* ``fetch`` used while ``egress`` is empty;
* an ``egress`` entry that only a platform admin's waiver (``CRM_HOST_EGRESS_ALLOW``,
  ``--allow-host``) can make reachable: a loopback/private/link-local IP literal,
  ``localhost``, a ``.internal``/``.local`` name — it works on the integrator's machine and is
  denied on every host whose admin did not open it;
* ``settings.get("x")`` for a setting the manifest does not declare (a literal
  ``settings["x"]`` of one is an error, as at upload: it can only raise ``KeyError``);
* each function of the kind that is missing or a ``NotImplementedError`` stub, with the
  feature of the CRM it leaves unsupported.

The checks read the source with :mod:`ast`: nothing is executed.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from host.contract.functions import FUNCTIONS_BY_KIND
from host.errors import InvalidInput
from host.modules.inspection import settings_reads, stub_functions
from host.modules.packages import ModulePackage
from host.modules.registry import declared_settings, validate_package
from sandbox.addresses import host_ip, normalise_host
from sandbox.egress import ALLOWED_SCHEMES, HostPattern


@dataclass(frozen=True)
class Finding:
    severity: Literal["error", "warning"]
    location: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{self.severity}: {where}{self.message}"


def validate_module(package: ModulePackage, *, max_script_bytes: int) -> list[Finding]:
    """Every error an upload would report, then every warning, in file order."""
    findings: list[Finding] = []
    try:
        validate_package(package, max_script_bytes=max_script_bytes)
    except InvalidInput as exc:
        findings += [Finding("error", p.location, p.message) for p in exc.problems]
    manifest = _loose_manifest(package.manifest_text)
    if package.script is not None and manifest is not None:
        findings += lint_script(package.script, package.script_name or "module.py", manifest)
    return findings


def _loose_manifest(text: str) -> dict[str, Any] | None:
    """The manifest as data even when it fails the schema, so warnings still come."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def lint_script(source: str, script_name: str, manifest: dict[str, Any]) -> list[Finding]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # the compile error is already reported
    findings = _waiver_findings(manifest.get("egress"))
    findings += egress_findings(tree, script_name, manifest.get("egress"))
    findings += _settings_findings(tree, script_name, manifest.get("settings"))
    findings += _missing_functions(tree, source, script_name, manifest.get("kind"))
    return findings


# --------------------------------------------------------------------------- egress


def _waiver_findings(egress: Any, source: str = "manifest.json") -> list[Finding]:
    findings = []
    for index, entry in enumerate(egress if isinstance(egress, list) else []):
        try:
            reason = HostPattern.parse(str(entry)).waiver_reason()
        except ValueError:
            continue  # reported by the schema / upload checks
        if reason is not None:
            findings.append(
                Finding(
                    "warning",
                    f"{source}: $.egress[{index}]",
                    f"{reason}: fetch() reaches it only where the platform admin also allows "
                    "it (CRM_HOST_EGRESS_ALLOW, or --allow-host for module run); on any other "
                    "host every call to it is denied",
                )
            )
    return findings


def egress_findings(tree: ast.Module, script_name: str, egress: Any) -> list[Finding]:
    patterns = []
    for entry in egress if isinstance(egress, list) else []:
        try:
            patterns.append(HostPattern.parse(str(entry)))
        except ValueError:
            continue  # reported by the schema / upload checks
    constants = _module_constants(tree)
    listed = ", ".join(p.text for p in patterns) or "nothing"
    findings = []
    for call, local in _fetch_calls(tree):
        where = f"{script_name}:{call.lineno}"
        if not patterns:
            findings.append(
                Finding(
                    "warning",
                    where,
                    "fetch() is called but the manifest lists no egress host: every call is denied",
                )
            )
            continue
        url = _url_argument(call)
        for host, ip, port in _url_hosts(url, constants, local) if url is not None else []:
            if not any(p.matches(host, ip, port) for p in patterns):
                findings.append(
                    Finding(
                        "warning",
                        where,
                        f"fetch to {host} will be denied: it is not in the manifest's egress "
                        f"({listed})",
                    )
                )
    return findings


Target = tuple[str, Any, int]


def _url_hosts(
    url: ast.expr, constants: dict[str, str], local: dict[str, list[ast.expr]]
) -> list[Target]:
    """The hosts a fetch URL is known to point at: its literal beginning, else the URL
    constants it is built from (``base = settings.get("base_url") or API``; ``base + path``),
    following the function's local assignments a few steps."""
    prefix, complete = _static_text(url, constants)
    target = _host_of(prefix, complete) if prefix is not None else None
    if target is not None:
        return [target]
    targets: list[Target] = []
    pending: list[ast.expr] = [url]
    seen: set[str] = set()
    while pending and len(seen) < 20:
        node = pending.pop()
        for name in (n for n in ast.walk(node) if isinstance(n, ast.Name)):
            if name.id in seen:
                continue
            seen.add(name.id)
            if name.id in constants and (found := _host_of(constants[name.id], True)):
                targets.append(found)
            pending.extend(local.get(name.id, []))
    return targets


def _fetch_calls(tree: ast.Module) -> list[tuple[ast.Call, dict[str, list[ast.expr]]]]:
    """Every ``fetch(...)`` call with the local assignments of the function it is in."""
    found = []
    scopes: list[ast.AST] = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))]
    for scope in scopes:
        local: dict[str, list[ast.expr]] = {}
        calls = []
        for node in _own_nodes(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        local.setdefault(target.id, []).append(node.value)
            if isinstance(node, ast.Call) and _is_fetch(node):
                calls.append(node)
        found += [(call, local if scope is not tree else {}) for call in calls]
    return found


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of a module or function, not of the functions nested in it."""
    nodes, pending = [], list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _is_fetch(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == "fetch"


def _url_argument(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "url"), None)


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Top-level ``NAME = "text"`` assignments (API base URLs usually live there)."""
    constants: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            text, complete = _static_text(node.value, constants)
            if complete and text is not None:
                constants[node.targets[0].id] = text
    return constants


def _static_text(node: ast.expr, constants: dict[str, str]) -> tuple[str | None, bool]:
    """The statically known beginning of a string expression, and whether it is all of it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, True
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id], True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, complete = _static_text(node.left, constants)
        if left is None or not complete:
            return left, False
        right, right_complete = _static_text(node.right, constants)
        return left + (right or ""), right_complete and right is not None
    if isinstance(node, ast.JoinedStr):
        text = ""
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                text += value.value
                continue
            known: str | None = None
            if (
                isinstance(value, ast.FormattedValue)
                and value.format_spec is None
                and value.conversion == -1
            ):
                known, complete = _static_text(value.value, constants)
                known = known if complete else None
            if known is None:
                return (text or None), False
            text += known
        return text, True
    return None, False


def _host_of(prefix: str, complete: bool) -> tuple[str, Any, int] | None:
    """Host, IP literal and port of a URL (or of its known beginning, when that already
    spells the whole host and port)."""
    scheme, sep, rest = prefix.partition("://")
    if not sep or scheme.lower() not in ALLOWED_SCHEMES:
        return None
    end = len(rest)
    for stop in "/?#":
        if stop in rest:
            end = min(end, rest.index(stop))
    if end == len(rest) and not complete:
        return None  # f"https://api.{region}.example.com": the host is not known
    try:
        parts = urlsplit(f"{scheme}://{rest[:end]}")
        host = normalise_host(parts.hostname or "")
        port = parts.port or ALLOWED_SCHEMES[scheme.lower()]
        return host, host_ip(host), port
    except ValueError:
        return None


# --------------------------------------------------------------------------- settings


def _settings_findings(tree: ast.Module, script_name: str, schema: Any) -> list[Finding]:
    """``settings.get("x")`` of an undeclared ``x`` (a literal ``settings["x"]`` is an upload
    error, reported by :func:`host.modules.registry.validate_package`)."""
    declared = declared_settings(schema)
    return [
        Finding(
            "warning",
            f"{script_name}:{read.line}",
            f"settings.get({read.key!r}) reads a setting the manifest's settings do not "
            "declare, so no tenant can set it and it is always the default",
        )
        for read in settings_reads(tree)
        if read.how == "get" and read.key not in declared
    ]


# --------------------------------------------------------------------------- functions


def _missing_functions(tree: ast.Module, source: str, script_name: str, kind: Any) -> list[Finding]:
    functions = FUNCTIONS_BY_KIND.get(kind) if isinstance(kind, str) else None  # type: ignore[call-overload]
    if functions is None:
        return []
    defined = {n.name: n.lineno for n in tree.body if isinstance(n, ast.FunctionDef)}
    stubs = stub_functions(source)
    findings = []
    for function in functions:
        feature = function.feature
        if function.name not in defined:
            findings.append(
                Finding(
                    "warning",
                    script_name,
                    f"{function.name} is not defined; unsupported for tenants: {feature}",
                )
            )
        elif function.name in stubs:
            findings.append(
                Finding(
                    "warning",
                    f"{script_name}:{defined[function.name]}",
                    f"{function.name} is not implemented (raises NotImplementedError); "
                    f"unsupported for tenants: {feature}",
                )
            )
    return findings
