"""What a caller lends a script, and how the lent capabilities fail inside it.

:class:`Capabilities` is the contract between the sandbox and its caller: the callables a
script can reach beyond pure computation (fetch, storage, log, host callbacks, settings).
They may live in another process, so everything crossing them is JSON-compatible data.
:class:`InMemoryCapabilities` is the implementation without a network, for tests, tools and
local runs.

A failure a capability raises is never handed to the script as a host object: :func:`lend`
re-presents it as one of the exception classes in :data:`CAPABILITY_ERRORS`, which the script
can name and catch (``except FetchError``), and which remember the sandbox error kind they
stand for so that, uncaught, the invocation still fails with that kind.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from sandbox import errors

# What the caller lends


class Capabilities(Protocol):
    """Everything a script can reach beyond pure computation, supplied by the caller.

    - ``settings``: this tenant's settings (JSON object); the script sees it read-only.
    - ``fetch(request)``: ``request`` is ``{"method", "url", "headers", "body", "timeout"}``
      (``body`` a str or ``None``, ``timeout`` seconds or ``None``); returns
      ``{"status", "statusText", "headers", "url", "body"}`` (``body`` a str). May raise
      :class:`sandbox.errors.EgressDenied`, :class:`sandbox.errors.LimitExceeded`,
      :class:`sandbox.errors.Timeout` or any other :class:`SandboxError`; any other
      exception counts as a network failure.
    - ``storage_get(key, default)`` / ``storage_set(key, value)`` / ``storage_delete(key)``:
      the persistent key-value store of one (tenant, module), JSON values; ``storage_get``
      returns ``default`` (an opaque marker object) for an absent key; any of them may raise
      :class:`sandbox.errors.LimitExceeded` (quota) or another :class:`SandboxError`.
      ``storage_set(key, value, durable=True)`` asks the caller to commit that one write at
      once (through the host callback :data:`DURABLE_STORAGE_CALLBACK`), for a side effect
      the script must not forget even if the call fails later (an id a service just made).
    - ``log(text)``: one captured line (``log(...)`` or ``print(...)``), without newline.
    - ``call(name, args)``: a host callback declared in ``WorldSpec.namespaces``
      (``"crm.contacts"``, ``[ids]``); JSON in, JSON out.
    """

    @property
    def settings(self) -> Mapping[str, Any]: ...

    def fetch(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def log(self, text: str) -> None: ...

    def call(self, name: str, args: list[Any]) -> Any: ...

    def storage_get(self, key: str, default: Any = None) -> Any: ...

    def storage_set(self, key: str, value: Any, durable: bool = False) -> None: ...

    def storage_delete(self, key: str) -> None: ...


DURABLE_STORAGE_CALLBACK = "storage.durable"
"""The host callback a durable ``storage.set`` is relayed to, with ``[key, value]``: the
caller supplies it (committing the write at once, under its own quota check); without it a
durable write fails with a script error. The sandbox only relays, it stores nothing."""


# How capability failures look inside the script


class CapabilityError(Exception):
    """Base of the failures of lent capabilities, as the script sees and may catch them.

    ``kind`` names the failure (``egress_denied``, ``limit_exceeded`` ...). An instance the
    world raised remembers the sandbox error class it stands for, so that, uncaught, the
    invocation fails with that kind rather than ``script_error``.
    """

    default_kind: ClassVar[str] = "capability_error"

    def __init__(self, message: str = "", kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or self.default_kind
        self._error_class: type[errors.SandboxError] | None = None


class FetchError(CapabilityError):
    """``fetch()`` failed: refused, timed out, too many calls, network error."""

    default_kind = "fetch_error"


class EgressDenied(FetchError):
    """``fetch()`` to a destination the module may not reach."""

    default_kind = errors.EgressDenied.kind


class LimitExceeded(CapabilityError):
    """A per-invocation limit (fetch count, storage quota, log size, sleep, range)."""

    default_kind = errors.LimitExceeded.kind


class FetchLimitExceeded(FetchError, LimitExceeded):
    """A fetch limit (number of calls, response size)."""

    default_kind = errors.LimitExceeded.kind


class HostCallError(CapabilityError):
    """A host callback (``crm.contacts(...)``) failed."""

    default_kind = "host_call_error"


def _script_error(error: errors.SandboxError, family: type[CapabilityError]) -> CapabilityError:
    """The script-side exception standing for a sandbox error raised by a capability."""
    if isinstance(error, errors.EgressDenied):
        cls: type[CapabilityError] = EgressDenied
    elif isinstance(error, errors.LimitExceeded):
        cls = FetchLimitExceeded if issubclass(family, FetchError) else LimitExceeded
    else:
        cls = family
    result = cls(error.message, kind=error.kind)
    result._error_class = type(error)
    return result


def limit_error(message: str) -> CapabilityError:
    """The world's own limits (range, sleep) fail like a capability's limits."""
    return _script_error(errors.LimitExceeded(message), LimitExceeded)


def lend(family: type[CapabilityError], what: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call a capability; re-present its failures as ``family`` exceptions of the script."""
    try:
        return function(*args)
    except errors.SandboxError as exc:
        raise _script_error(exc, family) from None
    except Exception as exc:  # a host failure must not hand host objects to the script
        raise family(f"{what} failed: {type(exc).__name__}: {exc}"[:1000]) from None


#: Script-visible exception classes of the capabilities.
CAPABILITY_ERRORS: dict[str, type[CapabilityError]] = {
    "CapabilityError": CapabilityError,
    "FetchError": FetchError,
    "EgressDenied": EgressDenied,
    "LimitExceeded": LimitExceeded,
    "HostCallError": HostCallError,
}


# A capabilities implementation without a network, for tests, tools and local runs


@dataclass
class InMemoryCapabilities:
    """Capabilities held in memory: ``fetch`` answers through ``fetch_handler`` (default:
    every request is refused with ``EgressDenied``), host callbacks through ``handlers``,
    log lines collect in ``logs``, storage lives in ``stored``. For tests and local tools."""

    settings: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, Any] = field(default_factory=dict)
    fetch_handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def fetch(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if self.fetch_handler is None:
            raise errors.EgressDenied(f"no network: {request['url']} is not reachable")
        return self.fetch_handler(request)

    def log(self, text: str) -> None:
        self.logs.append(text)

    def storage_get(self, key: str, default: Any = None) -> Any:
        if key not in self.stored:
            return default
        return copy.deepcopy(self.stored[key])

    def storage_set(self, key: str, value: Any, durable: bool = False) -> None:
        if durable:
            self.call(DURABLE_STORAGE_CALLBACK, [key, value])
        self.stored[key] = copy.deepcopy(value)

    def storage_delete(self, key: str) -> None:
        self.stored.pop(key, None)

    def call(self, name: str, args: list[Any]) -> Any:
        try:
            handler = self.handlers[name]
        except KeyError:
            raise errors.ScriptError(f"host function {name} is not available") from None
        return handler(*args)
