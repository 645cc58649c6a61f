"""``python without_landlock.py PROGRAM ARGS...``: run PROGRAM where ``landlock_*`` syscalls
answer ENOSYS, as on a kernel built without Landlock (a seccomp filter inherited by PROGRAM
and everything it starts). Lets the tests see a host refuse to start for a missing layer."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

from sandbox.seccomp_filter import (
    PR_SET_NO_NEW_PRIVS,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    machine_table,
)


def _without_landlock() -> None:
    table = machine_table()
    code = [
        (0x20, 0, 0, 4),  # ld arch
        (0x15, 0, 5, table.audit_arch),  # not this arch: allow (the sandbox kills it anyway)
        (0x20, 0, 0, 0),  # ld nr
        (0x15, 2, 0, 444),  # landlock_create_ruleset
        (0x15, 1, 0, 445),  # landlock_add_rule
        (0x15, 0, 1, 446),  # landlock_restrict_self
        (0x06, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        (0x06, 0, 0, SECCOMP_RET_ALLOW),
    ]
    program = b"".join(struct.pack("=HBBI", *insn) for insn in code)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("=HxxxxxxQ", len(code), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, ctypes.get_errno()  # SECCOMP


if __name__ == "__main__":
    _without_landlock()
    os.execv(sys.argv[1], sys.argv[1:])
