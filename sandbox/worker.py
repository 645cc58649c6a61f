"""The worker process: runs one invocation at a time under OS limits, for the parent pool.

Why ``subprocess`` + pipes (not ``multiprocessing`` fork/forkserver/spawn):

* the host is threaded (web server, thread pools), and ``fork`` of a threaded process is
  unsafe; ``subprocess`` uses fork+exec in C (``_posixsubprocess``) which is safe;
* the worker must not inherit the host's environment (``CRM_HOST_SECRET_KEY``, tokens):
  ``subprocess`` lets us exec with an explicit minimal ``env`` (PATH, LANG only) so the
  secrets are never in the worker's memory or ``/proc/<pid>/environ`` — a forkserver or a
  forked child would carry the host's environment block even after ``os.environ.clear()``;
* ``multiprocessing`` connections unpickle what the peer sends; the worker is untrusted, so
  the parent must only ever parse JSON from it (see :mod:`sandbox.channel`).

Start-up cost (~100 ms: interpreter + RestrictedPython + the allow-listed modules, imported
once here so scripts never trigger imports) is paid once per worker; calls are warm.

Hardening at start, in this order (each step recorded in the hello message):
``unshare(CLONE_NEWNET)`` when permitted (root on Linux) so the only interface is a down
loopback; ``RLIMIT_CORE=0``, ``RLIMIT_FSIZE=0``, ``RLIMIT_NPROC=0``, ``RLIMIT_NOFILE`` small;
``RLIMIT_AS`` hard = baseline + largest memory limit + headroom; stdin/stdout replaced by
``/dev/null`` (the protocol runs on duplicated descriptors); privileges dropped to
``nobody`` when started as root. Per invocation: ``RLIMIT_AS`` soft = baseline + the call's
memory limit, ``RLIMIT_CPU`` soft = CPU used so far + the call's CPU limit (SIGXCPU raises
:class:`CpuTimeExceeded` inside the script; C loops that never reach the interpreter's signal
check are killed by the parent instead), a recursion limit a fixed number of frames above the
worker's own stack, and the peak-RSS counter reset (``/proc/self/clear_refs``) so that
``peak_memory_kb`` is the VmHWM of this call (interpreter baseline included).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import math
import os
import resource
import signal
import sys
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sandbox import errors
from sandbox.channel import ChannelClosed, encode, read_frame_blocking, write_all
from sandbox.limits import MIB, Limits

#: modules scripts may import (SPEC §4), imported once at start so scripts never load files
PRELOAD = [
    "json",
    "re",
    "datetime",
    "time",
    "math",
    "hashlib",
    "hmac",
    "base64",
    "urllib.parse",
    "uuid",
    "decimal",
    "random",
    "string",
    "itertools",
    "functools",
    "collections",
]

#: exit status when the worker itself ran out of memory outside a script
EXIT_MEMORY = 87
#: exit status on a protocol error (the parent sent something unreadable)
EXIT_PROTOCOL = 88

CLONE_NEWNET = 0x40000000
#: address space reserved above the largest memory limit for the worker's own bookkeeping
HEADROOM_BYTES = 64 * MIB
#: largest frame the worker sends back; a bigger result is a limit violation, not a crash
MAX_RESULT_BYTES = 32 * MIB
DEFAULT_EXECUTOR = "sandbox.execution:execute"
#: compiled scripts / world specs kept per worker
CACHE_SIZE = 64


class CpuTimeExceeded(BaseException):
    """Raised by the SIGXCPU handler; a BaseException so ``except Exception`` in a script
    does not swallow it (the parent kills the worker anyway if it keeps running)."""


class _State:
    """Per-process state of the worker loop."""

    def __init__(self, in_fd: int, out_fd: int, config: Mapping[str, Any]):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.config = config
        self.scripts: OrderedDict[str, Any] = OrderedDict()
        self.specs: OrderedDict[str, Any] = OrderedDict()
        self.baseline_vm = _vm_size()
        self.as_hard = resource.RLIM_INFINITY
        self.cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        self.limits_cache: dict[tuple[Any, ...], Limits] = {}
        self.in_script = False
        self.base_recursion = sys.getrecursionlimit()
        self.hello: dict[str, Any] = {"op": "hello", "pid": os.getpid()}
        # "module:function" running one function of a compiled script (sandbox.world's
        # execute); configurable so that tests can exercise the engine with a stub world
        sys.path[:0] = [str(p) for p in config.get("executor_path", ())]
        module_name, _, function_name = str(config.get("executor", DEFAULT_EXECUTOR)).partition(":")
        self.execute = getattr(importlib.import_module(module_name), function_name)

    def send(self, message: dict[str, Any]) -> None:
        write_all(self.out_fd, encode(message))

    def receive(self) -> dict[str, Any]:
        return read_frame_blocking(self.in_fd)


_state: _State | None = None


# -- start-up hardening -------------------------------------------------------------------


def _vm_size() -> int:
    """Current address-space size in bytes (VmSize), 0 when /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except OSError:
        return 0


