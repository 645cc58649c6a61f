"""The template process: a pre-warmed, single-threaded interpreter that forks workers on demand.

Started once per pool by :class:`sandbox.fork_server.ForkServer` with ``subprocess``
(fork+exec from the threaded host, the minimal :data:`~sandbox.worker_process.WORKER_ENV`,
stdin/stdout on ``/dev/null``), it

1. imports everything a script can reach (:func:`sandbox.worker.preload_engine`: the
   allow-listed modules and their whole lazy-import closure, the codecs, RestrictedPython)
   and the configured executor, so that no worker ever imports anything;
2. hardens what all its workers share: ``umask 077``, cwd ``/``, no core dumps, and **one**
   empty network namespace (``unshare(CLONE_NEWNET)`` once, inherited by every child);
3. ``gc.freeze()``: everything loaded so far moves to the permanent generation, so a child's
   collector never walks — and never dirties — the pages it shares with the template;
4. loops on its control socket (a ``SOCK_SEQPACKET`` socketpair whose other end only the
   pool holds): ``fork`` → ``os.fork()``; the child runs :func:`sandbox.worker.start` on two
   fresh pipes (it closes every other descriptor, including this socket, drops to
   ``nobody``, applies its rlimits and dies with the template), the template sends the
   parent ends of the pipes and a pidfd of the child to the pool (``SCM_RIGHTS``) and
   closes its copies; ``status`` → the exit status of a child it reaped.

The template never runs script code and stays single-threaded (``fork`` of a threaded
process is unsafe). It keeps the host's credentials (root in production) on purpose:
a child that dropped to ``nobody`` cannot signal, ptrace or write to a root process, so an
escaped worker cannot take over the template to forge workers of other tenants; if the
template dropped to ``nobody`` itself, every worker would share its uid and could. It is
never confined by seccomp against ``fork`` (children confine themselves in ``start``).

Zombies: the template is every worker's parent, so it reaps them: SIGCHLD wakes the loop
(``signal.set_wakeup_fd``) and a ``waitpid(-1, WNOHANG)`` loop collects exit statuses,
kept (bounded) until the pool asks for one. Reaping happens only in the loop, never in a
signal handler, so a child's pid cannot be reaped and reused between ``fork`` and
``pidfd_open``: the pool's pidfd always names the right process.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
from collections import OrderedDict
from typing import Any

from sandbox.hardening import isolate_network
from sandbox.worker import EXIT_PROTOCOL, preload_engine, start

#: exit statuses kept for the pool to ask about (a pool asks right after a worker's exit)
MAX_KEPT_STATUSES = 4096
#: largest control message (requests are tiny JSON objects)
MAX_MESSAGE_BYTES = 4096


#: the engine's own warm-up script (trusted, built in): every facade module imported, a
#: record built, a function called, so the engine's code paths run before the fork
WARM_UP_SCRIPT = """
import json, re, datetime, time, math, hashlib, hmac, base64, uuid, decimal, random
import string, itertools, functools, collections
import urllib.parse

def warm_up(payload):
    data = json.loads(json.dumps({"items": [payload["name"]] * 3}))
    text = ",".join(item.upper() for item in data["items"])
    digest = hmac.new(b"key", text.encode(), hashlib.sha256).hexdigest()
    stamp = datetime.datetime(2020, 1, 1).isoformat()
    query = urllib.parse.urlencode({"q": text})
    found = re.findall(r"[A-Z]+", text)
    counts = collections.Counter(found).most_common(1)
    return {"digest": digest[:8], "stamp": stamp, "query": query, "counts": counts}
