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
import json
import urllib.parse
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


@dataclass(frozen=True)
class FetchNetwork:
    """What an invocation's ``fetch()`` connects through, below the egress-checked Fetcher.

    ``resolver(host, port) -> [ip, ...]`` replaces DNS; ``transport_factory()`` builds the
    transport that receives each request already checked and pinned to an IP (an
    ``httpx.BaseTransport``; see ``sandbox.transport.PinnedTransport``). Why only these two:
    a recording or a replay swaps where bytes come from, never the checks — the egress
    policy, request validation, redirect rules and size caps run unchanged (httpx's
    ``MockTransport`` habit). ``None`` for either means the real one."""

    resolver: Callable[[str, int], Sequence[str]] | None = None
    transport_factory: Callable[[], Any] | None = None


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
    #: an ``sandbox.egress.EgressPolicy``; fetch() is denied without one
    egress: Any = None
    #: where the Fetcher's checked requests go (recordings, replays, fakes in tests); the
    #: Fetcher itself runs in the parent and is never replaced
    network: FetchNetwork | None = None
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
    #: the caller's correlation id (an HTTP request id, say): an opaque label the sandbox
    #: never interprets; it travels to the worker in the run frame, comes back in the
    #: worker's ``done`` frame (which must echo it) and is on the result
    request_id: str = ""
    #: the trust domain of the code (an opaque, hashable value such as
    #: ``("live", tenant, module, version)``): a worker that ran code of one key never runs
    #: code of another; ``None`` is one domain of its own (callers that mix tenants, modules
    #: or versions must pass a key)
    isolation_key: Hashable = None
    #: the key a worker caches the compiled script under (``compiler.source_hash``); a
    #: caller running the same script many times passes the one it computed once, else it
    #: is computed here
    source_hash: str = ""

    def __post_init__(self) -> None:
        if not self.source_hash:
            object.__setattr__(self, "source_hash", _source_hash(self.source))


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
    #: the invocation's ``request_id`` (the parent's own copy, not the worker's word)
    request_id: str = ""

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


MIN_SUBSTRING_SECRET = 8
"""Secrets at least this long are masked wherever they occur inside a text; shorter ones only
where a whole text (a string value, a header value, a log) is exactly the secret, because
masking every ``42`` or ``eu`` inside ordinary data would corrupt it."""


@functools.lru_cache(maxsize=256)
def _masked_forms(secrets: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The secrets masked only as a whole text, and the texts masked wherever they occur:
    each long secret as is, JSON-escaped (as ``json.dumps`` writes it inside a string, with
    and without ``ensure_ascii``) and percent-encoded (as a URL or form body carries it), so a
    secret a script serialises before sending or returning it is still recognised. Longest
    first, so a secret that contains another is masked whole."""
    whole = frozenset(s for s in secrets if s)
    forms: set[str] = set()
    for secret in whole:
        if len(secret) < MIN_SUBSTRING_SECRET:
            continue
        forms.update(
            {
                secret,
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
                urllib.parse.quote(secret, safe=""),
                urllib.parse.quote_plus(secret, safe=""),
            }
        )
    return whole, tuple(sorted(forms, key=lambda f: (-len(f), f)))


def redact_text(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret masked as ``***``: the one masking function of the project
    (logs, errors, fetch records, return values shown on any surface, recordings).

    A secret of :data:`MIN_SUBSTRING_SECRET` characters or more is masked wherever it (or its
    JSON-escaped or percent-encoded form) occurs; a shorter one only when it is the whole
    text. Other transformations (reversed, base64, split...) cannot be recognised; that is
    documented, not solved."""
    whole, forms = _masked_forms(tuple(secrets))
    if text in whole:
        return REDACTED
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def redact_data(value: Any, secrets: Sequence[str]) -> Any:
    """``redact_text`` applied to every string (keys included) inside JSON-compatible data,
    and to the text of numbers (a numeric secret returned as a number is masked too)."""
    if not secrets:
        return value
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, list | tuple):
        return [redact_data(v, secrets) for v in value]
    if isinstance(value, dict):
        return {redact_text(str(k), secrets): redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = json.dumps(value)
        masked = redact_text(text, secrets)
        return value if masked == text else masked
    return value
