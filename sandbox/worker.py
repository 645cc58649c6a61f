"""The worker process: runs one invocation at a time under OS limits, for the parent pool.

Why our own template + pipes (not ``multiprocessing`` fork/forkserver/spawn):

* the host is threaded (web server, thread pools), and ``fork`` of a threaded process is
  unsafe; the host only ever uses ``subprocess`` (fork+exec in C, ``_posixsubprocess``):
  for the single-threaded template (:mod:`sandbox.template_process`), which forks workers,
  and for spawned workers where fork-serving is impossible (:mod:`sandbox.fork_server`);
* the worker must not inherit the host's environment (``CRM_HOST_SECRET_KEY``, tokens):
  the template and spawned workers are exec'd with an explicit minimal ``env`` (PATH, LANG
  only), so the secrets are never in a worker's memory or ``/proc/<pid>/environ`` — a fork
  of the host would carry its environment block even after ``os.environ.clear()``;
* ``multiprocessing`` connections unpickle what the peer sends; the worker is untrusted, so
  the parent must only ever parse JSON from it (see :mod:`sandbox.channel`).

Start-up cost: a forked worker inherits the template's warm interpreter (RestrictedPython,
the allow-listed modules and everything they import lazily, see :mod:`sandbox.preload`, so
scripts never trigger imports) and costs a ``fork`` plus :func:`start`; a spawned one pays
the interpreter start (~150 ms) itself. Calls are warm either way.

At start the worker hardens itself (:mod:`sandbox.hardening`: environment, network
namespace, rlimits, privileges; the outcome recorded in the hello message) and replaces
stdin/stdout by ``/dev/null`` (the protocol runs on duplicated descriptors). Scripts reach
the outside through :class:`~sandbox.worker_capabilities.WorkerCapabilities`.

Per invocation: ``RLIMIT_AS`` soft = baseline + the call's memory limit, ``RLIMIT_CPU``
soft = CPU used so far + the call's CPU limit (SIGXCPU raises :class:`CpuTimeExceeded`
inside the script; C loops that never reach the interpreter's signal check are killed by
the parent instead), a recursion limit a fixed number of frames above the worker's own
stack, and the peak-RSS counter reset (``/proc/self/clear_refs``) so that
``peak_memory_kb`` is the VmHWM of this call (interpreter baseline included).
"""

from __future__ import annotations

import base64
import contextlib
import gc
import importlib
import importlib.util
import json
import marshal
import math
import os
import resource
import signal
import sys
import types
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NoReturn

from sandbox import errors
from sandbox.channel import ChannelClosed, encode, read_frame_blocking, write_all
from sandbox.execution import collect_leftovers
from sandbox.hardening import harden, vm_size
from sandbox.kernel_wall import confine
from sandbox.limits import Limits
from sandbox.peak_memory import PeakRssCounter
from sandbox.preload import preload
from sandbox.worker_capabilities import WorkerCapabilities

#: exit status when the worker itself ran out of memory outside a script
EXIT_MEMORY = 87
#: exit status on a protocol error (the parent sent something unreadable)
EXIT_PROTOCOL = 88

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
        self.baseline_vm = vm_size()
        self.as_hard = resource.RLIM_INFINITY
        self.cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        self.limits_cache: dict[tuple[Any, ...], Limits] = {}
        self.in_script = False
        #: SIGXCPU arrived during the invocation window (a finalizer swallows the exception
        #: the handler raises, so the window also checks this flag)
        self.cpu_exceeded = False
        self.base_recursion = sys.getrecursionlimit()
        self.hello: dict[str, Any] = {
            "op": "hello",
            "pid": os.getpid(),
            # the byte-code format: the parent ships compiled code only when it is its own
            "bytecode": importlib.util.MAGIC_NUMBER.hex(),
        }
        # "module:function" running one function of a compiled script (sandbox.world's
        # execute); configurable so that tests can exercise the engine with a stub world
        sys.path[:0] = [str(p) for p in config.get("executor_path", ())]
        module_name, _, function_name = str(config.get("executor", DEFAULT_EXECUTOR)).partition(":")
        self.execute = getattr(importlib.import_module(module_name), function_name)

    def send(self, message: dict[str, Any]) -> None:
        write_all(self.out_fd, encode(message))

    def receive(self) -> dict[str, Any]:
        return read_frame_blocking(self.in_fd)

    def abort(self, reason: str) -> NoReturn:
        os._exit(EXIT_PROTOCOL)


_state: _State | None = None


def _on_sigxcpu(signum: int, frame: Any) -> None:
    if _state is not None and _state.in_script:
        _state.cpu_exceeded = True
        raise CpuTimeExceeded()


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


_peak_rss = PeakRssCounter()


def _reset_peak_rss() -> None:
    """Reset VmHWM; done right after a reply is sent, off the critical path."""
    _peak_rss.reset()


def _cached_script(state: _State, digest: str) -> Any:
    compiled = state.scripts.get(digest)
    if compiled is not None:
        state.scripts.move_to_end(digest)
    return compiled


