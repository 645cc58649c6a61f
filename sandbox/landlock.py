"""Landlock through ``ctypes``: after start-up a worker may only *read* the files the
interpreter still needs, and nothing else on the filesystem.

The ruleset handles every filesystem right the kernel's ABI knows (so writing, creating,
removing, renaming, truncating and device ioctls are refused everywhere), grants read on
the given paths only, and — where the ABI has them — refuses TCP bind/connect (ABI 4) and
scopes signals and abstract Unix sockets to the worker's own domain (ABI 6), so a worker
cannot signal or reach another worker even though all of them run as ``nobody``.

``/proc`` is deliberately *not* granted: a rule is bound to an inode and procfs makes new
inodes when its dentries are reclaimed, so the memory accounting instead keeps descriptors
to ``/proc/self/statm`` and ``/proc/self/clear_refs`` opened before confinement (Landlock
checks at ``open``, not at ``read``/``write``).

Landlock applies to the calling thread and its future children; the worker is single-threaded
when it confines itself. ``PR_SET_NO_NEW_PRIVS`` must already be set (see
:mod:`sandbox.seccomp_filter`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable

# syscall numbers, the same on x86_64 and aarch64 (and every architecture since 5.13)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
#: the filesystem rights an ABI version handles (ABI 1: bits 0-12; 2: REFER; 3: TRUNCATE;
#: 5: IOCTL_DEV)
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {errno.errorcode.get(error, error)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is absent or disabled."""
    try:
        result = _libc().syscall(
            ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION
        )
    except (OSError, AttributeError):
        return 0
    return max(0, int(result))


def handled_fs_rights(abi: int) -> int:
    return max(rights for version, rights in _FS_RIGHTS_BY_ABI.items() if version <= abi)


def restrict_to_reading(paths: Iterable[str], abi: int) -> None:
    """Confine this thread: read-only access beneath ``paths`` (those that exist), no other
    filesystem access, no TCP, signals and abstract sockets scoped to itself.
    Raises ``OSError`` when the kernel refuses."""
    libc = _libc()
    handled_fs = handled_fs_rights(abi)
    attr = _RulesetAttr(handled_fs, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = _check(
        libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), 0),
        "landlock_create_ruleset",
    )
    try:
        for path in paths:
            _allow_read(libc, ruleset, path)
        _check(libc.syscall(ctypes.c_long(_RESTRICT_SELF), ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow_read(libc: ctypes.CDLL, ruleset: int, path: str) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist needs no rule
    try:
        # READ_DIR on a regular file is EINVAL: files get READ_FILE only
        rights = ACCESS_FS_READ_FILE
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            rights |= ACCESS_FS_READ_DIR
        rule = _PathBeneathAttr(rights, fd)
        _check(
            libc.syscall(
                ctypes.c_long(_ADD_RULE), ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0
            ),
            f"landlock_add_rule {path}",
        )
    finally:
        os.close(fd)
