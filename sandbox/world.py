"""The script's whole world: the globals one invocation runs in.

:func:`build_globals` makes them FRESH for every invocation from two inputs:

- :class:`Capabilities`, the callables the caller lends (fetch, storage, log, host
  callbacks, settings). They may live in another process, so everything crossing them is
  JSON-compatible data, and every failure they raise is re-presented to the script as an
  exception class the script can name (:class:`FetchError`, :class:`EgressDenied`,
  :class:`LimitExceeded` ...), never as a host object;
- :class:`WorldSpec`, extra globals described as data: enums, record types, constants and
  host-callback namespaces.

Nothing here knows what the script is for; the host decides the capabilities and the spec.
"""

from __future__ import annotations

import builtins
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, Protocol

from sandbox import errors
from sandbox.facades import ModuleFacade, build_facades, make_import
from sandbox.guards import (
    WriteGuard,
    guarded_apply,
    guarded_getattr,
    guarded_getitem,
    guarded_hasattr,
    guarded_iter,
    iter_unpack_sequence,
    make_limited_range,
    unpack_sequence,
)
from sandbox.records import (
    CaseInsensitiveRecord,
    EnumNamespace,
    Record,
    RecordConstructor,
    to_plain,
)

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

    def storage_set(self, key: str, value: Any) -> None: ...

    def storage_delete(self, key: str) -> None: ...


# What the caller describes as data


