"""Hard limits of one sandboxed invocation (SPEC §5).

The platform defaults are the ceiling: a module's manifest may ask for *less* of anything,
never more. :meth:`Limits.lowered_by` therefore **clamps** — a higher ask is silently reduced
to the platform value (``min(platform, asked)``), because a manifest that asks for 20 s when
the platform allows 10 s is not broken, it just does not get what it asked for. A key this
module does not know, or a value that is not a positive number, is a manifest error and
raises :class:`ValueError` so that upload validation can report it with its field path.

Every limit is enforced *outside* the script: wall time and CPU by the worker supervisor and
``RLIMIT_CPU``, memory by ``RLIMIT_AS``, the rest by the capabilities the parent lends.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
KIB = 1024

MAX_NESTING_DEPTH = 64
"""Levels of arrays/objects one JSON value may nest (``[[1]]`` is two): the one limit shared
by everything that crosses into or out of a script — API bodies, ``module run`` arguments,
arguments sent to a worker and the values a script returns. Deeper data is refused with its
path, never half-processed: a recursive walk over it would hit the interpreter's stack."""


@dataclass(frozen=True)
class Limits:
    """What one invocation may consume; the defaults are the platform ceiling of SPEC §5."""

    #: wall-clock seconds from dispatch to result; the worker is SIGKILLed at the deadline
    timeout_s: float = 10.0
    #: CPU seconds of the worker process during the invocation (RLIMIT_CPU + parent check)
    cpu_s: float = 5.0
    #: address space the script may add on top of the worker's baseline (RLIMIT_AS)
    memory_mb: int = 256
    #: number of fetch() calls per invocation
    max_fetches: int = 50
    #: seconds per fetch() call (also bounded by what is left of ``timeout_s``)
    fetch_timeout_s: float = 10.0
    #: bytes of one fetch() response body
    max_response_bytes: int = 10 * MIB
    #: bytes of captured log per invocation; the rest is dropped with a marker
    log_bytes: int = 64 * KIB
    #: JSON-encoded bytes of the storage of one (tenant, module)
    storage_bytes: int = 1 * MIB
    #: Python frames the script may stack above the worker's own frames
    recursion_depth: int = 250
    #: bytes of the worker's encoded reply (return value, storage, log); checked in the worker
    #: before sending, so a bigger result is ``limit_exceeded`` and never reaches the parent
    result_bytes: int = 32 * MIB

    @classmethod
    def platform_default(cls) -> Limits:
        return cls()

    def lowered_by(self, asked: Mapping[str, Any] | None) -> Limits:
        """Apply a manifest's ``limits`` object: each known key may only lower its value.

        A higher ask is clamped to the current value (not an error); an unknown key or a
        value that is not a positive finite number raises :class:`ValueError`.
        """
        if not asked:
            return self
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in asked.items():
            field = known.get(key)
            if field is None:
                raise ValueError(f"limits.{key}: unknown limit (known: {', '.join(known)})")
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"limits.{key}: must be a positive number, got {value!r}")
            current = getattr(self, key)
            lowered = min(current, value)
            changes[key] = int(lowered) if isinstance(current, int) else float(lowered)
            if isinstance(current, int) and changes[key] < 1:
                raise ValueError(f"limits.{key}: must be at least 1, got {value!r}")
        return dataclasses.replace(self, **changes)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MIB

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        """Rebuild limits sent over the channel (trusted direction: parent → worker)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


DEFAULT_LIMITS = Limits()
