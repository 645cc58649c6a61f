"""One stored module version as the sandbox runs it: what every call of that version needs
and that never changes, computed once per version instead of once per call.

A version is immutable (``host.modules.registry``), so its limits, the script's file name
and compiled-code key, and its egress policy under the host's allow-list are facts of the
version. The registry builds one :class:`ModuleProgram` when it first reads a version, and
every :class:`~host.calls.ModuleCall` of that version carries the same object, manifest
included as the typed :class:`~host.manifest.Manifest` (never re-dumped to a dict).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from host.manifest import Manifest
from sandbox.compiler import source_hash
from sandbox.egress import DEFAULT_WAIVER_HINT, EgressPolicy
from sandbox.limits import DEFAULT_LIMITS, Limits

#: what an ``egress_denied`` of an internal address tells: the setting that waives it
EGRESS_WAIVER_HINT = (
    f"{DEFAULT_WAIVER_HINT} (CRM_HOST_EGRESS_ALLOW; --allow-host for crm-host module run)"
)


@dataclass(frozen=True, eq=False)
class ModuleProgram:
    manifest: Manifest
    script: str
    #: the platform defaults lowered by the manifest's ``limits``
    limits: Limits
    #: the key under which a worker caches the compiled script (its SHA-256)
    script_key: str
    _policies: dict[tuple[str, ...], EgressPolicy] = field(
        default_factory=dict, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def of(cls, manifest: Manifest, script: str) -> ModuleProgram:
        return cls(
            manifest=manifest,
            script=script,
            limits=DEFAULT_LIMITS.lowered_by(manifest.limits),
            script_key=source_hash(script),
        )

    @property
    def filename(self) -> str:
        """The script's name in tracebacks and error lines (``module.py``)."""
        return self.manifest.script

    def egress_policy(self, allow: Sequence[str]) -> EgressPolicy:
        """The manifest's ``egress`` under the admin's allow-list. A host has one allow-list,
        so this is built once per version (kept per distinct list for embedders and tools
        that pass several)."""
        key = tuple(allow)
        with self._lock:
            policy = self._policies.get(key)
            if policy is None:
                policy = self._policies[key] = EgressPolicy.from_config(
                    self.manifest.egress, key, waiver_hint=EGRESS_WAIVER_HINT
                )
            return policy