@dataclass(frozen=True)
class WorldSpec:
    """Extra globals, as JSON-serialisable data (it crosses process boundaries).

    - ``enums``: ``{"Status": {"Sent": "Sent", ...}}`` → ``Status.Sent == "Sent"``;
    - ``record_types``: ``{"Stats": ["total", "sent"]}`` or ``{"Stats": {"total": 0}}``
      (field → default) → ``Stats(total=1)`` returns a plain dict;
    - ``constants``: ``{"PAGE_SIZE": 100}`` → JSON values, deep-copied per invocation;
    - ``namespaces``: ``{"crm": ["contacts"]}`` → ``crm.contacts(ids)`` calls
      ``capabilities.call("crm.contacts", [ids])``;
    - ``sdk_module``: a module name scripts may import to get every lent name (``from
      my_sdk import fetch, Status``), so that the same source type-checks in an editor
      against an installed stub package of that name.
    """

    enums: dict[str, dict[str, str]] = field(default_factory=dict)
    record_types: dict[str, list[str] | dict[str, Any]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    namespaces: dict[str, list[str]] = field(default_factory=dict)
    sdk_module: str | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for group in (self.enums, self.record_types, self.constants, self.namespaces):
            for name in group:
                _check_global_name(name)
                if name in seen:
                    raise ValueError(f"global {name!r} is declared twice in the world spec")
                seen.add(name)
        for name, members in self.enums.items():
            for member, value in members.items():
                _check_global_name(member)
                if not isinstance(value, str):
                    raise ValueError(f"enum {name}.{member} must be a string")
        for name, fields in self.record_types.items():
            for field_name in fields:
                if not isinstance(field_name, str) or not field_name.isidentifier():
                    raise ValueError(f"record type {name}: bad field name {field_name!r}")
        for functions in self.namespaces.values():
            for function in functions:
                _check_global_name(function)
        if self.sdk_module is not None and not self.sdk_module.isidentifier():
            raise ValueError(f"sdk_module must be a plain module name, not {self.sdk_module!r}")
        json.dumps(self.to_dict())  # constants and defaults must be JSON

    def names(self) -> list[str]:
        """Every global this spec defines."""
        return [*self.enums, *self.record_types, *self.constants, *self.namespaces]

    def to_dict(self) -> dict[str, Any]:
        return {
            "enums": copy.deepcopy(self.enums),
            "record_types": copy.deepcopy(self.record_types),
            "constants": copy.deepcopy(self.constants),
            "namespaces": copy.deepcopy(self.namespaces),
            "sdk_module": self.sdk_module,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldSpec:
        unknown = set(data) - {"enums", "record_types", "constants", "namespaces", "sdk_module"}
        if unknown:
            raise ValueError(f"unknown world spec keys: {', '.join(sorted(unknown))}")
        return cls(
            enums=copy.deepcopy(dict(data.get("enums", {}))),
            record_types=copy.deepcopy(dict(data.get("record_types", {}))),
            constants=copy.deepcopy(dict(data.get("constants", {}))),
            namespaces={k: list(v) for k, v in dict(data.get("namespaces", {})).items()},
            sdk_module=data.get("sdk_module"),
        )


def _check_global_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"{name!r} is not a valid script name")
    if "__" in name:
        raise ValueError(f"{name!r} is not a valid script name (contains '__')")


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


def _limit_error(message: str) -> CapabilityError:
    """The world's own limits (range, sleep) fail like a capability's limits."""
    return _script_error(errors.LimitExceeded(message), LimitExceeded)


def _lend(
    family: type[CapabilityError], what: str, function: Callable[..., Any], *args: Any
) -> Any:
    """Call a capability; re-present its failures as ``family`` exceptions of the script."""
    try:
        return function(*args)
    except errors.SandboxError as exc:
        raise _script_error(exc, family) from None
    except Exception as exc:  # a host failure must not hand host objects to the script
        raise family(f"{what} failed: {type(exc).__name__}: {exc}"[:1000]) from None


# The lent objects


class FetchResponse:
    """What ``fetch()`` returns: ``ok``, ``status``, ``statusText``, ``headers``, ``url``,
    ``text()``, ``json()``. Read-only; its state lives in ``_`` slots the script cannot read."""

    __slots__ = ("_body", "_headers", "_status", "_status_text", "_url")
    _body: str
    _headers: Record
    _status: int
    _status_text: str
    _url: str

    def __init__(self, record: Mapping[str, Any]) -> None:
        data = to_plain(record, what="fetch response", error=FetchError)
        if not isinstance(data, dict) or not isinstance(data.get("status"), int):
            raise FetchError("fetch response: status missing")
        body = data.get("body")
        set_ = object.__setattr__
        set_(self, "_status", data["status"])
        set_(self, "_status_text", str(data.get("statusText") or ""))
        set_(self, "_headers", CaseInsensitiveRecord(dict(data.get("headers") or {})))
        set_(self, "_url", str(data.get("url") or ""))
        set_(self, "_body", "" if body is None else str(body))

    @property
    def ok(self) -> bool:
        return 200 <= self._status < 300

    @property
    def status(self) -> int:
        return self._status

    @property
    def statusText(self) -> str:
        return self._status_text

    @property
    def headers(self) -> Record:
        return self._headers

    @property
    def url(self) -> str:
        return self._url

    def text(self) -> str:
        return self._body

    def json(self) -> Any:
        return json.loads(self._body)

    def __repr__(self) -> str:
        return f"<FetchResponse {self._status} {self._url}>"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError("FetchResponse is read-only")


def _make_fetch(capabilities: Capabilities) -> Callable[..., FetchResponse]:
    def fetch(
        url: str,
        method: str = "GET",
        headers: Any = None,
        body: Any = None,
        json: Any = None,
        timeout: Any = None,
    ) -> FetchResponse:
        """Perform an HTTP request through the caller's egress policy."""
        if not isinstance(url, str):
            raise TypeError("fetch(): url must be a string")
        if not isinstance(method, str):
            raise TypeError("fetch(): method must be a string")
        plain_headers = to_plain(headers or {}, what="fetch headers", error=TypeError)
        if not isinstance(plain_headers, dict):
            raise TypeError("fetch(): headers must be a dict")
        plain_headers = {str(k): str(v) for k, v in plain_headers.items()}
        if json is not None:
            if body is not None:
                raise TypeError("fetch(): give body or json, not both")
            body = _json_text(to_plain(json, what="fetch json", error=TypeError))
            if not any(k.lower() == "content-type" for k in plain_headers):
                plain_headers["Content-Type"] = "application/json"
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        if body is not None and not isinstance(body, str):
            raise TypeError("fetch(): body must be a string or bytes")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise TypeError("fetch(): timeout must be a positive number of seconds")
        request = {
            "method": method.upper(),
            "url": url,
            "headers": plain_headers,
            "body": body,
            "timeout": None if timeout is None else float(timeout),
        }
        response = _lend(FetchError, "fetch", capabilities.fetch, request)
        return FetchResponse(response)

    return fetch


def _json_text(value: Any) -> str:
    return json.dumps(value)


_ABSENT: Any = object()


class ScriptStorage:
    """``storage.get(key, default=None)`` / ``set(key, value)`` / ``delete(key)``.

    Values are copied in and out as plain JSON data, so nothing the script keeps aliases
    what is stored.
    """

    __slots__ = ("_capabilities",)
    _capabilities: Capabilities

    def __init__(self, capabilities: Capabilities) -> None:
        object.__setattr__(self, "_capabilities", capabilities)

    def get(self, key: str, default: Any = None) -> Any:
        _check_key(key)
        value = _lend(CapabilityError, "storage.get", self._capabilities.storage_get, key, _ABSENT)
        if value is _ABSENT:
            return default
        return to_plain(value, what="stored value", error=CapabilityError)

    def set(self, key: str, value: Any) -> None:
        _check_key(key)
        plain = to_plain(value, what="storage value", error=TypeError)
        _lend(CapabilityError, "storage.set", self._capabilities.storage_set, key, plain)

    def delete(self, key: str) -> None:
        _check_key(key)
        _lend(CapabilityError, "storage.delete", self._capabilities.storage_delete, key)

    def __repr__(self) -> str:
        return "<storage>"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError("storage is read-only; use storage.set(key, value)")


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError("storage keys must be non-empty strings")


class HostFunction:
    """A host callback: positional JSON arguments in, JSON result out (a fresh copy)."""

    __slots__ = ("_call", "_name")
    _call: Callable[[str, list[Any]], Any]
    _name: str

    def __init__(self, name: str, call: Callable[[str, list[Any]], Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_call", call)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"{self._name}() takes positional arguments only")
        plain = to_plain(list(args), what=f"{self._name}() arguments", error=TypeError)
        result = _lend(HostCallError, self._name, self._call, self._name, plain)
        return to_plain(result, what=f"{self._name}() result", error=HostCallError)

    def __repr__(self) -> str:
        return f"<host function {self._name}>"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError("host functions are read-only")


class ScriptPrinter:
    """``_print_``: RestrictedPython's ``print`` collector, writing each line to the log.

    ``print(..., file=...)`` is refused (there are no files); ``printed`` still returns what
    was printed in the current function, as upstream.
    """

    __slots__ = ("_log", "_parts")

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._parts: list[str] = []

    def _call_print(
        self,
        *objects: Any,
        sep: str | None = " ",
        end: str | None = "\n",
        file: Any = None,
        flush: bool = False,
    ) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not supported in scripts")
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print(): sep and end must be strings")
        text = sep.join(str(o) for o in objects)
        self._parts.append(text + end)
        self._log(text)

    def __call__(self) -> str:
        return "".join(self._parts)


# Builtins

_SAFE_BUILTIN_NAMES = (
    "None", "False", "True", "Ellipsis", "NotImplemented",
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hash", "hex", "int", "isinstance", "issubclass", "iter", "len", "list",
    "map", "max", "min", "next", "object", "oct", "ord", "pow", "property", "repr",
    "reversed", "round", "set", "slice", "sorted", "staticmethod", "str", "sum", "super",
    "tuple", "zip", "__build_class__",
)  # fmt: skip

# Absent on purpose: type, vars, dir, globals, locals, id, open, input, exec, eval, compile,
# breakpoint, help, memoryview, __import__ (replaced), getattr/setattr/delattr/hasattr
# (replaced by guarded versions), KeyboardInterrupt/SystemExit (a script must not be able
# to raise what the worker treats as its own shutdown).

_SAFE_EXCEPTION_NAMES = (
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BufferError",
    "BytesWarning", "ConnectionError", "DeprecationWarning", "EOFError", "EnvironmentError",
    "Exception", "FloatingPointError", "FutureWarning", "GeneratorExit", "IOError",
    "ImportError", "ImportWarning", "IndentationError", "IndexError", "KeyError",
    "LookupError", "MemoryError", "ModuleNotFoundError", "NameError", "NotImplementedError",
    "OSError", "OverflowError", "PendingDeprecationWarning", "RecursionError",
    "ReferenceError", "RuntimeError", "RuntimeWarning", "StopIteration", "SyntaxError",
    "SyntaxWarning", "SystemError", "TabError", "TimeoutError", "TypeError",
    "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
    "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError", "Warning",
    "ZeroDivisionError",
)  # fmt: skip

#: Script-visible exception classes of the capabilities.
CAPABILITY_ERRORS: dict[str, type[CapabilityError]] = {
    "CapabilityError": CapabilityError,
    "FetchError": FetchError,
    "EgressDenied": EgressDenied,
    "LimitExceeded": LimitExceeded,
    "HostCallError": HostCallError,
}


def _text(objects: tuple[Any, ...]) -> str:
    return " ".join(str(o) for o in objects)


def build_globals(
    capabilities: Capabilities,
    spec: WorldSpec | None = None,
    *,
    module_name: str = "module",
) -> dict[str, Any]:
    """Fresh globals for one invocation: builtins, guards, facades, capabilities, spec.

    Nothing mutable is shared with another invocation: the write-guard registry, the
    ``random`` generator, the sleep budget, constants and the print collector are all new.
    """
    spec = spec or WorldSpec()
    write_guard = WriteGuard()
    facades = build_facades(_limit_error)
    lent_log = capabilities.log

    def log(*objects: Any) -> None:
        """Write one line to the captured invocation log."""
        _lend(CapabilityError, "log", lent_log, _text(objects))

    def print_collector(_getattr_: Any = None) -> ScriptPrinter:
        return ScriptPrinter(log=lambda text: _lend(CapabilityError, "log", lent_log, text))

    script_builtins: dict[str, Any] = {
        name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES
    }
    script_builtins.update({name: getattr(builtins, name) for name in _SAFE_EXCEPTION_NAMES})
    script_builtins.update(
        {
            "__import__": make_import(facades),
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": write_guard.setattr,
            "delattr": write_guard.delattr,
            "range": make_limited_range(_limit_error),
        }
    )

    world: dict[str, Any] = {
        "__builtins__": script_builtins,
        "__name__": module_name,
        "__metaclass__": write_guard.make_class,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_iter,
        "_iter_unpack_sequence_": iter_unpack_sequence,
        "_unpack_sequence_": unpack_sequence,
        "_write_": write_guard,
        "_inplacevar_": write_guard.inplacevar,
        "_apply_": guarded_apply,
        "_print_": print_collector,
    }
    lent: dict[str, Any] = {
        "settings": Record(to_plain(dict(capabilities.settings), what="settings", error=TypeError)),
        "fetch": _make_fetch(capabilities),
        "storage": ScriptStorage(capabilities),
        "log": log,
        **CAPABILITY_ERRORS,
    }
    for name, members in spec.enums.items():
        lent[name] = EnumNamespace(name, members)
    for name, fields in spec.record_types.items():
        defaults = fields if isinstance(fields, dict) else {}
        lent[name] = RecordConstructor(name, list(fields), defaults)
    for name, value in spec.constants.items():
        lent[name] = copy.deepcopy(value)
    for name, functions in spec.namespaces.items():
        lent[name] = ModuleFacade(
            name, {f: HostFunction(f"{name}.{f}", capabilities.call) for f in functions}
        )
    clashes = sorted(
        set(spec.names())
        & (set(CAPABILITY_ERRORS) | set(script_builtins) | {"settings", "fetch", "storage", "log"})
    )
    if clashes:
        raise ValueError(f"world spec redefines built-in names: {', '.join(clashes)}")
    world.update(lent)
    if spec.sdk_module:
        facades[spec.sdk_module] = ModuleFacade(spec.sdk_module, lent)
    return world


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

    def storage_set(self, key: str, value: Any) -> None:
        self.stored[key] = copy.deepcopy(value)

    def storage_delete(self, key: str) -> None:
        self.stored.pop(key, None)

    def call(self, name: str, args: list[Any]) -> Any:
        try:
            handler = self.handlers[name]
        except KeyError:
            raise errors.ScriptError(f"host function {name} is not available") from None
        return handler(*args)