def _isolate_network() -> bool:
    """New, empty network namespace (loopback down): no route to anything. Best effort."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(CLONE_NEWNET) == 0
    except (OSError, AttributeError):
        return False


def _drop_privileges() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError:
        return False
    with contextlib.suppress(OSError, AttributeError):
        # keep /proc/self/* owned by us so the peak-RSS counter can still be reset
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    return True


def _set_limit(which: int, soft: int, hard: int | None = None) -> bool:
    try:
        _, current_hard = resource.getrlimit(which)
        if hard is None:
            hard = current_hard
        if current_hard != resource.RLIM_INFINITY and (
            hard == resource.RLIM_INFINITY or hard > current_hard
        ):
            hard = current_hard
        if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
            soft = hard
        resource.setrlimit(which, (soft, hard))
        return True
    except (ValueError, OSError):
        return False


def _harden(state: _State) -> None:
    config = state.config
    for name in list(os.environ):
        if name not in ("PATH", "LANG", "LC_ALL"):
            del os.environ[name]
    os.umask(0o077)
    with contextlib.suppress(OSError):
        os.chdir("/")
    state.hello["network_isolated"] = (
        _isolate_network() if config.get("isolate_network", True) else False
    )
    _set_limit(resource.RLIMIT_CORE, 0, 0)
    _set_limit(resource.RLIMIT_FSIZE, 0, 0)
    _set_limit(resource.RLIMIT_NOFILE, 64, 64)
    if hasattr(resource, "RLIMIT_NPROC"):
        _set_limit(resource.RLIMIT_NPROC, 0, 0)
    state.baseline_vm = _vm_size()
    max_memory = int(config.get("max_memory_mb", 256)) * MIB
    if state.baseline_vm:
        state.as_hard = state.baseline_vm + max_memory + HEADROOM_BYTES
        state.hello["memory_limited"] = _set_limit(resource.RLIMIT_AS, state.as_hard, state.as_hard)
    else:
        state.hello["memory_limited"] = False
    state.hello["privileges_dropped"] = (
        _drop_privileges() if config.get("drop_privileges", True) else False
    )
    state.hello["baseline_vm_kb"] = state.baseline_vm // 1024
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the host


def _on_sigxcpu(signum: int, frame: Any) -> None:
    if _state is not None and _state.in_script:
        raise CpuTimeExceeded()


# -- capabilities lent to the script --------------------------------------------------------


class WorkerCapabilities:
    """The script's reach, as the world layer expects it: settings, fetch/call relayed to
    the parent over the channel, storage with a quota, log with a byte cap."""

    def __init__(
        self,
        state: _State,
        settings: Mapping[str, Any],
        storage: Mapping[str, Any] | None,
        limits: Limits,
        log_keep_bytes: int,
    ):
        self._state = state
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

    # relayed to the parent ----------------------------------------------------------------
    def _ask(self, message: dict[str, Any]) -> Any:
        state = self._state
        try:
            state.send(message)
        except (TypeError, ValueError) as exc:
            raise errors.ScriptError(f"arguments are not JSON-compatible: {exc}") from None
        reply = state.receive()
        if reply.get("ok"):
            return reply.get("value")
        kind = reply.get("kind", "script_error")
        cls = errors.ERROR_CLASSES.get(kind, errors.ScriptError)
        raise _make_error(cls, str(reply.get("message", "failed")))

    def fetch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self._ask({"op": "fetch", "request": dict(request)})

    def call(self, name: str, args: list[Any]) -> Any:
        return self._ask({"op": "call", "name": str(name), "args": list(args)})

    # log --------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """One captured line (print/log); lone surrogates are replaced, not carried."""
        text = str(text).encode("utf-8", "replace").decode("utf-8") + "\n"
        size = len(text.encode("utf-8"))
        self.log_total_bytes += size
        room = self._log_keep_bytes - self._log_kept
        if room <= 0:
            return
        if size > room:
            text = text.encode("utf-8")[:room].decode("utf-8", "ignore")
            size = room
        self._log.append(text)
        self._log_kept += size

    def log_text(self) -> str:
        return "".join(self._log)

    # storage ----------------------------------------------------------------------------
    def storage_get(self, key: str, default: Any = None) -> Any:
        encoded = self._storage.get(str(key))
        return default if encoded is None else json.loads(encoded)

    def storage_set(self, key: str, value: Any) -> None:
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
        self._storage[key] = encoded
        self._storage_size = new_size
        self.storage_changed = True

    def storage_delete(self, key: str) -> None:
        old = self._storage.pop(str(key), None)
        if old is not None:
            self._storage_size -= _entry_size(str(key), old)
            self.storage_changed = True

    def storage_keys(self) -> list[str]:
        return list(self._storage)

    def storage_snapshot(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._storage.items()}


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


# -- one invocation -------------------------------------------------------------------------


def _frame_depth() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return depth


def _usage() -> tuple[float, int]:
    """(CPU seconds so far, peak RSS in KiB since the last reset) in one syscall.

    On Linux ``ru_maxrss`` is the mm's high-water mark, which ``clear_refs`` resets."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, int(usage.ru_maxrss)


