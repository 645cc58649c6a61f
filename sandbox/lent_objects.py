"""The objects a script holds in place of the capabilities its caller lends.

``fetch``, ``storage``, host-callback functions and the ``print`` collector stand between
the script and :class:`~sandbox.capabilities.Capabilities`: they check and copy every
argument into plain JSON data on the way out and every result on the way back, keep their
state in ``_`` slots the script cannot read, refuse to be modified, and turn a failure of
the capability into a script-visible :class:`~sandbox.capabilities.CapabilityError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from sandbox.capabilities import (
    Capabilities,
    CapabilityError,
    FetchError,
    HostCallError,
    lend,
)
from sandbox.records import CaseInsensitiveRecord, Record, to_plain


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


def make_fetch(capabilities: Capabilities) -> Callable[..., FetchResponse]:
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
        response = lend(FetchError, "fetch", capabilities.fetch, request)
        return FetchResponse(response)

    return fetch


def _json_text(value: Any) -> str:
    return json.dumps(value)


_ABSENT: Any = object()


class ScriptStorage:
    """``storage.get(key, default=None)`` / ``set(key, value, durable=False)`` /
    ``delete(key)``.

    Values are copied in and out as plain JSON data, so nothing the script keeps aliases
    what is stored. Writes become the call's new snapshot only if the call succeeds; a
    ``durable=True`` write is committed at once and survives a later failure.
    """

    __slots__ = ("_capabilities",)
    _capabilities: Capabilities

    def __init__(self, capabilities: Capabilities) -> None:
        object.__setattr__(self, "_capabilities", capabilities)

    def get(self, key: str, default: Any = None) -> Any:
        _check_key(key)
        value = lend(CapabilityError, "storage.get", self._capabilities.storage_get, key, _ABSENT)
        if value is _ABSENT:
            return default
        return to_plain(value, what="stored value", error=CapabilityError)

    def set(self, key: str, value: Any, durable: bool = False) -> None:
        _check_key(key)
        if not isinstance(durable, bool):
            raise TypeError("storage.set: durable must be True or False")
        plain = to_plain(value, what="storage value", error=TypeError)
        # durable only when asked: a capabilities object without durable writes still serves
        # every ordinary set
        extra = (True,) if durable else ()
        lend(CapabilityError, "storage.set", self._capabilities.storage_set, key, plain, *extra)

    def delete(self, key: str) -> None:
        _check_key(key)
        lend(CapabilityError, "storage.delete", self._capabilities.storage_delete, key)

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
        result = lend(HostCallError, self._name, self._call, self._name, plain)
        return to_plain(result, what=f"{self._name}() result", error=HostCallError)

    def __repr__(self) -> str:
        return f"<host function {self._name}>"

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise TypeError("host functions are read-only")


class ScriptPrinter:
    """``_print_``: RestrictedPython's ``print`` collector, writing each line to the log.

    ``print(..., file=...)`` is refused (there are no files); ``printed`` still returns what
    was printed in the current function, as upstream, up to :attr:`MAX_PRINTED_CHARS`: a
    flood of ``print`` must not grow the worker's memory until the call fails.
    """

    __slots__ = ("_kept", "_log", "_parts")

    #: characters ``printed`` keeps; what is printed after that still reaches the log
    MAX_PRINTED_CHARS = 1 << 20

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._parts: list[str] = []
        self._kept = 0

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
        room = self.MAX_PRINTED_CHARS - self._kept
        if room > 0:
            part = text + end if len(text) + len(end) <= room else (text[:room] + end)[:room]
            self._parts.append(part)
            self._kept += len(part)
        self._log(text)

    def __call__(self) -> str:
        return "".join(self._parts)
