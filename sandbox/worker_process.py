"""The parent's handle of one worker process: how it is started, spoken to, measured and killed.

A worker is either forked by the pool's template process (:meth:`WorkerProcess.fork`, see
:mod:`sandbox.fork_server`) or, where that is impossible, spawned with ``subprocess``
(:meth:`WorkerProcess.spawn`: fork+exec, safe in the threaded host) as
``python -I -B -c <boot>``; either way only :data:`WORKER_ENV` is its environment, so none
of the host's secrets reach it. It speaks the frame protocol of :mod:`sandbox.channel` on its
stdin/stdout and says hello once warm. :class:`~sandbox.pool.SandboxPool` decides when
workers are started, handed out and replaced; this module only knows one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from sandbox.channel import (
    ChannelError,
    FrameReader,
    ProtocolViolation,
    encode,
    write_frame,
)
from sandbox.fork_server import ForkedProcess, ForkServer

_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sandbox.worker import main; main(sys.argv[2])"
)
#: the only environment a worker gets: no CRM_HOST_*, no tokens, no proxies
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class Process(Protocol):
    """What the handle needs of a process: ``subprocess.Popen`` or a :class:`ForkedProcess`."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class WorkerProcess:
    """The parent's handle of one worker process."""

    def __init__(
        self,
        process: Process,
        write_fd: int,
        read_fd: int,
        *,
        max_frame_bytes: int,
    ):
        self.proc = process
        self.pid = process.pid
        self.write_fd = write_fd
        self._read_fd = read_fd
        os.set_blocking(self.write_fd, False)
        self.reader = FrameReader(read_fd, max_frame_bytes)
        self._close_lock = threading.Lock()
        self.known: set[str] = set()
        #: the isolation key of the code this worker runs (see :meth:`bind`)
        self.key: Any = None
        self.bound = False
        #: identity of the last invocation dispatched here (its late frames are recognised)
        self.last_token: str | None = None
        self.calls = 0
        self.cpu_total = 0.0
        self.info: dict[str, Any] = {}
        self.kill_reason: str | None = None
        self.started = time.monotonic()

    @classmethod
    def spawn(
        cls,
        *,
        config: dict[str, Any],
        stderr: int | None,
        max_frame_bytes: int,
        python: str,
    ) -> WorkerProcess:
        """A fresh interpreter (``subprocess``: fork+exec, minimal environment)."""
        proc = subprocess.Popen(
            [python, "-I", "-B", "-c", _BOOT, _ROOT, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(WORKER_ENV),
            bufsize=0,
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        # the handle owns the two descriptors from now on (closed in _close_pipes)
        write_fd, read_fd = os.dup(proc.stdin.fileno()), os.dup(proc.stdout.fileno())
        proc.stdin.close()
        proc.stdout.close()
        return cls(proc, write_fd, read_fd, max_frame_bytes=max_frame_bytes)

    @classmethod
    def fork(cls, server: ForkServer, *, max_frame_bytes: int, timeout: float) -> WorkerProcess:
        """A worker forked by the pool's template process (see :mod:`sandbox.fork_server`)."""
        process, write_fd, read_fd = server.fork(timeout)
        return cls(process, write_fd, read_fd, max_frame_bytes=max_frame_bytes)

    def bind(self, key: Any) -> None:
        """Dedicate this worker to one isolation key for the rest of its life."""
        assert not self.bound, "a worker is bound to one key only"
        self.key, self.bound = key, True

    def wait_hello(self, deadline: float) -> None:
        hello = self.reader.read(deadline)
        if hello.get("op") != "hello":
            raise ProtocolViolation("worker did not say hello")
        self.info = hello

    def send(self, message: dict[str, Any], deadline: float | None) -> None:
        write_frame(self.write_fd, encode(message), deadline)

    def alive(self) -> bool:
        """Still running (checked by the pool, under its lock, before it hands a worker out)."""
        if isinstance(self.proc, ForkedProcess):
            return not self.proc.exited()  # no exit-status round trip to the template
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the process so far (Linux /proc), None when unknown."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            return None

    def kill(self, reason: str | None = None) -> int:
        """SIGKILL and wait for the exit; returns the exit status (negative signal number)."""
        if reason and self.kill_reason is None:
            self.kill_reason = reason
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        status = self.proc.wait()
        self._close_pipes()
        return status

    def discard(self, reason: str | None = None) -> None:
        """SIGKILL without waiting for the exit status nobody needs (an evicted idle worker,
        one killed for a reason of the parent's own — timeout, protocol): a forked worker is
        reaped by its template, and after ``pidfd_send_signal`` it can never speak again
        (its pipes are closed here); a spawned one must be reaped here."""
        if not isinstance(self.proc, ForkedProcess):
            self.kill(reason)
            return
        if reason and self.kill_reason is None:
            self.kill_reason = reason
        self.proc.send_signal(signal.SIGKILL)
        self.proc.release()
        self._close_pipes()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask politely, then kill."""
        if self.proc.poll() is None:
            with contextlib.suppress(ChannelError, OSError):
                self.send({"op": "exit"}, time.monotonic() + timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def _close_pipes(self) -> None:
        with self._close_lock:  # kill() may race with the pool's close(): close once
            fds, self.write_fd, self._read_fd = (self.write_fd, self._read_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