def _reset_peak_rss() -> None:
    """Reset VmHWM; done right after a reply is sent, off the critical path."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _cached_script(state: _State, digest: str) -> Any:
    compiled = state.scripts.get(digest)
    if compiled is not None:
        state.scripts.move_to_end(digest)
    return compiled


def _compile(state: _State, message: dict[str, Any]) -> Any:
    """Compile inside the invocation's limits: a parser bomb is the script's problem."""
    from sandbox.compiler import compile_script

    compiled = compile_script(message["source"], message.get("filename", "module.py"))
    state.scripts[message["hash"]] = compiled
    if len(state.scripts) > CACHE_SIZE:
        state.scripts.popitem(last=False)
    return compiled


def _world_spec(state: _State, message: dict[str, Any]) -> tuple[bool, Any]:
    digest = message.get("spec_hash")
    if digest is None:
        return True, None
    if digest in state.specs:
        state.specs.move_to_end(digest)
        return True, state.specs[digest]
    if "spec" not in message:
        return False, None
    from sandbox import world

    data = message["spec"]
    from_dict = getattr(getattr(world, "WorldSpec", None), "from_dict", None)
    spec = from_dict(data) if from_dict is not None else data
    state.specs[digest] = spec
    if len(state.specs) > CACHE_SIZE:
        state.specs.popitem(last=False)
    return True, spec


def _error(exc: BaseException, limits: Limits) -> dict[str, Any]:
    if isinstance(exc, errors.SandboxError):
        return {"kind": exc.kind, "message": exc.message, "line": exc.line}
    if isinstance(exc, CpuTimeExceeded):
        return {"kind": "timeout", "message": f"CPU time limit of {limits.cpu_s:g} s exceeded"}
    if isinstance(exc, MemoryError):
        return {
            "kind": "memory_limit",
            "message": f"memory limit of {limits.memory_mb} MiB exceeded",
        }
    if isinstance(exc, RecursionError):
        return {
            "kind": "limit_exceeded",
            "message": f"recursion limit of {limits.recursion_depth} frames exceeded",
        }
    return {"kind": "script_error", "message": f"{type(exc).__name__}: {exc}"}


def _limits(state: _State, data: dict[str, Any]) -> Limits:
    key = tuple(data.items())
    limits = state.limits_cache.get(key)
    if limits is None:
        if len(state.limits_cache) > CACHE_SIZE:
            state.limits_cache.clear()
        limits = state.limits_cache[key] = Limits.from_dict(data)
    return limits


def _soft_limit(which: int, soft: int, hard: int) -> None:
    """Hot-path setrlimit: the hard limit is known, only the soft one moves."""
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
        soft = hard
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(which, (soft, hard))


def _run(state: _State, message: dict[str, Any]) -> dict[str, Any]:
    limits = _limits(state, message["limits"])
    compiled = _cached_script(state, message["hash"])
    found, spec = _world_spec(state, message)
    need_source = compiled is None and message.get("source") is None
    if need_source or not found:
        return {"op": "need", "source": need_source, "spec": not found}

    capabilities = WorkerCapabilities(
        state,
        message.get("settings") or {},
        message.get("storage"),
        limits,
        int(message.get("log_keep_bytes", limits.log_bytes)),
    )
    cpu_start, _ = _usage()
    recycle = False
    soft_as = state.baseline_vm + limits.memory_bytes if state.baseline_vm else None
    value: Any = None
    error: dict[str, Any] | None = None
    try:
        if soft_as is not None:
            _soft_limit(resource.RLIMIT_AS, soft_as, state.as_hard)
        _soft_limit(resource.RLIMIT_CPU, math.ceil(cpu_start + limits.cpu_s), state.cpu_hard)
        sys.setrecursionlimit(_frame_depth() + limits.recursion_depth + 20)
        state.in_script = True
        if compiled is None:
            compiled = _compile(state, message)
        value = state.execute(
            compiled,
            message["function"],
            list(message.get("args") or []),
            dict(message.get("kwargs") or {}),
            capabilities,
            spec,
        )
    except BaseException as exc:
        state.in_script = False
        error = _error(exc, limits)
        recycle = isinstance(exc, MemoryError | CpuTimeExceeded) or error["kind"] in (
            "memory_limit",
            "timeout",
        )
    finally:
        state.in_script = False
        sys.setrecursionlimit(state.base_recursion)
        _soft_limit(resource.RLIMIT_CPU, resource.RLIM_INFINITY, state.cpu_hard)
        if soft_as is not None:
            _soft_limit(resource.RLIMIT_AS, state.as_hard, state.as_hard)
    cpu_end, peak_kb = _usage()
    reply: dict[str, Any] = {
        "op": "done",
        "ok": error is None,
        "log": capabilities.log_text(),
        "log_total_bytes": capabilities.log_total_bytes,
        "cpu_ms": round((cpu_end - cpu_start) * 1000, 3),
        "cpu_total": cpu_end,
        "peak_memory_kb": peak_kb,
        "recycle": recycle,
    }
    if error is None:
        reply["value"] = value
        if capabilities.storage_changed:
            reply["storage"] = capabilities.storage_snapshot()
    else:
        reply["error"] = error
    return reply


def _encode_reply(reply: dict[str, Any]) -> bytes:
    try:
        data = encode(reply)
    except (TypeError, ValueError, RecursionError) as exc:
        reply.pop("value", None)
        reply.pop("storage", None)
        reply["ok"] = False
        reply["error"] = {
            "kind": "script_error",
            "message": f"the function returned a value that is not JSON-compatible: {exc}",
        }
        data = encode(reply)
    if len(data) > MAX_RESULT_BYTES:
        reply.pop("value", None)
        reply.pop("storage", None)
        reply["ok"] = False
        reply["error"] = {
            "kind": "limit_exceeded",
            "message": f"the result is larger than {MAX_RESULT_BYTES} bytes",
        }
        data = encode(reply)
    return data


def serve(state: _State) -> None:
    """The request loop: one ``run`` at a time until ``exit`` or end of input."""
    _reset_peak_rss()
    while True:
        message = state.receive()
        op = message.get("op")
        if op == "run":
            reply = _run(state, message)
            write_all(state.out_fd, _encode_reply(reply))
            if reply.get("op") == "done":
                _reset_peak_rss()
        elif op == "ping":
            state.send({"op": "pong"})
        elif op == "exit":
            return
        else:
            os._exit(EXIT_PROTOCOL)


def main(config_json: str = "{}") -> None:
    """Entry point (see :mod:`sandbox.pool` for the command line)."""
    global _state
    config = json.loads(config_json)
    # the protocol runs on private descriptors; 0/1 become /dev/null so nothing a library
    # prints can corrupt a frame
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    for name in PRELOAD:
        importlib.import_module(name)
    import sandbox.compiler
    import sandbox.world  # noqa: F401

    state = _State(in_fd, out_fd, config)
    _state = state
    _harden(state)
    state.send(state.hello)
    try:
        serve(state)
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except (BrokenPipeError, EOFError, OSError, ChannelClosed):
        pass
    except Exception:
        os._exit(EXIT_PROTOCOL)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "{}")
