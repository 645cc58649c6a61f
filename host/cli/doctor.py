"""``crm-host doctor``: checks of this machine's set-up, one section per concern.

Today it reports the sandbox: which layers a worker started here confines itself with, which
``CRM_HOST_SANDBOX_REQUIRE`` asks for, and why any is missing; it exits 1 when a required
layer is missing, as ``serve`` would refuse to start. It needs no database. Another check
is another function called from :func:`doctor`.
"""

from __future__ import annotations

from host.cli.output import handles_errors, out, table
from host.config import HostSettings, load_settings
from host.sandbox_layers import SandboxReport, pool_report
from sandbox.kernel_wall import LAYERS
from sandbox.pool import SandboxPool


def _sandbox_report(settings: HostSettings) -> SandboxReport:
    """Start one worker as the host would (same defaults), read its hello, stop it."""
    pool: SandboxPool | None = None

    def start() -> SandboxPool:
        nonlocal pool
        pool = SandboxPool(size=1, spares=0)
        return pool

    try:
        return pool_report(start, settings.sandbox_require)
    finally:
        if pool is not None:
            pool.close()


def _print_sandbox(report: SandboxReport) -> None:
    uid = "unknown" if report.worker_uid is None else str(report.worker_uid)
    out.print(f"sandbox: workers run as uid {uid}; Landlock ABI {report.landlock_abi}")
    table(
        "Sandbox layers",
        ("layer", "state", "required"),
        (
            (
                name,
                "in force" if name in report.layers else "missing",
                "yes" if name in report.required else "",
            )
            for name in LAYERS
        ),
    )
    for note in report.notes:
        out.print(f"note: {note}", markup=False, highlight=False)


@handles_errors
def doctor() -> None:
    """Check this machine: the sandbox layers in force and those required
    (CRM_HOST_SANDBOX_REQUIRE); exit status 1 when a required one is missing."""
    settings = load_settings()
    report = _sandbox_report(settings)
    _print_sandbox(report)
    report.require()
