"""Which sandbox layers are in force in the host's workers, and whether that is enough.

Each worker reports the kernel layers it confined itself with (see
:mod:`sandbox.kernel_wall`); the host's view is what holds in *every* worker. The admin may
require layers with ``CRM_HOST_SANDBOX_REQUIRE`` (e.g. ``seccomp,landlock,netns,uid``): a host
missing one refuses to start instead of quietly running modules behind a thinner wall.
The same report serves ``crm-host serve``, ``crm-host doctor`` and ``GET /api/v1/system``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from host.errors import HostError
from sandbox.kernel_wall import LAYERS
from sandbox.pool import SandboxPool, WorkerStartError


class SandboxLayerMissing(HostError):
    """A layer named in ``CRM_HOST_SANDBOX_REQUIRE`` is not in force."""

    kind = "sandbox_layer_missing"


@dataclass(frozen=True)
class SandboxReport:
    #: layers in force in every worker, in :data:`~sandbox.kernel_wall.LAYERS` order
    layers: tuple[str, ...]
    #: the uid the workers run as (None when they disagree or said nothing)
    worker_uid: int | None
    #: the Landlock ABI in force (the lowest among workers; 0 = none)
    landlock_abi: int
    #: why a layer is not in force, one line each, as the workers said
    notes: tuple[str, ...]
    required: tuple[str, ...]

    @property
    def missing_required(self) -> tuple[str, ...]:
        return tuple(name for name in self.required if name not in self.layers)

    def require(self) -> None:
        """Raise :class:`SandboxLayerMissing` (one line, naming the layers and why) when a
        required layer is not in force."""
        missing = self.missing_required
        if not missing:
            return
        reasons = [n for n in self.notes if n.split(":", 1)[0] in missing]
        detail = "; ".join(reasons) or "not reported by the workers"
        raise SandboxLayerMissing(
            f"sandbox layer required by CRM_HOST_SANDBOX_REQUIRE is missing: "
            f"{', '.join(missing)} ({detail})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "required": list(self.required),
            "missing_required": list(self.missing_required),
            "worker_uid": self.worker_uid,
            "landlock_abi": self.landlock_abi,
            "notes": list(self.notes),
        }


def sandbox_report(
    worker_info: Iterable[Mapping[str, Any]], required: Sequence[str] = ()
) -> SandboxReport:
    """The layers every worker reported (a worker that reported none has none)."""
    reports = [dict(info.get("sandbox") or {}) for info in worker_info]
    in_force = set(LAYERS)
    uids: set[Any] = set()
    notes: list[str] = []
    abis = [int(report.get("landlock_abi") or 0) for report in reports]
    for report in reports:
        in_force &= set(report.get("layers") or ())
        uids.add(report.get("uid"))
        notes.extend(n for n in report.get("missing") or () if n not in notes)
    if not reports:
        in_force = set()
        notes.append("no sandbox worker is running")
    uid = uids.pop() if len(uids) == 1 else None
    return SandboxReport(
        layers=tuple(name for name in LAYERS if name in in_force),
        worker_uid=uid if isinstance(uid, int) else None,
        landlock_abi=min(abis, default=0),
        notes=tuple(notes),
        required=tuple(required),
    )


def pool_report(pool: Callable[[], SandboxPool], required: Sequence[str] = ()) -> SandboxReport:
    """The report of the pool ``pool()`` returns (starting it if need be); a pool that
    cannot start has no layer in force, and the report says why."""
    try:
        info = pool().worker_info()
    except WorkerStartError as exc:
        report = sandbox_report([], required)
        return replace(report, notes=(f"sandbox workers cannot start: {exc}",))
    return sandbox_report(info, required)