def _compile(state: _State, message: dict[str, Any]) -> Any:
    """Compile inside the invocation's limits: a parser bomb is the script's problem. Code
    the parent compiled itself arrives as ``code`` instead (:mod:`sandbox.code_cache`)."""
    from sandbox.compiler import CompiledScript, compile_script

    filename = message.get("filename", "module.py")
    if message.get("source") is None:
        code = marshal.loads(base64.b64decode(message["code"]))
        if not isinstance(code, types.CodeType):
            raise errors.ScriptError("the parent sent code that is not a code object")
        compiled = CompiledScript(filename=filename, source_hash=message["hash"], code=code)
    else:
        compiled = compile_script(message["source"], filename)
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
    need_source = compiled is None and message.get("source") is None and not message.get("code")
    if need_source or not found:
        return {"op": "need", "inv": message.get("inv"), "source": need_source, "spec": not found}

    invocation_id = str(message.get("inv", ""))
    capabilities = WorkerCapabilities(
        state,
        invocation_id,
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
        state.cpu_exceeded = False
        gc.enable()
        try:
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
            error, recycle = _failure(exc, limits)
        # again after the executor: whatever it released last is collected in this window;
        # between invocations the collector is disabled, so nothing of a script runs there
        collect_leftovers()
        if state.cpu_exceeded and error is None:
            value = None
            error, recycle = _failure(CpuTimeExceeded(), limits)
    except BaseException as exc:  # the CPU or memory limit hit while collecting
        value = None
        error, recycle = _failure(exc, limits)
    finally:
        gc.disable()
        capabilities.close()
        state.in_script = False
        sys.setrecursionlimit(state.base_recursion)
        _soft_limit(resource.RLIMIT_CPU, resource.RLIM_INFINITY, state.cpu_hard)
        if soft_as is not None:
            _soft_limit(resource.RLIMIT_AS, state.as_hard, state.as_hard)
    cpu_end, peak_kb = _usage()
    reply: dict[str, Any] = {
        "op": "done",
        "inv": invocation_id,
        # the caller's correlation id, echoed unread: it labels this result, nothing more
        "request_id": str(message.get("request_id", "")),
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


def _failure(exc: BaseException, limits: Limits) -> tuple[dict[str, Any], bool]:
    """The error of an invocation and whether the worker must be replaced after it."""
    error = _error(exc, limits)
    # a script's message may hold lone surrogates ("\ud800"): UTF-8 frames cannot
    error["message"] = str(error["message"]).encode("utf-8", "replace").decode("utf-8")
    recycle = isinstance(exc, MemoryError | CpuTimeExceeded) or error["kind"] in (
        "memory_limit",
        "timeout",
    )
    return error, recycle


def _encode_reply(reply: dict[str, Any], max_bytes: int) -> bytes:
    """The reply frame; over ``max_bytes`` (``Limits.result_bytes``) the value and storage
    are dropped for a ``limit_exceeded`` error, so the parent never reads an oversized
    result."""
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
    if len(data) > max_bytes:
        size = len(data)
        del data
        reply.pop("value", None)
        reply.pop("storage", None)
        reply["ok"] = False
        reply["error"] = {
            "kind": "limit_exceeded",
            "message": f"the result is {size} bytes, more than the limit of {max_bytes} bytes",
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
            max_bytes = _limits(state, message["limits"]).result_bytes
            write_all(state.out_fd, _encode_reply(reply, max_bytes))
            if reply.get("op") == "done":
                _reset_peak_rss()
        elif op == "ping":
            state.send({"op": "pong"})
        elif op == "exit":
            return
        else:
            os._exit(EXIT_PROTOCOL)


def _ignore_unraisable(unraisable: Any) -> None:
    """Exceptions raised in finalizers are dropped (the script's own concern)."""


def preload_engine() -> None:
    """Import what scripts may reach (:func:`sandbox.preload.preload`: the allow-listed
    modules and everything they import lazily) and the engine, once per process, so that no
    script ever triggers an import (a file read) after hardening."""
    preload()
    import sandbox.compiler
    import sandbox.world  # noqa: F401


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor but ``keep`` and 0-2 (``/dev/null`` and stderr by now)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def start(in_fd: int, out_fd: int, config: Mapping[str, Any]) -> NoReturn:
    """The per-process start-up of EVERY worker, whatever started it: close every inherited
    descriptor but the two protocol pipes, harden (:mod:`sandbox.hardening`), then say hello
    and serve until the parent goes. The one place where a further confinement step (a
    kernel wall applied after preload and before the first script) belongs."""
    global _state
    _close_inherited({in_fd, out_fd})
    state = _State(in_fd, out_fd, config)
    _state = state
    hardening = harden(config)
    state.baseline_vm, state.as_hard = hardening.baseline_vm, hardening.as_hard
    state.hello["network_isolated"] = hardening.network_isolated
    state.hello["memory_limited"] = hardening.memory_limited
    state.hello["privileges_dropped"] = hardening.privileges_dropped
    state.hello["baseline_vm_kb"] = hardening.baseline_vm // 1024
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the host
    # the collector runs only inside invocation windows (see collect_leftovers), and what a
    # finalizer raises is the script's business, not text for the worker's stderr; what
    # start-up loaded is frozen, so those collections walk only what a script created
    # (a forked worker's template froze the preload already)
    gc.collect()
    gc.freeze()
    gc.disable()
    sys.unraisablehook = _ignore_unraisable
    _peak_rss.open()  # /proc cannot be opened once confined
    wall = confine(
        network_isolated=hardening.network_isolated,
        privileges_dropped=hardening.privileges_dropped,
    )
    state.hello["sandbox"] = wall.as_dict()
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


def main(config_json: str = "{}") -> None:
    """Entry point of a spawned worker (see :mod:`sandbox.worker_process`)."""
    config = json.loads(config_json)
    # the protocol runs on private descriptors; 0/1 become /dev/null so nothing a library
    # prints can corrupt a frame
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    preload_engine()
    start(in_fd, out_fd, config)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "{}")
