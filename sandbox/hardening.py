"""Start-up hardening of a worker process: what it can reach and consume before any script runs.

In this order: the environment cut down to ``PATH``/``LANG``/``LC_ALL``, ``umask 077``,
cwd ``/``; ``unshare(CLONE_NEWNET)`` when permitted (root on Linux) so the only interface is a down
loopback; ``RLIMIT_CORE=0``, ``RLIMIT_FSIZE=0``, ``RLIMIT_NPROC=0``, ``RLIMIT_NOFILE`` small;
``RLIMIT_AS`` hard = baseline + largest memory limit + headroom; privileges dropped to
``nobody`` when started as root; a worker forked by the template (``parent_pid`` in its
config) inherits the template's network namespace instead of creating one, and is set to
die with the template. Every step is best effort; the worker reports in its hello
message whether the network was isolated, memory limited and privileges dropped.

The per-invocation limits (soft ``RLIMIT_AS``/``RLIMIT_CPU``, recursion) are set by
:mod:`sandbox.worker` around each call, below these hard ceilings.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.limits import MIB

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
#: address space reserved above the largest memory limit for the worker's own bookkeeping
HEADROOM_BYTES = 64 * MIB


@dataclass(frozen=True)
class Hardening:
    """What :func:`harden` achieved."""

    network_isolated: bool
    memory_limited: bool
    privileges_dropped: bool
    #: address-space size after start-up, in bytes (0 when /proc is not available)
    baseline_vm: int
    #: the hard ``RLIMIT_AS`` set (``RLIM_INFINITY`` when none could be)
    as_hard: int


def vm_size() -> int:
    """Current address-space size in bytes (VmSize), 0 when /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except OSError:
        return 0


def isolate_network() -> bool:
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


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the forking template dies, so no worker outlives its parent as an
    orphan nobody reaps. Set after the credential change, which clears it; exits at once
    when the parent is already gone (the race ``getppid`` closes)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


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


def harden(config: Mapping[str, Any]) -> Hardening:
    """Harden this process as ``config`` asks (``isolate_network``, ``max_memory_mb``,
    ``drop_privileges``)."""
    for name in list(os.environ):
        if name not in ("PATH", "LANG", "LC_ALL"):
            del os.environ[name]
    os.umask(0o077)
    with contextlib.suppress(OSError):
        os.chdir("/")
    if config.get("network_namespace_inherited"):
        network_isolated = True  # a forked worker: the template unshared it once for all
    elif config.get("isolate_network", True):
        network_isolated = isolate_network()
    else:
        network_isolated = False
    _set_limit(resource.RLIMIT_CORE, 0, 0)
    _set_limit(resource.RLIMIT_FSIZE, 0, 0)
    _set_limit(resource.RLIMIT_NOFILE, 64, 64)
    if hasattr(resource, "RLIMIT_NPROC"):
        _set_limit(resource.RLIMIT_NPROC, 0, 0)
    baseline_vm = vm_size()
    as_hard = resource.RLIM_INFINITY
    max_memory = int(config.get("max_memory_mb", 256)) * MIB
    if baseline_vm:
        as_hard = baseline_vm + max_memory + HEADROOM_BYTES
        memory_limited = _set_limit(resource.RLIMIT_AS, as_hard, as_hard)
    else:
        memory_limited = False
    privileges_dropped = _drop_privileges() if config.get("drop_privileges", True) else False
    parent = config.get("parent_pid")
    if parent is not None:
        _die_with_parent(int(parent))
    return Hardening(network_isolated, memory_limited, privileges_dropped, baseline_vm, as_hard)
