"""Test-only executor: runs *plain, unrestricted* Python in a real worker, to prove what the
kernel wall holds when RestrictedPython is assumed breached.

Only the test suite reaches it, by passing ``executor="unrestricted_executor:execute"`` and
this folder as ``executor_path`` to :class:`sandbox.pool.SandboxPool`; nothing in the host's
settings, manifests or environment can name an executor.

The invocation's first argument is the code, the second a dict of names it may use; the
code sets ``result``. An ``OSError`` comes back as ``{"error", "errno"}``. Everything the
code needs is imported here, before the worker confines itself (afterwards nothing outside
the standard library's folder can be read, and as ``nobody`` not even that where the
interpreter lives under a private home).

Run as a script (``python unrestricted_executor.py CODE NAMES_JSON``) it is the *control*:
the same code in an unconfined process with the worker's uid, printing the same JSON.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import sys
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
NOBODY = 65534


def syscall(number: int, *args: Any) -> int:
    """A raw syscall; failures raise ``OSError`` with the kernel's errno."""
    result = LIBC.syscall(ctypes.c_long(number), *args)
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return int(result)


def run_plain(code: str, names: dict[str, Any]) -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "os": os,
        "socket": socket,
        "signal": signal,
        "ctypes": ctypes,
        "fcntl": fcntl,
        "libc": LIBC,
        "syscall": syscall,
        **names,
    }
    try:
        exec(code, namespace)
    except OSError as exc:
        return {"error": type(exc).__name__, "errno": exc.errno}
    return {"value": namespace.get("result")}


def execute(
    compiled: Any, function: str, args: list[Any], kwargs: dict[str, Any], *_: Any
) -> dict[str, Any]:
    return run_plain(args[0], dict(args[1]))


def _control(code: str, names: dict[str, Any]) -> None:
    """Become the worker's uid (as hardening does, dumpable kept), then run ``code``."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        LIBC.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as sandbox.hardening leaves a worker
    # the target of process attacks: a child with the same uid, standing in for a neighbour
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: gone with the control
        if os.getppid() != parent:  # the control ended (an exec'd code exits at once)
            os._exit(0)  # before the death signal was armed: it would never come
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        signal.pause()
        os._exit(0)
    names["target"] = child
    try:
        print(json.dumps(run_plain(code, names)), flush=True)
    finally:
        os.kill(child, signal.SIGKILL)


if __name__ == "__main__":
    _control(sys.argv[1], json.loads(sys.argv[2]))
