"""One invocation as the parent sees it: dispatch, relay, supervise, validate.

The calling thread drives this conversation with one worker: it sends the ``run`` frame,
then answers the worker's ``fetch``/``call`` requests (performed here, in the parent — the
worker has no network and no host objects) until ``done``, all under the invocation's
wall-clock deadline and a CPU check. Everything the worker says is untrusted: each field of
``done`` is type-checked, limits are re-applied (log size, storage quota), unknown error
kinds become ``script_error``, and secrets are masked before the caller sees anything.

**Invocation identity.** Each conversation draws a fresh random token and puts it in the
``run`` frame; the worker binds every capability it lends to that token and repeats it on
every frame it sends (``fetch``, ``call``, ``need``, ``done``). A frame carrying any other
token — a leftover of an earlier invocation, or a forged one — is refused: the worker is
killed as a protocol violation and replaced, and no callback of this invocation runs for it.
A frame that arrives while no invocation is running on the worker (a *late* or
*unsolicited* frame) is caught by :meth:`~sandbox.channel.FrameReader.pending` when the
worker is released or taken, and kills it the same way before anyone else's call is
dispatched to it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import secrets
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeGuard

from sandbox import errors
from sandbox.channel import ChannelClosed, ChannelTimeout, ProtocolViolation
from sandbox.invocation import (
    ERROR_KINDS,
    ErrorInfo,
    Invocation,
    InvocationResult,
    redact_data,
    redact_text,
)
from sandbox.limits import Limits

if TYPE_CHECKING:
    from sandbox.worker_process import WorkerProcess

SpecPayload = Callable[[Any], tuple[dict[str, Any], str]]
"""A world spec's JSON form and hash (the pool's cache, so each spec is serialised once)."""
CompiledCode = Callable[[Invocation, "WorkerProcess"], "str | None"]
"""The pool's compiled code of an invocation's script for a worker, if it has it."""

logger = logging.getLogger("sandbox.pool")

#: seconds of CPU above the limit before the parent kills a worker whose in-process SIGXCPU
#: handler could not stop the script (RLIMIT_CPU has whole-second granularity)
CPU_GRACE_S = 1.0
#: bytes of an error message kept from a worker
MAX_MESSAGE_CHARS = 4000

# exit statuses chosen by sandbox.worker (kept in sync by the tests)
EXIT_MEMORY = 87
EXIT_PROTOCOL = 88


class LateFrame(ChannelClosed):
    """The worker's previous invocation spoke after its end, before this one had any
    effect: the worker is gone and the invocation may run on another one."""


def died_error(status: int | None, reason: str | None, invocation: Invocation) -> ErrorInfo:
    """Name the failure of a worker that is gone, from why we killed it or how it died."""
    limits = invocation.limits
    if reason == "timeout":
        return ErrorInfo("timeout", f"wall-clock time limit of {limits.timeout_s:g} s exceeded")
    if reason == "cpu":
        return ErrorInfo("timeout", f"CPU time limit of {limits.cpu_s:g} s exceeded")
    if reason == "protocol":
        return ErrorInfo("script_error", "the worker sent an invalid message and was stopped")
    if reason == "pool closed":
        return ErrorInfo("script_error", "the sandbox pool was closed during the invocation")
    if status == -signal.SIGXCPU:
        return ErrorInfo("timeout", f"CPU time limit of {limits.cpu_s:g} s exceeded")
    if status in (-signal.SIGKILL, EXIT_MEMORY):
        return ErrorInfo(
            "memory_limit",
            f"the worker was killed while running the script (memory limit of "
            f"{limits.memory_mb} MiB, or the system ran out of memory)",
        )
    if status in (-signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT):
        name = signal.Signals(-status).name
        return ErrorInfo(
            "limit_exceeded",
            f"the worker crashed with {name} (stack or interpreter limit exceeded)",
        )
    return ErrorInfo("script_error", f"the worker exited unexpectedly (status {status})")


class Conversation:
    """Parent side of one invocation on one worker. It gets the one thing of the pool it
    uses, ``spec_payload``, not the pool: the pool drives conversations, never the reverse."""

    def __init__(
        self,
        spec_payload: SpecPayload,
        compiled_code: CompiledCode,
        worker: WorkerProcess,
        invocation: Invocation,
    ):
        self.spec_payload = spec_payload
        self.compiled_code = compiled_code
        self.worker = worker
        self.invocation = invocation
        self.limits = invocation.limits
        #: the run frame reached the worker (a failure before that may be retried elsewhere)
        self.dispatched = False
        #: the worker may serve another invocation afterwards
        self.worker_healthy = False
        self.fetch_calls = 0
        #: the source went to the worker to compile (the pool may learn its code after)
        self.compiled_in_worker = False
        #: fetch/call requests of the worker served so far (effects of this invocation)
        self.relayed = 0
        #: the identity every frame of this invocation carries (see the module docstring)
        self.token = secrets.token_hex(12)
        self.records: list[dict[str, Any]] = []
        self._fetcher: Any = None
        self._redact = [s for s in invocation.redact if isinstance(s, str) and s]

    # -- driving --------------------------------------------------------------------------

    def run(self) -> InvocationResult:
        start = time.monotonic()
        self.deadline = start + self.limits.timeout_s
        message = self._run_message()
        try:
            result = self._converse(message, start)
        finally:
            if self._fetcher is not None:
                self._fetcher.close()
        if self._fetcher is not None:
            self.records.extend(r.as_dict() for r in self._fetcher.records)
        return InvocationResult(
            ok=result.ok,
            value=result.value,
            error=result.error,
            log=result.log,
            log_truncated=result.log_truncated,
            fetches=redact_data(self.records, self._redact),
            cpu_ms=result.cpu_ms,
            wall_ms=round((time.monotonic() - start) * 1000, 3),
            peak_memory_kb=result.peak_memory_kb,
            storage=result.storage,
            worker_pid=self.worker.pid,
            request_id=self.invocation.request_id,
        )

    def _run_message(self) -> dict[str, Any]:
        inv = self.invocation
        secret_bytes = max((len(s.encode("utf-8", "replace")) for s in self._redact), default=0)
        message: dict[str, Any] = {
            "op": "run",
            "inv": self.token,
            "hash": inv.source_hash,
            "filename": inv.filename,
            "function": inv.function,
            "request_id": inv.request_id,
            "args": list(inv.args),
            "kwargs": dict(inv.kwargs),
            "settings": dict(inv.settings),
            "storage": dict(inv.storage) if inv.storage is not None else None,
            "limits": _limits_wire(self.limits),
            # keep enough past the cap that a secret straddling it is still masked whole
            "log_keep_bytes": self.limits.log_bytes + secret_bytes,
        }
        spec_missing = False
        if inv.world is not None:
            _, message["spec_hash"] = self.spec_payload(inv.world)
            spec_missing = message["spec_hash"] not in self.worker.known
        self._add_missing(
            message, source=inv.source_hash not in self.worker.known, spec=spec_missing
        )
        return message

    def _add_missing(self, message: dict[str, Any], *, source: bool, spec: bool) -> None:
        """Ship what the worker does not have cached (it says so with a ``need`` frame):
        the pool's compiled code when it has it and the worker speaks its byte code
        (:mod:`sandbox.code_cache`), else the source, compiled in the worker."""
        inv = self.invocation
        if source:
            code = self.compiled_code(inv, self.worker)
            if code is not None:
                message["code"] = code
            else:
                message["source"] = inv.source
                self.compiled_in_worker = True
        if spec and inv.world is not None:
            message["spec"] = self.spec_payload(inv.world)[0]

    def _converse(self, message: dict[str, Any], start: float) -> InvocationResult:
        worker = self.worker
        if worker.reader.pending():
            # the idle worker spoke unasked: kill it before it sees this invocation
            worker.kill("protocol")
            raise ChannelClosed("the worker sent an unsolicited frame while idle")
        try:
            worker.send(message, self.deadline)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"invocation data is not JSON-compatible: {exc}") from None
        except ChannelTimeout:
            return self._kill("timeout")
        self.dispatched = True
        previous_token, worker.last_token = worker.last_token, self.token
        if "source" in message or "code" in message:
            worker.known.add(self.invocation.source_hash)
        if "spec" in message:
            worker.known.add(message["spec_hash"])
        cpu_check_at = start + self.limits.cpu_s + CPU_GRACE_S
        asked_again = False
        while True:
            try:
                frame = worker.reader.read(min(self.deadline, cpu_check_at))
            except ChannelTimeout:
                now = time.monotonic()
                if now >= self.deadline:
                    return self._kill("timeout")
                used = worker.cpu_seconds()
                if used is not None and used - worker.cpu_total > self.limits.cpu_s + CPU_GRACE_S:
                    return self._kill("cpu")
                spent = 0.0 if used is None else used - worker.cpu_total
                cpu_check_at = now + max(0.05, self.limits.cpu_s + CPU_GRACE_S - spent)
                continue
            except ProtocolViolation:
                return self._kill("protocol")
            except ChannelClosed:
                return self._died()
            op = frame.get("op")
            if frame.get("inv") != self.token:
                # not this invocation's: refuse, never answer, and replace the worker
                if (
                    previous_token is not None
                    and frame.get("inv") == previous_token
                    and not self.relayed
                ):
                    # the previous invocation's late frame overtook this one before any
                    # of this invocation's requests was served: nothing of it happened
                    # yet, so the pool runs it again on another worker
                    worker.kill("protocol")
                    raise LateFrame("a frame of the previous invocation arrived late")
                return self._kill("protocol")
            try:
                if op == "done":
                    if frame.get("request_id", "") != self.invocation.request_id:
                        return self._kill("protocol")  # an answer to some other request
                    return self._finish(frame)
                if op == "need" and not asked_again:
                    asked_again = True
                    resend = dict(message)
                    self._add_missing(
                        resend, source=bool(frame.get("source")), spec=bool(frame.get("spec"))
                    )
                    worker.send(resend, self.deadline)
                elif op == "fetch":
                    self.relayed += 1
                    self._reply(self._fetch(frame.get("request")))
                elif op == "call":
                    self.relayed += 1
                    self._reply(self._call(frame.get("name"), frame.get("args")))
                else:
                    return self._kill("protocol")
            except ChannelTimeout:
                return self._kill("timeout")
            except ChannelClosed:
                return self._died()
            if time.monotonic() >= self.deadline:
                return self._kill("timeout")

    def _reply(self, reply: dict[str, Any]) -> None:
        try:
            self.worker.send({**reply, "inv": self.token}, self.deadline)
        except (TypeError, ValueError):
            # the host side returned something JSON cannot carry: the script gets an error
            failure = _failure(errors.ScriptError("the host returned a value that is not JSON"))
            self.worker.send({**failure, "inv": self.token}, self.deadline)

    # -- relayed capabilities --------------------------------------------------------------

    def _fetch(self, request: Any) -> dict[str, Any]:
        inv = self.invocation
        if not isinstance(request, dict):
            return _failure(errors.ScriptError("fetch request must be a mapping"))
        self.fetch_calls += 1
        if self.fetch_calls > self.limits.max_fetches:
            return _failure(
                errors.LimitExceeded(
                    f"fetch limit reached: at most {self.limits.max_fetches} fetch calls "
                    "per invocation"
                )
            )
        remaining = self.deadline - time.monotonic()
        asked = request.get("timeout")
        timeout = min(self.limits.fetch_timeout_s, max(0.001, remaining))
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
            timeout = min(timeout, float(asked))
        request = {**request, "timeout": timeout}
        if inv.egress is None:
            return _failure(
                errors.EgressDenied("fetch() is not available: this module declares no egress")
            )
        try:
            return _success(self._real_fetcher().fetch(request))
        except errors.SandboxError as exc:
            return _failure(exc)
        except Exception as exc:  # a bug in the fetch layer must not kill the host thread
            logger.exception("fetch failed unexpectedly")
            return _failure(errors.ScriptError(f"fetch failed ({type(exc).__name__})"))

    def _real_fetcher(self) -> Any:
        if self._fetcher is None:
            from sandbox.fetch import Fetcher, FetchLimits

            network = self.invocation.network
            self._fetcher = Fetcher(
                self.invocation.egress,
                FetchLimits(
                    max_fetches=self.limits.max_fetches,
                    timeout_s=self.limits.fetch_timeout_s,
                    max_response_bytes=self.limits.max_response_bytes,
                ),
                resolver=network.resolver if network else None,
                transport_factory=network.transport_factory if network else None,
                secrets=self.invocation.redact,
            )
        return self._fetcher

    def _call(self, name: Any, args: Any) -> dict[str, Any]:
        callback = self.invocation.callbacks.get(name) if isinstance(name, str) else None
        if callback is None:
            return _failure(errors.ScriptError(f"{name!s} is not available to this script"))
        if not isinstance(args, list):
            return _failure(errors.ScriptError("callback arguments must be a list"))
        try:
            return _success(callback(args))
        except errors.SandboxError as exc:
            return _failure(exc)
        except Exception as exc:
            # the host's exception text may describe host internals: the script gets the type
            logger.warning("host callback %s failed", name, exc_info=True)
            return _failure(errors.ScriptError(f"{name} failed ({type(exc).__name__})"))

    # -- endings -------------------------------------------------------------------------------

    def _kill(self, reason: str) -> InvocationResult:
        self.worker.discard(reason)  # the reason names the failure, not the exit status
        return self._failed(died_error(None, reason, self.invocation))

    def _died(self) -> InvocationResult:
        status = self.worker.kill()
        return self._failed(died_error(status, self.worker.kill_reason, self.invocation))

    def _failed(self, error: ErrorInfo) -> InvocationResult:
        return InvocationResult(ok=False, error=error, worker_pid=self.worker.pid)

    def _finish(self, frame: dict[str, Any]) -> InvocationResult:
        """Validate the worker's ``done`` frame field by field; mask secrets."""
        limits = self.limits
        cpu_total = frame.get("cpu_total")
        if _is_number(cpu_total):
            self.worker.cpu_total = float(cpu_total)
        # anything already behind ``done`` was sent outside the invocation: a late frame
        self.worker_healthy = not frame.get("recycle") and not self.worker.reader.pending()
        ok = frame.get("ok") is True
        error: ErrorInfo | None = None
        if not ok:
            raw = frame.get("error")
            raw = raw if isinstance(raw, dict) else {}
            kind = raw.get("kind")
            kind = kind if kind in ERROR_KINDS else "script_error"
            message = raw.get("message")
            message = (
                _printable(str(message)[:MAX_MESSAGE_CHARS]) if message is not None else "failed"
            )
            line = raw.get("line")
            line = line if isinstance(line, int) and not isinstance(line, bool) else None
            error = ErrorInfo(kind, redact_text(message, self._redact), line)
        log, truncated = self._log(frame)
        storage = frame.get("storage") if ok else None
        if storage is not None:
            if not isinstance(storage, dict):
                storage = None
            else:
                size = len(json.dumps(storage, separators=(",", ":"), ensure_ascii=False).encode())
                if size > limits.storage_bytes:
                    ok, storage = False, None
                    error = ErrorInfo(
                        "limit_exceeded",
                        f"storage quota of {limits.storage_bytes} bytes exceeded",
                    )
        peak = frame.get("peak_memory_kb")
        cpu_ms = frame.get("cpu_ms")
        return InvocationResult(
            ok=ok,
            value=frame.get("value") if ok else None,
            error=error,
            log=log,
            log_truncated=truncated,
            cpu_ms=float(cpu_ms) if _is_number(cpu_ms) else 0.0,
            peak_memory_kb=int(peak) if _is_number(peak) else None,
            storage=storage,
            worker_pid=self.worker.pid,
        )

    def _log(self, frame: dict[str, Any]) -> tuple[str, bool]:
        cap = self.limits.log_bytes
        raw = frame.get("log")
        raw = _printable(raw) if isinstance(raw, str) else ""
        total = frame.get("log_total_bytes")
        text = redact_text(raw, self._redact)
        data = text.encode("utf-8", "replace")
        truncated = len(data) > cap or (
            _is_number(total) and total > len(raw.encode("utf-8", "replace"))
        )
        if not truncated:
            return text, False
        written = int(total) if _is_number(total) else len(data)
        kept = data[:cap].decode("utf-8", "ignore")
        return f"{kept}\n[log truncated: {written} bytes written, limit {cap} bytes]", True


@functools.lru_cache(maxsize=256)
def _limits_wire(limits: Limits) -> dict[str, Any]:
    """``Limits.as_dict`` is a deep copy; invocations share a few Limits objects."""
    return limits.as_dict()


def _printable(text: str) -> str:
    """Log and error text as stored and shown: NUL characters (which PostgreSQL refuses in
    text columns) become U+FFFD, like the lone surrogates the worker already replaces."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _success(value: Any) -> dict[str, Any]:
    return {"op": "reply", "ok": True, "value": value}


def _failure(exc: errors.SandboxError) -> dict[str, Any]:
    return {"op": "reply", "ok": False, "kind": exc.kind, "message": exc.message}