"""


def warm_up(rounds: int = 10) -> None:
    """Run the built-in :data:`WARM_UP_SCRIPT` once through the real engine (compile,
    world, guards, facades, result conversion), in-process and before ``gc.freeze()``.

    A forked worker inherits whatever the template already did: code paths the template ran
    are specialised by the interpreter and lazy caches are filled once here instead of in
    every child's first call (each child would otherwise redo them and copy the pages they
    touch). The script is the engine's own, never a module's, and no caller's data is
    involved, so every child inherits the same state. A child runs it once more before
    it says hello — off the critical path of the call that will take it — so that the
    pages a call writes to (reference counts, allocator arenas) are already its own."""
    global _warm_up_world
    if _warm_up_world is None:
        from sandbox.compiler import compile_script
        from sandbox.world import WorldSpec

        _warm_up_world = (
            compile_script(WARM_UP_SCRIPT, "warm_up.py"),
            WorldSpec(enums={"Status": {"Sent": "Sent"}}, record_types={"Stats": {"total": 0}}),
        )
    from sandbox.capabilities import InMemoryCapabilities
    from sandbox.execution import execute

    compiled, spec = _warm_up_world
    for _ in range(rounds):  # 10: past the interpreter's specialisation warm-up counters
        execute(compiled, "warm_up", [{"name": "warm"}], {}, InMemoryCapabilities(), spec)


#: the warm-up script compiled once, in the template (children inherit it)
_warm_up_world: tuple[Any, Any] | None = None


class Template:
    """The template's state: its control socket, its children and their exit statuses."""

    def __init__(self, control: socket.socket, config: dict[str, Any]):
        self.control = control
        self.config = config
        self.children: set[int] = set()
        self.statuses: OrderedDict[int, int] = OrderedDict()
        self.network_isolated = False

    # -- start-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Preload, harden what is shared, freeze: everything a child inherits warm."""
        preload_engine()
        sys.path[:0] = [str(p) for p in self.config.get("executor_path", ())]
        executor = str(self.config.get("executor", "sandbox.execution:execute"))
        importlib.import_module(executor.partition(":")[0])
        for name in list(os.environ):
            if name not in ("PATH", "LANG", "LC_ALL"):
                del os.environ[name]
        os.umask(0o077)
        with contextlib.suppress(OSError):
            os.chdir("/")
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.config.get("isolate_network", True):
            self.network_isolated = isolate_network()
        warm_up()
        gc.collect()
        gc.freeze()
        gc.disable()

    def child_config(self) -> dict[str, Any]:
        """What a forked worker's :func:`~sandbox.worker.start` is told: the network
        namespace is the template's (not one more per worker), and it dies with us."""
        return {
            **self.config,
            "isolate_network": False,
            "network_namespace_inherited": self.network_isolated,
            "parent_pid": os.getpid(),
        }

    # -- serving -------------------------------------------------------------------------

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        child_config = self.child_config()
        while True:
            for fd, _events in poller.poll():
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    self.reap()
                    continue
                data = self.control.recv(MAX_MESSAGE_BYTES)
                if not data:
                    return  # the pool is gone
                request = json.loads(data)
                if request.get("op") == "fork":
                    self.fork(child_config, keep_out={wake_r, wake_w})
                elif request.get("op") == "status":
                    self.send({"op": "status", "status": self.status(int(request["pid"]))})
                else:
                    return

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        payload = [json.dumps(message).encode()]
        if fds:
            socket.send_fds(self.control, payload, fds)
        else:
            self.control.sendmsg(payload)

    def fork(self, child_config: dict[str, Any], keep_out: set[int]) -> None:
        """Fork one worker and hand its pipes and pidfd to the pool; a failure to fork
        (EAGAIN, ENOMEM) is answered, not fatal: the template and its workers carry on."""
        opened: list[int] = []
        try:
            opened.extend(os.pipe())
            opened.extend(os.pipe())
            pid = os.fork()
        except OSError as exc:
            for fd in opened:
                os.close(fd)
            self.send({"op": "error", "message": f"fork failed: {exc}"})
            return
        to_worker_r, to_worker_w, from_worker_r, from_worker_w = opened
        if pid == 0:  # the child: never returns
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (to_worker_w, from_worker_r, *keep_out):
                    os.close(fd)
                warm_up(rounds=1)  # this child's own copies of what a call touches
                start(to_worker_r, from_worker_w, child_config)
            finally:
                os._exit(EXIT_PROTOCOL)
        self.children.add(pid)
        self.statuses.pop(pid, None)  # a reused pid: its old status is not this child's
        os.close(to_worker_r)
        os.close(from_worker_w)
        pidfd = os.pidfd_open(pid)  # before any reaping: this pid is still our child
        try:
            self.send({"op": "forked", "pid": pid}, [to_worker_w, from_worker_r, pidfd])
        finally:
            for fd in (to_worker_w, from_worker_r, pidfd):
                os.close(fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.record(pid, status)

    def record(self, pid: int, status: int) -> None:
        self.children.discard(pid)
        self.statuses[pid] = os.waitstatus_to_exitcode(status)
        while len(self.statuses) > MAX_KEPT_STATUSES:
            self.statuses.popitem(last=False)

    def status(self, pid: int) -> int | None:
        """The exit status of child ``pid`` (the pool asks only once it saw it exit)."""
        if pid in self.children:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                self.record(pid, status)
        return self.statuses.pop(pid, None)


def main(config_json: str, control_fd: int) -> None:
    """Entry point of the template (see :mod:`sandbox.fork_server`)."""
    control = socket.socket(fileno=control_fd)
    template = Template(control, json.loads(config_json))
    template.prepare()
    template.send(
        {"op": "ready", "pid": os.getpid(), "network_isolated": template.network_isolated}
    )
    with contextlib.suppress(OSError):
        template.serve()
    os._exit(0)
