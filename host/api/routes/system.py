"""``GET /api/v1/system`` (admin): what this host is and how its sandbox is walled."""

from __future__ import annotations

from host.api.bodies import checked_router
from host.api.deps import AdminDep, HostDep
from host.api.schemas import SandboxLayersOut, SystemOut
from host.sandbox_layers import pool_report
from host.version import host_version

router = checked_router(prefix="/api/v1/system", tags=["meta"])


@router.get("")
def system(host: HostDep, _admin: AdminDep) -> SystemOut:
    """The host's version and the sandbox layers in force in its workers."""
    report = pool_report(lambda: host.sandbox, host.settings.sandbox_require)
    return SystemOut(
        version=host_version(),
        sandbox=SandboxLayersOut(
            layers=list(report.layers),
            required=list(report.required),
            missing_required=list(report.missing_required),
            worker_uid=report.worker_uid,
            landlock_abi=report.landlock_abi,
            notes=list(report.notes),
        ),
    )
