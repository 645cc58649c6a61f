"""The script editor (integrator), a module's *Scripts* tab: the script of a version in a
textarea with a highlighted, numbered view; *Validate* (the checks of ``crm-host module
validate``: upload errors and lint warnings, each at its line); *Run function* (one contract
function with typed-in JSON arguments and settings, in a throwaway worker on scratch
storage, as ``crm-host module run`` does); *Save as new version* (an upload: versions stay
immutable). The page holds no logic of its own: it calls ``host.toolkit`` and the registry.

The textarea is the default. When the optional rich editor is built (``console-editor/``,
into ``static/editor/editor.js``), the page loads it and CodeMirror takes the textarea's place,
copying every edit back into it, so the posted form is the same either way; ``?editor=plain``
keeps the textarea for whoever prefers it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from host.api.bodies import checked_router
from host.console.csrf import check_token, read_form
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import ModulesViewer
from host.console.highlight import Marker, highlighted_lines, line_of, stylesheet
from host.console.templating import SECURITY_HEADERS, redirect, render
from host.console_sessions import SignedIn
from host.contract.enums import ModuleKind
from host.contract.functions import FUNCTIONS_BY_KIND
from host.errors import Conflict, InvalidInput, Problem
from host.json_values import InvalidJson, loads_checked
from host.modules.packages import ModulePackage
from host.modules.registry import validate_package
from host.platform import Host
from host.toolkit.lint import Finding, validate_module
from host.toolkit.local_run import LocalRun, run_function

router = checked_router(prefix="/console", include_in_schema=False)

FIELDS = ("script", "version", "function", "arguments", "settings")
MAX_EDITOR_FORM_BYTES = 2 * 1024 * 1024
"""A script (``CRM_HOST_MAX_SCRIPT_BYTES``, 1 MiB by default) plus the other fields."""

EDITOR_BUNDLE = files("host.console").joinpath("static", "editor", "editor.js")
"""The rich editor's build output; a plain ``pip install -e .`` has none, and the page then
offers the textarea alone (it never links a file that is not there)."""

EditorChoice = Annotated[Literal["plain"] | None, Query(alias="editor")]
"""``?editor=plain``: the textarea even when the rich editor is built."""


def _with_style_nonce(policy: str, nonce: str) -> str:
    """The console's policy with ``nonce`` admitted in ``style-src``: CodeMirror mounts its
    styles in a ``<style>`` element it gives the nonce (``EditorView.cspNonce``), so nothing
    else inline is allowed and scripts stay ``'self'`` only."""
    directives = [
        f"{d} 'nonce-{nonce}'" if d.split(" ", 1)[0] == "style-src" else d
        for d in policy.split("; ")
    ]
    return "; ".join(directives)


@dataclass
class Editor:
    """What the editor page shows for one module version and the text being edited."""

    module_id: str
    base_version: str
    script_name: str
    manifest: dict[str, Any]
    values: dict[str, str]
    functions: list[str]
    findings: list[Finding] = field(default_factory=list)
    validated: bool = False
    run: LocalRun | None = None
    errors: FormErrors = field(default_factory=FormErrors)

    @property
    def failed(self) -> bool:
        """Validation found an error: an upload would refuse the script."""
        return any(f.severity == "error" for f in self.findings)

    def package(self) -> ModulePackage:
        """The edited script with the base version's manifest, renumbered to the new
        version (what *Save as new version* uploads)."""
        manifest = {**self.manifest, "version": self.values["version"].strip()}
        return ModulePackage(
            json.dumps(manifest), self.values["script"], self.script_name, "console editor"
        )


def _next_version(version: str) -> str:
    """``1.2.3`` → ``1.2.4``: a suggestion only, the integrator may type another."""
    core, _, _ = version.partition("-")
    parts = core.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]}.{parts[1]}.{int(parts[2]) + 1}"
    return version


def _editor(host: Host, module_id: str, version: str | None, values: dict[str, str]) -> Editor:
    row = host.registry.version(module_id, version)
    kind = host.registry.get(module_id).kind
    functions = [f.name for f in FUNCTIONS_BY_KIND[ModuleKind(kind)]]
    defaults = {
        "script": row.script,
        "version": _next_version(row.version),
        "function": functions[0] if functions else "",
        "arguments": "[]",
        "settings": "{}",
    }
    return Editor(
        module_id=row.module_id,
        base_version=row.version,
        script_name=str(row.manifest.get("script") or "module.py"),
        manifest=dict(row.manifest),
        values={**defaults, **{k: v for k, v in values.items() if v or k == "script"}},
        functions=functions,
    )


def _page(
    request: Request,
    viewer: SignedIn,
    editor: Editor,
    view: str | None,
    status: int = 200,
) -> Response:
    markers: list[tuple[int, Marker]] = []
    for finding in editor.findings:
        line = line_of(finding.location, editor.script_name)
        if line is not None:
            markers.append((line, Marker(finding.severity, finding.message)))
    failure = editor.run.failure if editor.run else None
    if failure is not None and failure.line:
        markers.append((failure.line, Marker("error", f"{failure.kind}: {failure.message}")))
    # checked per page, so a build made while the host runs is picked up
    built = EDITOR_BUNDLE.is_file()
    rich = built and view != "plain"
    nonce = secrets.token_urlsafe(18) if rich else ""
    response = render(
        request,
        "scripts.html",
        {
            "editor": editor,
            "lines": highlighted_lines(editor.values["script"], markers),
            "unplaced": [
                f for f in editor.findings if line_of(f.location, editor.script_name) is None
            ],
            "errors": editor.errors,
            "json": lambda value: json.dumps(value, indent=2, ensure_ascii=False),
            "rich_editor": rich,
            "editor_built": built,
            "plain": view == "plain",
            "style_nonce": nonce,
        },
        viewer=viewer,
        status_code=status,
    )
    if rich:
        policy = response.headers["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = _with_style_nonce(policy, nonce)
    return response


@router.get("/highlight.css")
def highlight_css() -> Response:
    """Pygments' token colours, produced from the installed package (nothing copied)."""
    headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
    return PlainTextResponse(stylesheet(), media_type="text/css", headers=headers)


