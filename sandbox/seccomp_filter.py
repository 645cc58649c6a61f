"""The worker's seccomp-bpf filter, assembled by hand and installed through ``ctypes``.

Why hand-built rather than ``pyseccomp``/libseccomp: the filter is ~90 classic-BPF
instructions over a fixed list of syscalls, so a library would add a C dependency (and a
package every fresh machine must install) for no expressive power we use; the whole policy
stays readable in this one file, and :func:`build_program` is testable without installing it.

The policy is a deny-list on top of "allow": a worker is already unprivileged, in an empty
network namespace and (where the kernel has it) under Landlock, so the filter removes the
syscalls that would let plain Python *leave* that box or touch another process —

* sockets (``socket``/``socketpair``/``connect``/``bind``) and ``io_uring`` (whose operations
  bypass seccomp);
* new programs and processes (``execve``/``execveat``, ``fork``/``vfork``, ``clone`` without
  ``CLONE_THREAD`` or with a namespace flag; ``clone3`` answers ``ENOSYS`` so glibc falls back
  to ``clone``, which is then checked);
* other processes' memory and signals (``ptrace``, ``process_vm_readv``/``writev``,
  ``pidfd_getfd``, ``pidfd_send_signal``, ``kill``/``tkill``/``tgkill``/``rt_*sigqueueinfo``
  except to the worker's own pid, ``F_SETOWN``/``FIOSETOWN`` whose SIGIO could be aimed at
  another pid, ``TIOCSTI`` keystroke injection into an inherited terminal);
* changing file modes, owners and extended attributes, which Landlock does not cover;
* re-opening what confinement closed (``prctl(PR_SET_DUMPABLE)``, ``PR_SET_PTRACER``) and
  kernel administration (namespaces, mounts, modules, keys, bpf, perf, userfaultfd, ...).

Denied calls fail with ``EPERM`` so Python raises a clean ``PermissionError``; a syscall of
another ABI (i386 ``int 0x80`` on x86_64, the x32 ABI) kills the process, since its numbers
mean different calls.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from collections.abc import Iterable
from dataclasses import dataclass

# classic BPF opcodes (linux/bpf_common.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_PTRACER = 0x59616D61

# offsets in struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];} (little-endian)
_NR, _ARCH = 0, 4


def _arg_low(index: int) -> int:
    return 16 + 8 * index


CLONE_THREAD = 0x00010000
#: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME: a thread must
#: not start in new namespaces either
CLONE_NAMESPACES = 0x7E020080
X32_SYSCALL_BIT = 0x40000000
F_SETOWN, F_SETOWN_EX = 8, 15
FIOSETOWN, SIOCSPGRP, TIOCSPGRP, TIOCSTI, TIOCLINUX = 0x8901, 0x8902, 0x5410, 0x5412, 0x541C


@dataclass(frozen=True)
class SyscallTable:
    """The numbers of one architecture's syscalls the filter names."""

    audit_arch: int
    numbers: dict[str, int]
    #: x86_64 also accepts x32 syscalls (nr | 0x40000000) under the same audit arch
    has_x32: bool = False
    seccomp_nr: int = 0


# 424.. are numbered alike on every architecture since Linux 5.1
COMMON = {
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount_setattr": 442,
    "fchmodat2": 452,
    "setxattrat": 463,
    "removexattrat": 466,
}


def _numbers(pairs: str) -> dict[str, int]:
    """``"name nr name nr ..."`` (as in the kernel's unistd headers) plus the common ones."""
    words = pairs.split()
    return {**COMMON, **{n: int(v) for n, v in zip(words[::2], words[1::2], strict=True)}}


TABLES: dict[str, SyscallTable] = {
    "x86_64": SyscallTable(
        audit_arch=0xC000003E,  # AUDIT_ARCH_X86_64
        has_x32=True,
        seccomp_nr=317,
        numbers=_numbers(
            """
            chmod 90 fchmod 91 chown 92 fchown 93 lchown 94 setxattr 188 lsetxattr 189
            fsetxattr 190 removexattr 197 lremovexattr 198 fremovexattr 199 fchownat 260
            fchmodat 268 ioctl 16 socket 41 connect 42 bind 49 socketpair 53 clone 56 fork 57
            vfork 58
            execve 59 kill 62 fcntl 72 ptrace 101 rt_sigqueueinfo 129 personality 135
            pivot_root 155 prctl 157 chroot 161 acct 163 mount 165 umount2 166 swapon 167
            swapoff 168 reboot 169 init_module 175 delete_module 176 quotactl 179 tkill 200
            tgkill 234 kexec_load 246 add_key 248 request_key 249 keyctl 250 unshare 272
            rt_tgsigqueueinfo 297 perf_event_open 298 name_to_handle_at 303
            open_by_handle_at 304 setns 308 process_vm_readv 310 process_vm_writev 311
            kcmp 312 finit_module 313 kexec_file_load 320 bpf 321 execveat 322
            userfaultfd 323
            """
        ),
    ),
    "aarch64": SyscallTable(
        audit_arch=0xC00000B7,  # AUDIT_ARCH_AARCH64 (no fork/vfork: glibc uses clone)
        seccomp_nr=277,
        numbers=_numbers(
            """
            setxattr 5 lsetxattr 6 fsetxattr 7 removexattr 14 lremovexattr 15
            fremovexattr 16 fchmod 52 fchmodat 53 fchownat 54 fchown 55 fcntl 25 ioctl 29
            umount2 39 mount 40 pivot_root 41 chroot 51 quotactl 60
            acct 89 personality 92 unshare 97 kexec_load 104 init_module 105
            delete_module 106 ptrace 117 kill 129 tkill 130 tgkill 131 rt_sigqueueinfo 138
            reboot 142 prctl 167 socket 198 socketpair 199 bind 200 connect 203 add_key 217
            request_key 218 keyctl 219 clone 220 execve 221 swapon 224 swapoff 225
            rt_tgsigqueueinfo 240 perf_event_open 241 name_to_handle_at 264
            open_by_handle_at 265 setns 268 process_vm_readv 270 process_vm_writev 271
            kcmp 272 finit_module 273 bpf 280 execveat 281 userfaultfd 282
            kexec_file_load 294
            """
        ),
    ),
}

