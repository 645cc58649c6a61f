"""What a script can reach from inside a worker process, as :class:`WorkerCapabilities`.

The worker runs untrusted code, so it holds as little as possible: ``fetch`` and host
callbacks are not performed here but relayed to the parent over the channel (the parent owns
the egress policy and the host's services), and their failures come back as sandbox error
kinds. What the worker does keep — the tenant's settings (read-only), the module's storage
under its quota, and the captured log under its byte cap — is per invocation, so nothing
outlives the call it was lent to.

Each instance belongs to ONE invocation: it carries that invocation's identity (the token
the parent put in the ``run`` frame) on every frame it sends, and once the worker
:meth:`~WorkerCapabilities.close` s it at the end of the invocation window every use raises
:class:`CapabilityExpired` inside the script and **sends nothing**. A closure, generator or
finalizer a script leaves behind can therefore never speak on the channel for a later
invocation (it would be answered with that invocation's callbacks) nor desynchronise the
protocol between invocations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn, Protocol

from sandbox import errors
from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.limits import Limits


class ParentLink(Protocol):
    """The worker's side of the channel to the parent process."""

    def send(self, message: dict[str, Any]) -> None: ...

    def receive(self) -> dict[str, Any]: ...

    def abort(self, reason: str) -> NoReturn:
        """The channel is out of step: end the process (nothing said later could be
        attributed to the right invocation)."""


class CapabilityExpired(errors.ScriptError):
    """A capability was used after the invocation it was lent to had ended."""


class WorkerCapabilities:
    """The script's reach, as the world layer expects it: settings, fetch/call relayed to
    the parent over the channel, storage with a quota, log with a byte cap — all of it bound
    to the invocation ``invocation_id`` and dead after :meth:`close`."""

    def __init__(
        self,
        parent: ParentLink,
        invocation_id: str,
        settings: Mapping[str, Any],
        storage: Mapping[str, Any] | None,
        limits: Limits,
        log_keep_bytes: int,
    ):
        self._parent = parent
        self.invocation_id = invocation_id
        self.closed = False
        self.settings: Mapping[str, Any] = MappingProxyType(dict(settings))
        self.limits = limits
        # storage is kept as encoded JSON per key: copies in and out, so a script mutating
        # a value it got (or set) cannot change storage behind the quota's back
        self._storage: dict[str, str] = {str(k): _dumps(v) for k, v in (storage or {}).items()}
        self._storage_size = _storage_size(self._storage)
        self.storage_changed = False
        self._log: list[str] = []
        self._log_kept = 0
        self._log_keep_bytes = log_keep_bytes
        self.log_total_bytes = 0

    def close(self) -> None:
        """End of the invocation window: from now on every capability raises."""
        self.closed = True

    def _check_open(self, what: str) -> None:
        if self.closed:
            raise CapabilityExpired(
                f"{what}: this capability belonged to an invocation that has ended"
            )

    # relayed to the parent ----------------------------------------------------------------
    def _ask(self, message: dict[str, Any], what: str) -> Any:
        self._check_open(what)
        parent = self._parent
        try:
            parent.send({**message, "inv": self.invocation_id})
        except (TypeError, ValueError) as exc:
            raise errors.ScriptError(f"arguments are not JSON-compatible: {exc}") from None
        reply = parent.receive()
        if reply.get("op") != "reply" or reply.get("inv") != self.invocation_id:
            parent.abort("a reply for another invocation")
        if reply.get("ok"):
            return reply.get("value")
        kind = reply.get("kind", "script_error")
        cls = errors.ERROR_CLASSES.get(kind, errors.ScriptError)
        raise _make_error(cls, str(reply.get("message", "failed")))

    def fetch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self._ask({"op": "fetch", "request": dict(request)}, "fetch")

    def call(self, name: str, args: list[Any]) -> Any:
        return self._ask({"op": "call", "name": str(name), "args": list(args)}, str(name))

    # log --------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """One captured line (print/log); lone surrogates are replaced, not carried.

        Only what still fits under the cap is encoded: a flood of lines, or one huge line,
        costs a counter, not memory, so the call keeps its own outcome (the parent adds
        the truncation marker from ``log_total_bytes``)."""
        self._check_open("log")
        text = str(text)
        room = self._log_keep_bytes - self._log_kept
        if room <= 0:
            self.log_total_bytes += _utf8_size(text) + 1
            return
        # a character is at most 4 bytes: this slice holds everything that can still fit
        kept = text[:room].encode("utf-8", "replace").decode("utf-8") + "\n"
        size = len(kept.encode("utf-8"))
        self.log_total_bytes += size if len(text) <= room else _utf8_size(text[room:]) + size
        if size > room:
            kept = kept.encode("utf-8")[:room].decode("utf-8", "ignore")
            size = room
        self._log.append(kept)
        self._log_kept += size

    def log_text(self) -> str:
        return "".join(self._log)

    # storage ----------------------------------------------------------------------------
    def storage_get(self, key: str, default: Any = None) -> Any:
        self._check_open("storage.get")
        encoded = self._storage.get(str(key))
        return default if encoded is None else json.loads(encoded)

    def storage_set(self, key: str, value: Any, durable: bool = False) -> None:
        """Set ``key`` in this call's view, under the quota. ``durable`` also relays the
        write to the parent first (see :data:`DURABLE_STORAGE_CALLBACK`), which commits it at
        once; the view changes only once the parent accepted it, so the snapshot a
        successful call returns includes it, and a failed call's snapshot (never sent)
        cannot take it back."""
        self._check_open("storage.set")
        if not isinstance(key, str):
            raise errors.ScriptError("storage keys must be strings")
        try:
            encoded = _dumps(value)
        except (TypeError, ValueError) as exc:
            raise errors.ScriptError(f"storage values must be JSON-compatible: {exc}") from None
        old = self._storage.get(key)
        if old == encoded:
            return
        new_size = self._storage_size - _entry_size(key, old) + _entry_size(key, encoded)
        if new_size > self.limits.storage_bytes:
            raise errors.LimitExceeded(
                f"storage quota of {self.limits.storage_bytes} bytes exceeded "
                f"(would be {new_size} bytes)"
            )
        if durable:
            self.call(DURABLE_STORAGE_CALLBACK, [key, value])
        self._storage[key] = encoded
        self._storage_size = new_size
        self.storage_changed = True

    def storage_delete(self, key: str) -> None:
        self._check_open("storage.delete")
        old = self._storage.pop(str(key), None)
        if old is not None:
            self._storage_size -= _entry_size(str(key), old)
            self.storage_changed = True

    def storage_snapshot(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._storage.items()}


#: characters measured at a time when counting the bytes of log text that is not kept
_MEASURE_CHARS = 1 << 16


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 without building the encoded copy of a huge string."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[i : i + _MEASURE_CHARS].encode("utf-8", "replace"))
        for i in range(0, len(text), _MEASURE_CHARS)
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _entry_size(key: str, encoded: str | None) -> int:
    if encoded is None:
        return 0
    # "key":value, — the size this entry adds to the JSON object of the whole storage
    return len(_dumps(key).encode()) + 1 + len(encoded.encode()) + 1


def _storage_size(storage: Mapping[str, str]) -> int:
    return 2 + sum(_entry_size(k, v) for k, v in storage.items())


def _make_error(cls: type[errors.SandboxError], message: str) -> errors.SandboxError:
    exc = cls.__new__(cls)
    errors.SandboxError.__init__(exc, message)
    return exc
