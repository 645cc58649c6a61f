"""Modules (admin, integrator): the list with versions and the tenants using each, upload
(a zip, or a folder's files; drag and drop or the plain file input) with the validation
report at file:line or field, a version's manifest, settings schema, egress and functions,
and the diff between two versions."""

from __future__ import annotations

import difflib
import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Annotated

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.csrf import check_token, read_form
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import ModulesViewer
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.errors import Conflict, InvalidInput, Problem
from host.modules.packages import ModulePackage, from_directory, from_zip
from host.platform import Host

router = checked_router(prefix="/console/modules", include_in_schema=False)


def _host(request: Request) -> Host:
    host: Host = request.app.state.host
    return host


def _list_page(
    request: Request, viewer: SignedIn, errors: FormErrors | None = None, status: int = 200
) -> Response:
    host = _host(request)
    return render(
        request,
        "modules.html",
        {"modules": host.registry.list(), "uses": host.tenants.module_uses(),
         "errors": errors or FormErrors()},
        viewer=viewer,
        status_code=status,
    )  # fmt: skip


@router.get("")
def modules(request: Request, viewer: ModulesViewer) -> Response:
    return _list_page(request, viewer)


async def _package(files: list[UploadFile], max_archive: int, max_script: int) -> ModulePackage:
    """One zip, or the files of a module folder (by their base names)."""
    if not files:
        raise InvalidInput("module upload is invalid", [Problem("package", "choose a file")])
    if len(files) == 1 and (files[0].filename or "").lower().endswith(".zip"):
        data = await files[0].read(max_archive + 1)
        return from_zip(data, max_archive_bytes=max_archive, max_script_bytes=max_script)
    with tempfile.TemporaryDirectory(prefix="crm-console-upload-") as folder:
        for upload in files:
            name = PurePosixPath((upload.filename or "").replace("\\", "/")).name
            if not name or name.startswith("."):
                continue
            (Path(folder) / name).write_bytes(await upload.read(max_archive + 1))
        return from_directory(Path(folder), max_script_bytes=max_script)


@router.post("")
async def upload(request: Request, viewer: ModulesViewer) -> Response:
    host = _host(request)
    limit = host.settings.max_archive_bytes
    try:
        form = await read_form(request, max_bytes=limit + 64 * 1024)
        check_token(viewer, form)
        files = [f for f in form.getlist("package") if isinstance(f, UploadFile) and f.filename]
        package = await _package(files, limit, host.settings.max_script_bytes)
        info = await run_in_threadpool(host.registry.upload, package)
    except (InvalidInput, Conflict) as exc:
        return _list_page(request, viewer, FormErrors.of(exc), status=422)
    request.state.audit_action = f"uploaded module {info.id}@{info.version}"
    note = "uploaded" if info.created else "already stored, unchanged"
    flash(request, viewer, f"Module {info.id} {info.version} {note}.")
    return redirect(f"/console/modules/{info.id}/versions/{info.version}")


@router.get("/{module_id}/versions/{version}")
def version(request: Request, module_id: str, version: str, viewer: ModulesViewer) -> Response:
    host = _host(request)
    module = host.registry.get(module_id)
    row = host.registry.version(module_id, version)
    manifest = row.manifest
    return render(
        request,
        "module_version.html",
        {
            "module": module,
            "row": row,
            "manifest_json": json.dumps(manifest, indent=2, ensure_ascii=False),
            "schema_json": json.dumps(manifest.get("settings", {}), indent=2, ensure_ascii=False),
            "egress": manifest.get("egress", []),
            "uses": [u for u in host.tenants.module_uses().get(module_id, []) if u[1] == version],
        },
        viewer=viewer,
    )


@router.get("/{module_id}/diff")
def diff(
    request: Request,
    module_id: str,
    viewer: ModulesViewer,
    base: Annotated[str, Query(max_length=64)] = "",
    other: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    host = _host(request)
    module = host.registry.get(module_id)
    versions = [v.version for v in module.versions]
    base = base or (versions[-2] if len(versions) > 1 else versions[-1])
    other = other or versions[-1]
    old, new = host.registry.version(module_id, base), host.registry.version(module_id, other)
    sections = []
    for title, a, b, name in (
        ("manifest.json", json.dumps(old.manifest, indent=2), json.dumps(new.manifest, indent=2),
         "manifest.json"),
        ("script", old.script, new.script, str(new.manifest.get("script", "module.py"))),
    ):  # fmt: skip
        lines = list(
            difflib.unified_diff(
                a.splitlines(), b.splitlines(), f"{base}/{name}", f"{other}/{name}", lineterm=""
            )
        )
        sections.append((title, lines))
    return render(
        request,
        "module_diff.html",
        {"module": module, "versions": versions, "base": base, "other": other,
         "sections": sections},
        viewer=viewer,
    )  # fmt: skip