#: refused outright with EPERM
DENIED = (
    "socket", "socketpair", "connect", "bind", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv",
    "process_vm_writev", "pidfd_getfd", "pidfd_send_signal", "kcmp", "process_madvise",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "personality", "acct",
    "swapon", "swapoff", "reboot", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "quotactl", "add_key", "request_key", "keyctl", "bpf",
    "perf_event_open", "userfaultfd", "name_to_handle_at", "open_by_handle_at",
    # Landlock does not cover metadata: no chmod/chown/xattr on files the uid owns
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat", "removexattr", "lremovexattr",
    "fremovexattr", "removexattrat",
)  # fmt: skip
#: signals: allowed only when the first argument (pid / tgid / tid) is the worker itself
SIGNAL_TO_SELF_ONLY = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")


class UnsupportedArchitecture(RuntimeError):
    """No syscall table for this machine: the filter is not installed (and says why)."""


def machine_table(machine: str | None = None) -> SyscallTable:
    machine = machine or platform.machine()
    table = TABLES.get({"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))
    if table is None:
        raise UnsupportedArchitecture(f"no seccomp syscall table for {machine}")
    return table


class _Program:
    """A forward-jumping BPF program with symbolic labels, resolved in :meth:`assemble`."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | int, str | int, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, value: int, true: str | int = 0, false: str | int = 0) -> None:
        self._code.append((op, true, false, value))

    def ret(self, value: int) -> None:
        self._code.append((_RET_K, 0, 0, value))

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (op, true, false, k) in enumerate(self._code):
            jt, jf = (self._relative(index, t) for t in (true, false))
            out += struct.pack("=HBBI", op, jt, jf, k & 0xFFFFFFFF)
        return bytes(out)

    def _relative(self, index: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        offset = self._labels[target] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"jump to {target} out of range")
        return offset


def _deny_values(program: _Program, values: Iterable[int]) -> None:
    for value in values:
        program.jump(_JEQ_K, value, true="eperm")
    program.ret(SECCOMP_RET_ALLOW)


def build_program(pid: int, table: SyscallTable) -> bytes:
    """The filter for the process ``pid`` as packed ``struct sock_filter`` entries."""
    numbers = table.numbers
    program = _Program()
    program.load(_ARCH)
    program.jump(_JEQ_K, table.audit_arch, false="kill")
    program.load(_NR)
    if table.has_x32:
        program.jump(_JGE_K, X32_SYSCALL_BIT, true="kill")
    for name in DENIED:
        if name in numbers:
            program.jump(_JEQ_K, numbers[name], true="eperm")
    program.jump(_JEQ_K, numbers["clone3"], true="enosys")
    program.jump(_JEQ_K, numbers["clone"], true="clone")
    for name in SIGNAL_TO_SELF_ONLY:
        program.jump(_JEQ_K, numbers[name], true="to_self")
    program.jump(_JEQ_K, numbers["fcntl"], true="fcntl")
    program.jump(_JEQ_K, numbers["ioctl"], true="ioctl")
    program.jump(_JEQ_K, numbers["prctl"], true="prctl")
    program.ret(SECCOMP_RET_ALLOW)

    program.label("clone")
    program.load(_arg_low(0))
    program.jump(_JSET_K, CLONE_NAMESPACES, true="eperm")
    program.jump(_JSET_K, CLONE_THREAD, false="eperm")
    program.ret(SECCOMP_RET_ALLOW)
    program.label("to_self")
    program.load(_arg_low(0))  # pid_t is an int: the kernel reads only the low word
    program.jump(_JEQ_K, pid, false="eperm")
    program.ret(SECCOMP_RET_ALLOW)
    program.label("fcntl")
    program.load(_arg_low(1))
    _deny_values(program, (F_SETOWN, F_SETOWN_EX))
    program.label("ioctl")
    program.load(_arg_low(1))
    _deny_values(program, (FIOSETOWN, SIOCSPGRP, TIOCSPGRP, TIOCSTI, TIOCLINUX))
    program.label("prctl")
    program.load(_arg_low(0))
    _deny_values(program, (PR_SET_DUMPABLE, PR_SET_PTRACER))

    program.label("eperm")
    program.ret(SECCOMP_RET_ERRNO | errno.EPERM)
    program.label("enosys")
    program.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    program.label("kill")
    program.ret(SECCOMP_RET_KILL_PROCESS)
    return program.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _raise_errno(what: str) -> None:
    error = ctypes.get_errno()
    raise OSError(error, f"{what}: {errno.errorcode.get(error, error)}")


def set_no_new_privs() -> None:
    """``PR_SET_NO_NEW_PRIVS``: no exec can gain privileges; seccomp and Landlock need it."""
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _raise_errno("PR_SET_NO_NEW_PRIVS")


def install(pid: int, table: SyscallTable) -> None:
    """Install the filter on this process (every thread: ``TSYNC``). Requires
    :func:`set_no_new_privs` first unless the caller has ``CAP_SYS_ADMIN``.
    Raises ``OSError`` when the kernel refuses."""
    code = build_program(pid, table)
    libc = _libc()
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    result = libc.syscall(
        ctypes.c_long(table.seccomp_nr),
        ctypes.c_long(SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result != 0:
        _raise_errno("seccomp")
