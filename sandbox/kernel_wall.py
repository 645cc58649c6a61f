"""The kernel wall below RestrictedPython: what a worker confines itself with once warm.

RestrictedPython is the first wall; this one holds if it is breached, i.e. against plain,
unrestricted Python running in a worker. :func:`confine` is called once, at the end of the
worker's start-up (after :func:`sandbox.hardening.harden` and the preload), and applies:

1. ``PR_SET_NO_NEW_PRIVS`` (required by both kernel layers);
2. **Landlock** where the kernel has it (:mod:`sandbox.landlock`): read-only access to the
   interpreter's standard library and the third-party packages already imported, nothing
   else — not the database, the key file, the project tree, ``/etc`` or ``/proc``; no
   writes anywhere; no TCP; signals and abstract Unix sockets scoped to the worker itself;
3. ``PR_SET_DUMPABLE=0``: the worker's ``/proc`` entries become root's, so another worker
   with the same uid cannot open its ``/proc/<pid>/mem`` even on a kernel without Landlock;
4. **seccomp-bpf** always (:mod:`sandbox.seccomp_filter`): no sockets, exec, fork, ptrace,
   cross-process memory access, or signals to anything but itself.

Together with the start-up hardening they make four named layers, reported in the worker's
hello and checked against a caller's requirements: ``seccomp``, ``landlock``, ``netns`` (the
empty network namespace) and ``uid`` (privileges dropped to ``nobody``). A layer that cannot
be applied is reported with the reason, never silently assumed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import landlock, seccomp_filter

#: the layer names a worker reports and a host may require
LAYERS = ("seccomp", "landlock", "netns", "uid")


@dataclass(frozen=True)
class KernelWall:
    """The layers in force in one worker, and why any is missing."""

    seccomp: bool
    #: the Landlock ABI version in force, 0 when Landlock is not applied
    landlock_abi: int
    network_isolated: bool
    privileges_dropped: bool
    uid: int
    #: one line per layer that is not in force, naming it and the reason
    missing: tuple[str, ...] = ()

    @property
    def layers(self) -> tuple[str, ...]:
        present = {
            "seccomp": self.seccomp,
            "landlock": self.landlock_abi > 0,
            "netns": self.network_isolated,
            "uid": self.privileges_dropped,
        }
        return tuple(name for name in LAYERS if present[name])

    def as_dict(self) -> dict[str, Any]:
        """The JSON form sent in the worker's hello."""
        return {
            "layers": list(self.layers),
            "uid": self.uid,
            "landlock_abi": self.landlock_abi,
            "missing": list(self.missing),
        }


def interpreter_read_paths(modules: Iterable[Any] | None = None) -> list[str]:
    """What the interpreter may still read once confined: the standard library (lazy
    imports such as ``_strptime``, ``encodings.*``) and the directories of third-party
    packages already imported from a ``site-packages`` folder. The project's own packages
    are imported before confinement and are deliberately not readable afterwards."""
    paths = {os.path.dirname(os.__file__)}  # lib/python3.X, lib-dynload beneath it
    for module in list(sys.modules.values()) if modules is None else modules:
        filename = getattr(module, "__file__", None)
        if not filename:
            continue
        parts = Path(filename).resolve().parts
        for index, part in enumerate(parts[:-1]):
            if part in ("site-packages", "dist-packages"):
                paths.add(str(Path(*parts[: index + 2])))
                break
    return sorted(paths)


def _set_undumpable() -> None:
    ctypes.CDLL(None).prctl(seccomp_filter.PR_SET_DUMPABLE, 0, 0, 0, 0)


def confine(
    *,
    network_isolated: bool,
    privileges_dropped: bool,
    read_paths: Iterable[str] | None = None,
) -> KernelWall:
    """Confine this (single-threaded) process for good and report what is in force.

    ``network_isolated`` and ``privileges_dropped`` are what start-up hardening achieved;
    ``read_paths`` defaults to :func:`interpreter_read_paths`. Never raises for a layer the
    kernel refuses: the report names it instead."""
    missing: list[str] = []
    if not network_isolated:
        missing.append("netns: the worker could not enter a new network namespace")
    if not privileges_dropped:
        missing.append(f"uid: privileges were not dropped (the worker runs as uid {os.getuid()})")
    try:
        table: seccomp_filter.SyscallTable | None = seccomp_filter.machine_table()
    except seccomp_filter.UnsupportedArchitecture as exc:
        table = None
        missing.append(f"seccomp: {exc}")
    try:
        seccomp_filter.set_no_new_privs()
    except OSError as exc:
        table = None
        missing.append(f"seccomp: {exc.strerror}")

    abi = landlock.abi_version()
    if abi == 0:
        missing.append("landlock: the kernel has no Landlock (or it is disabled)")
    else:
        try:
            landlock.restrict_to_reading(
                interpreter_read_paths() if read_paths is None else read_paths, abi
            )
        except OSError as exc:
            abi = 0
            missing.append(f"landlock: {exc.strerror}")

    _set_undumpable()
    seccomp = False
    if table is not None:
        try:
            seccomp_filter.install(os.getpid(), table)
            seccomp = True
        except OSError as exc:
            missing.append(f"seccomp: {exc.strerror}")
    return KernelWall(
        seccomp=seccomp,
        landlock_abi=abi,
        network_isolated=network_isolated,
        privileges_dropped=privileges_dropped,
        uid=os.getuid(),
        missing=tuple(missing),
    )
