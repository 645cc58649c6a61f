"""What a caller asks the sandbox to run, and what comes back.

An :class:`Invocation` is everything one call needs, so that a worker holds no state between
calls except caches keyed by content hash (compiled code, world description). An
:class:`InvocationResult` is plain, JSON-serialisable data (``as_dict()``) that the parent has
already checked: the worker is untrusted, so every field was validated and every secret in
``redact`` masked **in the parent** before the caller sees it.

Storage semantics: the worker starts from ``Invocation.storage`` and applies the script's
set/delete calls with the quota enforced on every set. ``InvocationResult.storage`` is the new
snapshot only when the call **succeeded** and the snapshot differs; a failed call changes
nothing (all-or-nothing, like a transaction), and ``None`` means "keep what you have".
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox import errors
from sandbox.compiler import source_hash
from sandbox.limits import DEFAULT_LIMITS, Limits

ERROR_KINDS = errors.ERROR_CLASSES

REDACTED = "***"

#: a host callback: receives the script's positional arguments, returns JSON-compatible data
HostCallback = Callable[[list[Any]], Any]
#: a fetch implementation: FetchRequest dict in, FetchResponse dict out (performed in parent)
FetchFunction = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Invocation:
    """One call of one function of one script, with everything it may reach."""

    #: script source; compiled in the worker and cached there by its SHA-256
    source: str
    #: name of the top-level function to call
    function: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    filename: str = "module.py"
    #: the script's read-only ``settings`` (secrets included; list them in ``redact``)
    settings: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    #: an ``sandbox.egress.EgressPolicy``; fetch() is denied when neither it nor ``fetch``
    egress: Any = None
    #: overrides the built-in Fetcher (fakes in tests, recorded replays); runs in the parent
    fetch: FetchFunction | None = None
    #: a ``sandbox.world.WorldSpec`` (or its dict form) describing extra globals
    world: Any = None
    #: the (tenant, module) storage snapshot the script starts from
    storage: Mapping[str, Any] | None = None
    #: host callbacks by dotted name (e.g. ``crm.contacts``), executed in the parent
    callbacks: Mapping[str, HostCallback] = field(default_factory=dict)
    #: secret values masked as ``***`` in the captured log, error messages and fetch records
    redact: Sequence[str] = ()
    #: free text for diagnostics, e.g. ``tenant/module@1.0.0``
    label: str = ""
    #: the trust domain of the code (an opaque, hashable value such as
    #: ``("live", tenant, module, version)``): a worker that ran code of one key never runs
    #: code of another; ``None`` is one domain of its own (callers that mix tenants, modules
    #: or versions must pass a key)
    isolation_key: Hashable = None

    @functools.cached_property
    def source_hash(self) -> str:
        return _source_hash(self.source)


@functools.lru_cache(maxsize=512)
def _source_hash(source: str) -> str:
    """Callers build a new Invocation per call with the same (interned) source text."""
    return source_hash(source)


@dataclass(frozen=True)
class ErrorInfo:
    kind: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InvocationResult:
    """The outcome of one invocation; every field is JSON-compatible (see ``as_dict``)."""

    ok: bool
    value: Any = None
    error: ErrorInfo | None = None
    #: captured print()/log() output, secrets masked, capped at ``Limits.log_bytes``
    log: str = ""
    log_truncated: bool = False
    #: one dict per fetch() call (method, url, status, ms, error...), secrets masked
    fetches: list[dict[str, Any]] = field(default_factory=list)
    #: CPU time of the worker process during the call (user + system)
    cpu_ms: float = 0.0
    #: wall time from dispatch to the worker to the result, as seen by the parent
    wall_ms: float = 0.0
    #: peak resident set size of the worker process during the call (VmHWM, reset per call;
    #: includes the interpreter's own ~20-30 MiB), None when the worker died
    peak_memory_kb: int | None = None
    #: the new storage snapshot when the call succeeded and changed it, else None
    storage: dict[str, Any] | None = None
    worker_pid: int | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["error"] = self.error.as_dict() if self.error else None
        return data

    def exception(self) -> errors.SandboxError | None:
        """The error as the matching :mod:`sandbox.errors` class (None when ok)."""
        if self.error is None:
            return None
        cls = ERROR_KINDS.get(self.error.kind, errors.ScriptError)
        exc = cls.__new__(cls)
        errors.SandboxError.__init__(exc, self.error.message, line=self.error.line)
        return exc

    def unwrap(self) -> Any:
        """The value, or raise the error as its :mod:`sandbox.errors` class."""
        exc = self.exception()
        if exc is not None:
            raise exc
        return self.value


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """Mask every occurrence of every non-empty secret, longest first (so that a secret that
    contains another is masked whole). Transformed secrets (reversed, base64...) cannot be
    recognised; that is documented, not solved."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_data(value: Any, secrets: Sequence[str]) -> Any:
    """``redact_text`` applied to every string inside JSON-compatible data."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, list):
        return [redact_data(v, secrets) for v in value]
    if isinstance(value, dict):
        return {redact_text(str(k), secrets): redact_data(v, secrets) for k, v in value.items()}
    return value
