"""The pool's handle of the template process, and of the workers it forks.

:class:`ForkServer` starts the template (:mod:`sandbox.template_process`) with
``subprocess`` — fork+exec, safe from the threaded host, the minimal environment — and
speaks JSON to it over a ``SOCK_SEQPACKET`` socketpair: ``fork`` answers with the pid of a
new worker and, as ``SCM_RIGHTS``, the parent ends of its two pipes and a pidfd of it.
The pool is not the workers' parent, so it supervises them through that pidfd
(:class:`ForkedProcess`: ``poll`` on it for the exit, ``pidfd_send_signal`` to kill) and
asks the template, which reaps them, for exit statuses. A pidfd names one process for good,
so a kill can never hit a recycled pid.

If the template dies, its workers die with it (``PR_SET_PDEATHSIG``) and the next
:meth:`ForkServer.fork` starts a new template. Where fork-serving is impossible (not
Linux, no pidfds, the template cannot start) :func:`unavailable_reason` /
:class:`ForkServerUnavailable` say why and the pool spawns interpreters instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sandbox.template_process import main; main(sys.argv[2], int(sys.argv[3]))"
)
#: the exit status reported when nobody can know it any more (the template that reaped the
#: worker is gone); :func:`sandbox.conversation.died_error` names it "exited unexpectedly"
UNKNOWN_STATUS = 255
#: largest control message from the template
MAX_MESSAGE_BYTES = 4096


class ForkServerUnavailable(RuntimeError):
    """The template process cannot be started or spoken to."""


def unavailable_reason() -> str | None:
    """Why this platform cannot fork-serve workers, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"fork-serving needs Linux (this is {sys.platform})"
    for module, name in ((os, "pidfd_open"), (signal, "pidfd_send_signal"), (socket, "send_fds")):
        if not hasattr(module, name):
            return f"this Python has no {module.__name__}.{name}"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as exc:
        return f"the kernel refuses pidfd_open ({exc})"
    return None


