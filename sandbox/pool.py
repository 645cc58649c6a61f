"""A pool of warm worker processes and the supervisor that keeps it whole.

``SandboxPool.run(invocation)`` is thread-safe: any number of host threads (an asyncio
threadpool, a web server's workers) may call it at once. Each call takes an idle worker —
a worker never runs two invocations at once — and the **calling thread supervises its own
invocation**: it waits on the worker's pipe with the time left, relays fetch()/host
callbacks, and at the wall-clock deadline (or when the worker's CPU, read from
``/proc/<pid>/stat``, passes the CPU limit without the in-worker SIGXCPU having stopped it —
e.g. a long C loop such as ``sum(range(10**12))``) it SIGKILLs the worker. A worker that died
or was killed is handed to the **supervisor thread**, which spawns a replacement in the
background so the pool returns to full size while the failed call already has its answer.
Nothing is shared between workers, so a kill never touches other invocations.

Replacement is a ``fork`` of the pool's pre-warmed template process (about a millisecond,
:mod:`sandbox.fork_server`), or one interpreter start (~100 ms) where fork-serving is
impossible. Workers can also be recycled after N calls (``recycle_after``) to bound slow
leaks in long-lived processes.

**One trust domain per worker.** Every invocation carries an opaque ``isolation_key`` (the
host passes ``(purpose, tenant, module, version)``; the pool knows nothing of tenants). A
worker is bound to the key of the first invocation it serves and only ever serves that key
again; an invocation of another key takes a fresh worker (a warm spare, promoted at once)
or, when none is idle, evicts the least recently used idle worker (SIGKILL) and waits for
its fresh replacement. The pool therefore keeps up to ``size`` keys warm, LRU; a switch to
a key that is not warm costs one worker start — a fork of the template — plus, the first
time a script runs in the pool, its compilation (see BENCHMARKS.md, ``tenant_switch``).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.channel import (
    DEFAULT_MAX_FRAME_BYTES,
    ChannelClosed,
    ChannelError,
)
from sandbox.code_cache import BYTECODE_MAGIC, CompiledCodeCache
from sandbox.conversation import Conversation, LateFrame, died_error
from sandbox.fork_server import ForkServer, ForkServerUnavailable, unavailable_reason
from sandbox.invocation import ErrorInfo, Invocation, InvocationResult
from sandbox.limits import DEFAULT_LIMITS
from sandbox.worker_process import WORKER_ENV, WorkerProcess

logger = logging.getLogger(__name__)


class PoolClosed(RuntimeError):
    """``run`` was called on (or during) ``close``."""


class WorkerStartError(RuntimeError):
    """Workers cannot be started (the pool is empty and spawning keeps failing)."""


@dataclass(frozen=True)
class PoolStats:
    """A consistent snapshot of the pool for monitoring (read under the pool's lock).

    ``busy`` workers are running an invocation; ``waiting`` callers are blocked for an idle
    worker right now; ``waits`` counts the acquisitions since start that had to wait at all
    (``wait_timeouts`` of them gave up at the acquire deadline)."""

    size: int
    alive: int
    idle: int
    busy: int
    spares: int
    waiting: int
    waits: int
    wait_timeouts: int
    replacements: int
    evictions: int


class SandboxPool:
    """Warm, supervised worker processes that run :class:`Invocation` s.

    ``size`` workers are started before the constructor returns (pass ``start=False`` and
    call :meth:`start` to defer). ``max_memory_mb`` is the largest memory limit any
    invocation may ask for (it fixes the workers' hard address-space limit).
    ``recycle_after`` replaces a worker after that many invocations (None = never).
    ``spares`` warm workers wait beside the pool (not serving) and are promoted the moment a
    worker is killed, so kill-and-replace costs a SIGKILL, not an interpreter start.
    ``acquire_timeout_s`` bounds the wait for an idle worker (None = wait).
    ``executor`` (``"module:function"``, imported in the worker) runs one function of a
    compiled script; the default is :func:`sandbox.execution.execute` (``executor_path`` is
    prepended to the worker's ``sys.path`` to find another one).
    ``fork_server`` forks workers from a pre-warmed template process (see
    :mod:`sandbox.fork_server`); where that is impossible — or with ``fork_server=False`` —
    each worker is a fresh interpreter. :attr:`start_method` says which, and
    :attr:`fork_server_unavailable` why not.
    """

    def __init__(
        self,
        size: int = 2,
        *,
        recycle_after: int | None = None,
        max_memory_mb: int = DEFAULT_LIMITS.memory_mb,
        isolate_network: bool = True,
        drop_privileges: bool = True,
        worker_stderr: int | None = subprocess.DEVNULL,
        start_timeout_s: float = 30.0,
        acquire_timeout_s: float | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        spares: int = 1,
        python: str = sys.executable,
        executor: str = "sandbox.execution:execute",
        executor_path: Sequence[str] = (),
        fork_server: bool = True,
        start: bool = True,
    ):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.spares = max(0, spares)
        self.recycle_after = recycle_after
        self.acquire_timeout_s = acquire_timeout_s
        self.start_timeout_s = start_timeout_s
        self._worker_kwargs: dict[str, Any] = {
            "config": {
                "max_memory_mb": max_memory_mb,
                "isolate_network": isolate_network,
                "drop_privileges": drop_privileges,
                "executor": executor,
                "executor_path": list(executor_path),
            },
            "stderr": worker_stderr,
            "max_frame_bytes": max_frame_bytes,
            "python": python,
        }
        self._cond = threading.Condition()
        self._idle: deque[WorkerProcess] = deque()
        self._workers: set[WorkerProcess] = set()
        self._wanted = 0
        self._spare_pool: deque[WorkerProcess] = deque()
        self._wanted_spares = 0
        self._spawn_failures = 0
        self._last_spawn_error: BaseException | None = None
        self._closed = False
        self._started = False
        self._spec_cache: dict[int, tuple[Any, dict[str, Any], str]] = {}
        self._code_cache = CompiledCodeCache()
        self._want_fork_server = fork_server
        self._fork_server: ForkServer | None = None
        #: "fork-server" (workers forked by the template) or "spawn" (fresh interpreters)
        self.start_method = "spawn"
        #: why workers are spawned although a fork server was asked for (None otherwise)
        self.fork_server_unavailable: str | None = None
        self._supervisor = threading.Thread(
            target=self._supervise, name="sandbox-supervisor", daemon=True
        )
        self.replacements = 0
        #: idle workers of another key killed to make room (LRU eviction)
        self.evictions = 0
        self._busy = 0
        self._waiting = 0
        self._waits = 0
        self._wait_timeouts = 0
        if start:
            self.start()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (in parallel) and the supervisor; returns when all are warm."""
        with self._cond:
            if self._started:
                return
            self._started = True
        atexit.register(self.close)
        if self._want_fork_server:
            self._start_fork_server()
        started = self._spawn(self.size)
        with self._cond:
            self._idle.extend(started)
            self._workers.update(started)
            self._wanted += self.size - len(started)
            self._wanted_spares += self.spares
            self._cond.notify_all()
        if not started:
            self.close()
            raise WorkerStartError(f"no worker could start: {self._last_spawn_error!r}")
        self._supervisor.start()

    def close(self) -> None:
        """Stop every worker (running invocations fail) and the supervisor. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            workers = [*self._workers, *self._spare_pool]
            self._workers.clear()
            self._idle.clear()
            self._spare_pool.clear()
            self._cond.notify_all()
        with contextlib.suppress(ValueError):
            atexit.unregister(self.close)
        for worker in workers:
            worker.kill("pool closed")
        if self._fork_server is not None:
            self._fork_server.close()
        if self._supervisor.is_alive() and threading.current_thread() is not self._supervisor:
            self._supervisor.join(timeout=10)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- introspection --------------------------------------------------------------------

    def worker_pids(self, *, include_spares: bool = False) -> list[int]:
        with self._cond:
            spares = self._spare_pool if include_spares else ()
            return sorted(w.pid for w in (*self._workers, *spares))

    def worker_info(self) -> list[dict[str, Any]]:
        """What each worker reported at start (network isolation, limits, privileges)."""
        with self._cond:
            return [dict(w.info) for w in self._workers]

    @property
    def template_pid(self) -> int | None:
        """The pid of the template process that forks the workers (None when spawning)."""
        return self._fork_server.pid if self._fork_server is not None else None

    @property
    def template_restarts(self) -> int:
        """Template processes started after the first one died."""
        return self._fork_server.restarts if self._fork_server is not None else 0

    @property
    def parent_compiles(self) -> int:
        """Scripts compiled by the pool itself to ship to fresh workers (one per source)."""
        return self._code_cache.compiles

    @property
    def idle_count(self) -> int:
        with self._cond:
            return len(self._idle)

    def stats(self) -> PoolStats:
        """Sizes and wait counters, read together (for a metrics scrape; changes nothing)."""
        with self._cond:
            return PoolStats(
                size=self.size,
                alive=len(self._workers),
                idle=len(self._idle),
                busy=self._busy,
                spares=len(self._spare_pool),
                waiting=self._waiting,
                waits=self._waits,
                wait_timeouts=self._wait_timeouts,
                replacements=self.replacements,
                evictions=self.evictions,
            )

    def wait_full(self, timeout: float = 10.0) -> bool:
        """Block until ``size`` workers are alive (after kills/replacements)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._workers) < self.size or self._wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._cond.wait(remaining)
            return True

    # -- running ----------------------------------------------------------------------------

    def run(self, invocation: Invocation) -> InvocationResult:
        """Run one invocation in an idle worker of its ``isolation_key`` (or a fresh one);
        never raises for script failures (they are in the result), raises
        :class:`PoolClosed`/:class:`WorkerStartError` for the pool's own and ``TypeError``
        for arguments that are not JSON-compatible."""
        for _attempt in range(3):
            worker = self._acquire(invocation.isolation_key)
            conversation = Conversation(self.spec_payload, self.compiled_code, worker, invocation)
            healthy = False
            try:
                result = conversation.run()
                healthy = conversation.worker_healthy
                if result.ok and conversation.compiled_in_worker:
                    inv = invocation
                    self._code_cache.learn(inv.source, inv.source_hash, inv.filename)
                return result
            except LateFrame:
                continue  # a late frame of the worker's previous call: try another worker
            except ChannelClosed:
                if conversation.dispatched:
                    raise
                continue  # the worker died before it got the call: try another
            finally:
                self._release(worker, healthy)
        return InvocationResult(
            ok=False,
            error=ErrorInfo("script_error", "no worker could take the invocation"),
        )

    def compiled_code(self, invocation: Invocation, worker: WorkerProcess) -> str | None:
        """Byte code for ``worker`` of the invocation's script, if the pool compiled it and
        the worker's interpreter reads this one's byte code (:mod:`sandbox.code_cache`)."""
        if worker.info.get("bytecode") != BYTECODE_MAGIC:
            return None
        return self._code_cache.get(invocation.source_hash, invocation.filename)

    def spec_payload(self, spec: Any) -> tuple[dict[str, Any], str]:
        """The JSON form of a world spec and its hash, computed once per spec object."""
        cached = self._spec_cache.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1], cached[2]
        if isinstance(spec, dict):
            data = spec
        elif hasattr(spec, "to_dict"):
            data = spec.to_dict()
        elif hasattr(spec, "as_dict"):
            data = spec.as_dict()
        else:
            import dataclasses

            data = dataclasses.asdict(spec)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        digest = "spec:" + hashlib.sha256(text.encode()).hexdigest()
        if len(self._spec_cache) > 256:
            self._spec_cache.clear()
        self._spec_cache[id(spec)] = (spec, data, digest)
        return data, digest

    def _acquire(self, key: Hashable) -> WorkerProcess:
        """An idle worker for ``key``: the most recently used one already bound to it, else a
        fresh one (bound to it now), else the least recently used idle worker of another key
        is evicted (killed) and a fresh one — a warm spare, or the supervisor's replacement
        — is awaited. A worker is never handed code of a key other than its own."""
        deadline = (
            None if self.acquire_timeout_s is None else time.monotonic() + self.acquire_timeout_s
        )
        evicted: list[WorkerProcess] = []
        waited = False
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise PoolClosed("the sandbox pool is closed")
                    worker = self._idle_for_locked(key)
                    if worker is not None:
                        # one poll/waitpid syscall: workers die together when their
                        # template does, more than run()'s retries could skip
                        if worker.alive():
                            self._busy += 1
                            return worker
                        evicted.append(worker)
                        self._discard_locked(worker)
                        continue
                    # evict only when every slot is filled: a replacement the supervisor
                    # is starting (no longer counted in _wanted) is waited for, so that a
                    # key within the pool size never loses its warm worker to a race
                    if self._idle and len(self._workers) >= self.size:
                        victim = self._idle.popleft()  # least recently used
                        evicted.append(victim)
                        self.evictions += 1
                        self._discard_locked(victim)
                        continue
                    if not self._workers and self._spawn_failures >= 3:
                        raise WorkerStartError(
                            f"sandbox workers cannot start: {self._last_spawn_error!r}"
                        )
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        self._wait_timeouts += 1
                        raise TimeoutError("no idle sandbox worker")
                    if not waited:
                        waited = True
                        self._waits += 1
                    self._waiting += 1
                    try:
                        self._cond.wait(remaining)
                    finally:
                        self._waiting -= 1
        finally:
            for victim in evicted:
                victim.discard()  # outside the lock; nobody needs its exit status

    def _idle_for_locked(self, key: Hashable) -> WorkerProcess | None:
        """Take the most recently used idle worker bound to ``key``, else a fresh one."""
        fresh: WorkerProcess | None = None
        for worker in reversed(self._idle):
            if worker.bound and worker.key == key:
                self._idle.remove(worker)
                return worker
            if not worker.bound and fresh is None:
                fresh = worker
        if fresh is not None:
            self._idle.remove(fresh)
            fresh.bind(key)
        return fresh

    def _release(self, worker: WorkerProcess, healthy: bool) -> None:
        worker.calls += 1
        if self.recycle_after is not None and worker.calls >= self.recycle_after:
            healthy = False
        if not healthy:
            worker.discard()  # SIGKILL (+ reap when spawned): cheap, and outside the lock
        with self._cond:
            self._busy -= 1
            if healthy and not self._closed and worker in self._workers:
                self._idle.append(worker)
                # all: the supervisor waits on this condition too, and a single notify it
                # took would leave a caller waiting for a worker that is idle
                self._cond.notify_all()
            else:
                healthy = False
                self._discard_locked(worker)
                self._cond.notify_all()
        if not healthy:
            worker.kill()  # closed while it was busy

    def _discard_locked(self, worker: WorkerProcess) -> None:
        """Drop a dead worker; promote a warm spare at once if there is one, so that the
        pool is back to full size without waiting for an interpreter to start."""
        if worker in self._workers:
            self._workers.discard(worker)
            if self._closed:
                return
            if self._spare_pool:
                spare = self._spare_pool.popleft()
                self._workers.add(spare)
                self._idle.append(spare)
                self._wanted_spares += 1
            else:
                self._wanted += 1
            self._cond.notify_all()

    # -- supervisor -------------------------------------------------------------------------

    def _spawn(self, count: int) -> list[WorkerProcess]:
        """Start ``count`` workers at once and wait for their hellos."""
        pending: list[WorkerProcess] = []
        for _ in range(count):
            try:
                pending.append(self._start_worker())
            except OSError as exc:
                self._last_spawn_error = exc
        deadline = time.monotonic() + self.start_timeout_s
        ready: list[WorkerProcess] = []
        for worker in pending:
            try:
                worker.wait_hello(deadline)
                ready.append(worker)
            except ChannelError as exc:
                status = worker.kill()
                self._last_spawn_error = RuntimeError(f"worker failed to start ({exc}, {status})")
        with self._cond:
            if ready:
                self._spawn_failures = 0
            elif count:
                self._spawn_failures += 1
        return ready

    def _start_fork_server(self) -> None:
        reason = unavailable_reason()
        if reason is None:
            kwargs = self._worker_kwargs
            server = ForkServer(
                kwargs["config"],
                python=kwargs["python"],
                env=WORKER_ENV,
                stderr=kwargs["stderr"],
                start_timeout_s=self.start_timeout_s,
            )
            try:
                server.start()
                self._fork_server, self.start_method = server, "fork-server"
                return
            except ForkServerUnavailable as exc:
                reason = str(exc)
        self._fall_back(reason)

    def _fall_back(self, reason: str) -> None:
        self.fork_server_unavailable = reason
        self.start_method = "spawn"
        logger.warning("sandbox workers are spawned, not forked: %s", reason)

    def _start_worker(self) -> WorkerProcess:
        """A new worker, forked by the template (restarted if it died) or spawned."""
        server = self._fork_server
        if server is not None:
            try:
                return WorkerProcess.fork(
                    server,
                    max_frame_bytes=self._worker_kwargs["max_frame_bytes"],
                    timeout=self.start_timeout_s,
                )
            except ForkServerUnavailable as exc:
                if self._closed:
                    raise OSError("the sandbox pool is closed") from None
                # not even a restarted template answers: spawn from now on
                self._fork_server = None
                server.close()
                self._fall_back(str(exc))
        return WorkerProcess.spawn(**self._worker_kwargs)

    def _supervise(self) -> None:
        """Keep the pool at ``size``: spawn replacements for discarded workers."""
        while True:
            with self._cond:
                while not self._closed and not self._wanted and not self._wanted_spares:
                    self._cond.wait()
                if self._closed:
                    return
                count, self._wanted = self._wanted, 0
                spares, self._wanted_spares = self._wanted_spares, 0
                failures = self._spawn_failures
            if failures:
                time.sleep(min(2.0, 0.1 * 2**failures))
            started = self._spawn(count + spares)
            closing: list[WorkerProcess] = []
            with self._cond:
                if self._closed:
                    closing = started
                else:
                    serving, extra = started[:count], started[count:]
                    self._workers.update(serving)
                    self._idle.extend(serving)
                    self._spare_pool.extend(extra)
                    missing = count + spares - len(started)
                    self._wanted += max(0, count - len(serving))
                    self._wanted_spares += missing - max(0, count - len(serving))
                    self.replacements += len(serving)
                self._cond.notify_all()
            for worker in closing:
                worker.kill("pool closed")


__all__ = [
    "PoolClosed",
    "PoolStats",
    "SandboxPool",
    "WorkerProcess",
    "WorkerStartError",
    "died_error",
]
