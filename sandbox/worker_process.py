"""The parent's handle of one worker process: how it is started, spoken to, measured and killed.

A worker is started with ``subprocess`` (fork+exec, safe in the threaded host) as
``python -I -B -c <boot>`` with only :data:`WORKER_ENV` as its environment, so none of the
host's secrets reach it; it speaks the frame protocol of :mod:`sandbox.channel` on its
stdin/stdout and says hello once warm. :class:`~sandbox.pool.SandboxPool` decides when
workers are started, handed out and replaced; this module only knows one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sandbox.channel import (
    ChannelError,
    FrameReader,
    ProtocolViolation,
    encode,
    write_frame,
)

_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sandbox.worker import main; main(sys.argv[2])"
)
#: the only environment a worker gets: no CRM_HOST_*, no tokens, no proxies
WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class WorkerProcess:
    """The parent's handle of one worker process."""

    def __init__(
        self,
        *,
        config: dict[str, Any],
        stderr: int | None,
        max_frame_bytes: int,
        python: str,
    ):
        self.proc = subprocess.Popen(
            [python, "-I", "-B", "-c", _BOOT, _ROOT, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(WORKER_ENV),
            bufsize=0,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.pid = self.proc.pid
        self.write_fd = self.proc.stdin.fileno()
        os.set_blocking(self.write_fd, False)
        self.reader = FrameReader(self.proc.stdout.fileno(), max_frame_bytes)
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
        """SIGKILL and reap; returns the exit status (negative signal number)."""
        if reason and self.kill_reason is None:
            self.kill_reason = reason
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        status = self.proc.wait()
        self._close_pipes()
        return status

    def stop(self, timeout: float = 1.0) -> None:
        """Ask politely, then kill."""
        if self.proc.poll() is None:
            with contextlib.suppress(ChannelError, OSError):
                self.send({"op": "exit"}, time.monotonic() + timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
