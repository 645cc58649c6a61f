"""The integrator's commands: ``module new``, ``module validate``, ``module test``, and
``module upload --url`` to a running host. (``module run`` lives in module_run.py.)"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from host.cli.output import err, fail, handles_errors, out
from host.config import HostSettings
from host.contract.enums import ModuleKind
from host.errors import InvalidInput
from host.modules.packages import MANIFEST_NAME, from_directory
from host.toolkit.cases import render, run_module_cases
from host.toolkit.certify import REPORT_NAME, certify
from host.toolkit.certify import render as render_certification
from host.toolkit.lint import validate_module
from host.toolkit.local_run import load_module
from host.toolkit.scaffold import create_module
from sandbox.egress import EgressPolicy


@handles_errors
def module_new(
    name: Annotated[str, typer.Argument(help="Module id, a slug such as acme-mail.")],
    kind: Annotated[ModuleKind, typer.Option("--kind", help="email or messenger.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the module folder.")
    ] = Path("."),
) -> None:
    """Scaffold a module: manifest, documented function stubs, an example test case."""
    root = create_module(directory, name, kind)
    out.print(f"created {root}/ ({kind.value} module {name})", markup=False, highlight=False)
    for entry in ("manifest.json", "module.py", "tests/example_webhook.json", "README.md"):
        out.print(f"  {root / entry}", markup=False, highlight=False)
    out.print(f"next: crm-host module validate {root}", markup=False, highlight=False)


def module_validate(
    directory: Annotated[Path, typer.Argument(help="Module folder.")],
) -> None:
    """Check a module as an upload would, and warn about what would fail later."""
    max_script = HostSettings().max_script_bytes
    try:
        package = from_directory(directory, max_script_bytes=max_script)
    except InvalidInput as exc:
        raise fail(exc.message, (str(p) for p in exc.problems)) from None
    findings = validate_module(package, max_script_bytes=max_script)
    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity == "warning"]
    for finding in findings:
        (err if finding.severity == "error" else out).print(
            str(finding), markup=False, highlight=False
        )
    verdict = "invalid" if errors else "valid"
    out.print(
        f"{directory}: {verdict}: {_count(len(errors), 'error')}, "
        f"{_count(len(warnings), 'warning')}",
        markup=False,
        highlight=False,
    )
    if errors:
        raise typer.Exit(1)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


AllowHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host",
        help="Host, host:port or CIDR whose recorded private/loopback address replays "
        "may reach (repeatable).",
    ),
]


def replay_allow_list(settings: HostSettings, allow_host: list[str] | None) -> list[str]:
    """The admin's egress waivers plus ``--allow-host``, refused with one line if invalid."""
    allow = [*settings.egress_allow, *(allow_host or [])]
    try:
        EgressPolicy.from_config([], allow)
    except ValueError as exc:
        raise fail(f"--allow-host: {exc}") from None
    return allow


@handles_errors
def module_test(
    directory: Annotated[Path, typer.Argument(help="Module folder with a tests/ folder.")],
    allow_host: AllowHostOption = None,
) -> None:
    """Run the module's test cases (tests/*.json) offline in the sandbox."""
    settings = HostSettings()
    allow = replay_allow_list(settings, allow_host)
    module = load_module(directory, max_script_bytes=settings.max_script_bytes)
    report = run_module_cases(directory, module, allow)
    out.print(render(report), markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@handles_errors
def module_certify(
    directory: Annotated[Path, typer.Argument(help="Module folder with a tests/ folder.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help=f"Where to write the report (default: DIR/{REPORT_NAME}).",
            dir_okay=False,
        ),
    ] = None,
    allow_host: AllowHostOption = None,
) -> None:
    """Run the certification checks and write the report bound to the module's content."""
    settings = HostSettings()
    allow = replay_allow_list(settings, allow_host)
    package = from_directory(directory, max_script_bytes=settings.max_script_bytes)
    report = certify(directory, package, max_script_bytes=settings.max_script_bytes, allow=allow)
    target = output or directory / REPORT_NAME
    try:
        target.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise fail(f"--output: cannot write {target}: {exc.strerror or exc}") from None
    out.print(render_certification(report), markup=False, highlight=False)
    out.print(f"report: {target}", markup=False, highlight=False)
    if not report.passed:
        raise typer.Exit(1)


# --- upload to a running host ---------------------------------------------------------------


def package_zip(path: Path, max_script_bytes: int) -> bytes:
    """A zip to upload: a .zip file as it is, or a folder's manifest, script and ``tests/``
    (the host keeps manifest and script; it runs the tests once, to certify the version)."""
    if path.is_file():
        return path.read_bytes()
    package = from_directory(path, max_script_bytes=max_script_bytes)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_NAME, package.manifest_text)
        if package.script is not None and package.script_name is not None:
            archive.writestr(package.script_name, package.script)
        for name, data in package.tests.items():  # the host certifies from them
            archive.writestr(name, data)
    return buffer.getvalue()


def upload_remote(path: Path, url: str, token: str | None) -> None:
    """POST the package to ``{url}/api/v1/modules`` and print the host's answer."""
    if not token:
        raise fail("--token (or CRM_HOST_ADMIN_TOKEN) is required with --url")
    data = package_zip(path, HostSettings().max_script_bytes)
    endpoint = url.rstrip("/") + "/api/v1/modules"
    try:
        response = httpx.post(
            endpoint,
            files={"package": (f"{path.name}.zip", data, "application/zip")},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {endpoint}: {exc}") from None
    body = _json(response)
    if response.status_code in (200, 201) and isinstance(body, dict):
        verb = "stored" if response.status_code == 201 else "already stored (identical)"
        out.print(
            f"{body.get('id')}@{body.get('version')} {verb} on {url}: {body.get('kind')} module",
            markup=False,
            highlight=False,
        )
        out.print("functions: " + (", ".join(body.get("functions") or []) or "none"))
        return
    message = body.get("message") if isinstance(body, dict) else None
    problems = body.get("problems") if isinstance(body, dict) else None
    details = [
        f"{p.get('location')}: {p.get('message')}" if p.get("location") else str(p.get("message"))
        for p in problems or []
        if isinstance(p, dict)
    ]
    reason = message or response.text[:200] or response.reason_phrase
    raise fail(f"upload refused ({response.status_code}): {reason}", details)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
