"""Admin routes for module versions: upload (zip or JSON), list, show, remove."""

from __future__ import annotations

from datetime import timedelta

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from host.api.bodies import capped_body, checked_router, parse_json
from host.api.deps import AdminDep, HostDep
from host.api.paging import paged_by
from host.api.schemas import CertificationOut, ModuleOut, VersionDetail, VersionOut, VersionRemoved
from host.errors import InvalidInput, Problem
from host.modules.packages import ModulePackage, from_json_body, from_zip

router = checked_router(prefix="/api/v1/modules", tags=["modules"])

UPLOAD_DOC = """Upload a module version, as a zip (`multipart/form-data`, field `package`) or as
JSON `{"manifest": {...}, "script": "..."}`. 201 with `{id, version, functions}` when stored,
200 when the identical version already exists, 409 when the version exists with other
content, 422 listing every problem (manifest field paths, script file:line)."""


@router.post("", status_code=201, description=UPLOAD_DOC)
async def upload_module(
    request: Request, response: Response, host: HostDep, _admin: AdminDep
) -> VersionOut:
    package = await _read_package(request, host.settings.max_archive_bytes)
    info = await run_in_threadpool(host.upload_module, package)
    if not info.created:
        response.status_code = 200
    return VersionOut.model_validate(info)


async def _read_package(request: Request, max_archive_bytes: int) -> ModulePackage:
    content_type = request.headers.get("content-type", "")
    max_script = request.app.state.host.settings.max_script_bytes
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=5)
        except HTTPException as exc:  # Starlette's own multipart limits
            raise InvalidInput(
                "module upload is invalid", [Problem("package", str(exc.detail))]
            ) from None
        upload = form.get("package")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(
                "module upload is invalid", [Problem("package", "a zip file field is required")]
            )
        data = await upload.read(max_archive_bytes + 1)
        return from_zip(data, max_archive_bytes=max_archive_bytes, max_script_bytes=max_script)
    body = parse_json(await capped_body(request, max_archive_bytes, "module upload"))
    return from_json_body(body, max_script_bytes=max_script)


@router.get("", dependencies=[paged_by()])
def list_modules(host: HostDep, _admin: AdminDep) -> list[ModuleOut]:
    """Every module with its versions, oldest version first."""
    return [ModuleOut.model_validate(m) for m in host.registry.list()]


@router.get("/{module_id}")
def show_module(module_id: str, host: HostDep, _admin: AdminDep) -> ModuleOut:
    return ModuleOut.model_validate(host.registry.get(module_id))


@router.get("/{module_id}/versions/{version}")
def show_version(module_id: str, version: str, host: HostDep, _admin: AdminDep) -> VersionDetail:
    """One version: its manifest (validated, defaults filled in) and its script as
    uploaded."""
    return VersionDetail.model_validate(host.registry.version(module_id, version))


@router.get("/{module_id}/versions/{version}/certification")
def show_certification(
    module_id: str, version: str, host: HostDep, _admin: AdminDep
) -> CertificationOut:
    """The version's certification report (404 when it was uploaded without tests/)."""
    return CertificationOut.model_validate(host.certifications.report(module_id, version))


@router.delete("/{module_id}/versions/{version}")
def remove_version(module_id: str, version: str, host: HostDep, _admin: AdminDep) -> VersionRemoved:
    """Remove a version that nothing uses. 409, naming every use, while an enablement pins
    it (or keeps it as its rollback version), a campaign created with it is unfinished, or a
    campaign created with it ended within `CRM_HOST_CAMPAIGN_STATS_RETENTION_DAYS`."""
    retention = timedelta(days=host.settings.campaign_stats_retention_days)
    host.registry.remove(module_id, version, stats_retention=retention)
    return VersionRemoved(id=module_id, version=version)