@router.get("/modules/{module_id}/scripts")
def script_editor(
    request: Request,
    module_id: str,
    viewer: ModulesViewer,
    version: Annotated[str | None, Query(max_length=64)] = None,
    view: EditorChoice = None,
) -> Response:
    host: Host = request.app.state.host
    return _page(request, viewer, _editor(host, module_id, version, {}), view)


@router.post("/modules/{module_id}/scripts")
async def script_action(
    request: Request,
    module_id: str,
    viewer: ModulesViewer,
    version: Annotated[str | None, Query(max_length=64)] = None,
    view: EditorChoice = None,
) -> Response:
    host: Host = request.app.state.host
    form = await read_form(request, max_bytes=MAX_EDITOR_FORM_BYTES)
    check_token(viewer, form)
    values = {name: str(form.get(name) or "") for name in FIELDS}
    values["script"] = values["script"].replace("\r\n", "\n")
    editor = _editor(host, module_id, version, values)
    action = str(form.get("action") or "validate")
    limit = host.settings.max_script_bytes
    if action == "save":
        return await _save(request, viewer, editor, host, view)
    editor.findings = await run_in_threadpool(
        validate_module, editor.package(), max_script_bytes=limit
    )
    editor.validated = True
    if action == "run" and not editor.failed:
        try:
            editor.run = await run_in_threadpool(_run, host, editor)
        except InvalidInput as exc:
            editor.errors = FormErrors.of(exc, FIELDS)
            return _page(request, viewer, editor, view, status=422)
    return _page(request, viewer, editor, view, status=422 if editor.failed else 200)


def _json_field(text: str, name: str) -> Any:
    try:
        return loads_checked(text or "null", root=name)
    except InvalidJson as exc:
        raise InvalidInput(f"{name} is not valid JSON", [Problem(name, str(exc))]) from None


def _run(host: Host, editor: Editor) -> LocalRun:
    arguments = _json_field(editor.values["arguments"], "arguments")
    if not isinstance(arguments, list):
        raise InvalidInput(
            "arguments is not a list",
            [Problem("arguments", "a JSON array, one value per parameter")],
        )
    settings = _json_field(editor.values["settings"], "settings")
    module = validate_package(editor.package(), max_script_bytes=host.settings.max_script_bytes)
    return run_function(
        module,
        editor.values["function"],
        arguments,
        settings,
        egress_allow=host.settings.egress_allow,
    )


async def _save(
    request: Request, viewer: SignedIn, editor: Editor, host: Host, view: str | None
) -> Response:
    try:
        info = await run_in_threadpool(host.registry.upload, editor.package())
    except (InvalidInput, Conflict) as exc:
        editor.errors = FormErrors.of(exc, FIELDS)
        editor.errors.by_field.setdefault("version", []).extend(
            p.message for p in exc.problems if p.location == "manifest.json: $.version"
        )
        editor.findings = [
            Finding("error", p.location, p.message)
            for p in exc.problems
            if line_of(p.location, editor.script_name) is not None
        ]
        status = 409 if isinstance(exc, Conflict) else 422
        return _page(request, viewer, editor, view, status=status)
    if not info.created:
        editor.errors = FormErrors(
            f"{info.id}@{info.version} already exists with this very content; nothing was saved"
        )
        return _page(request, viewer, editor, view, status=409)
    request.state.audit_action = f"saved module {info.id}@{info.version} from the script editor"
    flash(request, viewer, f"Saved {info.id}@{info.version} as a new version.")
    plain = "&editor=plain" if view == "plain" else ""
    return redirect(f"/console/modules/{info.id}/scripts?version={info.version}{plain}")