class ForkedProcess:
    """A worker forked by the template, seen through its pidfd (``Popen``'s surface).

    Thread-safe: the pool's close may kill a worker while its invocation's thread discards
    it, so the pidfd is only used and closed under a lock (a closed descriptor's number
    could otherwise be reused and polled or signalled by mistake)."""

    #: longest single wait on the pidfd while holding the lock
    _SLICE_S = 0.05

    def __init__(self, pid: int, pidfd: int, server: ForkServer, generation: int):
        self.pid = pid
        self._pidfd: int | None = pidfd
        self._server = server
        self._generation = generation
        self._lock = threading.Lock()
        self.returncode: int | None = None

    def _exited(self, timeout: float | None) -> bool:
        """Whether the process has exited, waiting up to ``timeout`` (None: for good)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._pidfd is None:
                    return True
                remaining = self._SLICE_S if deadline is None else deadline - time.monotonic()
                poller = select.poll()
                poller.register(self._pidfd, select.POLLIN)
                wait_ms = max(0, int(min(self._SLICE_S, remaining) * 1000))
                if poller.poll(wait_ms):
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def exited(self) -> bool:
        """Whether the process has exited (one ``poll`` syscall, no question to the template)."""
        return self.returncode is not None or self._exited(0)

    def poll(self) -> int | None:
        """The exit status once the process has exited, else None (one ``poll`` syscall)."""
        if self.returncode is None and self._exited(0):
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._exited(timeout):
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
            self._collect()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with self._lock:
            if self._pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, sig)

    def _collect(self) -> None:
        with self._lock:
            if self._pidfd is None:
                return  # released meanwhile: its status is not wanted
        status = self._server.exit_status(self.pid, self._generation)
        with self._lock:
            if self.returncode is None:
                self.returncode = status
            self._close_locked()

    def release(self) -> None:
        """Forget a process that was killed without waiting (the template reaps it)."""
        with self._lock:
            self._close_locked()
            if self.returncode is None:
                self.returncode = -signal.SIGKILL

    def _close_locked(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class ForkServer:
    """The template process of one pool: started on demand, restarted when it died.

    Thread-safe: one request at a time on the control socket (a fork takes about a
    millisecond); ``restarts`` counts the templates started after the first."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        python: str,
        env: dict[str, str],
        stderr: int | None,
        start_timeout_s: float,
    ):
        self._config = config
        self._python = python
        self._env = env
        self._stderr = stderr
        self._start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._generation = 0
        self._closed = False
        self.restarts = 0
        #: what the template reported when it was ready (pid, network isolation)
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the template (if not running) and wait until it is warm."""
        with self._lock:
            if self._control is None:
                self._start_locked()

    def _start_locked(self) -> None:
        if self._closed:
            raise ForkServerUnavailable("the fork server is closed")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [
                    self._python,
                    "-I",
                    "-B",
                    "-c",
                    _BOOT,
                    _ROOT,
                    json.dumps(self._config),
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=dict(self._env),
                pass_fds=(theirs.fileno(),),
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            raise ForkServerUnavailable(f"the template process cannot start: {exc}") from None
        finally:
            theirs.close()
        self._proc, self._control = proc, ours
        self._generation += 1
        try:
            ready, _ = self._receive_locked(self._start_timeout_s)
        except ForkServerUnavailable:
            self._stop_locked()
            raise
        if ready.get("op") != "ready":
            self._stop_locked()
            raise ForkServerUnavailable("the template process did not say ready")
        self.info = ready
        self.restarts = self._generation - 1

    def fork(self, timeout: float) -> tuple[ForkedProcess, int, int]:
        """A new worker: its process handle, the pipe to write to it and to read from it.
        Starts a new template first when the current one is gone."""
        with self._lock:
            for attempt in (1, 2):
                if self._control is None:
                    self._start_locked()
                try:
                    self._request_locked({"op": "fork"})
                    reply, fds = self._receive_locked(timeout, expect_fds=3)
                except ForkServerUnavailable:
                    self._stop_locked()
                    if attempt == 2:
                        raise
                    continue
                if reply.get("op") == "error" and not fds:
                    # the template is fine, the system is not (EAGAIN, ENOMEM): try later
                    raise OSError(str(reply.get("message", "the template could not fork")))
                if reply.get("op") != "forked" or len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    self._stop_locked()
                    raise ForkServerUnavailable("the template answered a fork with nonsense")
                write_fd, read_fd, pidfd = fds
                process = ForkedProcess(int(reply["pid"]), pidfd, self, self._generation)
                return process, write_fd, read_fd
        raise AssertionError("unreachable")

    def exit_status(self, pid: int, generation: int) -> int:
        """The exit status of a worker that has exited, from the template that reaped it."""
        with self._lock:
            if generation != self._generation or self._control is None:
                return UNKNOWN_STATUS
            try:
                self._request_locked({"op": "status", "pid": pid})
                reply, _ = self._receive_locked(self._start_timeout_s)
            except ForkServerUnavailable:
                self._stop_locked()
                return UNKNOWN_STATUS
        status = reply.get("status")
        return status if isinstance(status, int) else UNKNOWN_STATUS

    def close(self) -> None:
        """Stop the template (its workers die with it). Idempotent."""
        with self._lock:
            self._closed = True
            self._stop_locked()

    # -- the control socket ---------------------------------------------------------------

    def _request_locked(self, message: dict[str, Any]) -> None:
        assert self._control is not None
        try:
            self._control.sendall(json.dumps(message).encode())
        except OSError as exc:
            raise ForkServerUnavailable(f"the template process is gone ({exc})") from None

    def _receive_locked(
        self, timeout: float, expect_fds: int = 0
    ) -> tuple[dict[str, Any], list[int]]:
        assert self._control is not None
        deadline = time.monotonic() + timeout
        self._control.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data, fds, _flags, _addr = socket.recv_fds(
                self._control, MAX_MESSAGE_BYTES, max(1, expect_fds)
            )
        except (OSError, TimeoutError) as exc:
            raise ForkServerUnavailable(f"the template process does not answer ({exc})") from None
        if not data:
            for fd in fds:
                os.close(fd)
            raise ForkServerUnavailable("the template process is gone")
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            for fd in fds:
                os.close(fd)
            raise ForkServerUnavailable("the template process sent an unreadable message")
        return message, list(fds)

    def _stop_locked(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None
