"""The kernel wall holds against plain Python: a test-only executor runs unrestricted code in
a real, confined worker, which tries each forbidden operation — against the filesystem and
against a second live worker of the same uid. Each attempt must fail with its specific errno,
and the very same code must succeed in an unconfined control process with the worker's uid,
so that every test here fails if the wall is missing."""

from __future__ import annotations

import errno
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox
from sandbox import landlock, seccomp_filter
from sandbox.invocation import Invocation
from sandbox.pool import SandboxPool
from tests.sandbox.conftest import descendant_pids

HERE = Path(__file__).resolve().parent
EXECUTOR = HERE / "unrestricted_executor.py"
TABLE = seccomp_filter.TABLES.get(platform.machine())
NR = TABLE.numbers if TABLE else {}
PTRACE_ATTACH = 16
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    """Two confined workers running the unrestricted executor (never reachable otherwise)."""
    with SandboxPool(
        size=2, spares=0, executor="unrestricted_executor:execute", executor_path=[str(HERE)]
    ) as pool:
        yield pool


@pytest.fixture(scope="module")
def files() -> Iterator[dict[str, str]]:
    """A database, its key file, a writable folder and a listening Unix socket, all open to
    every uid, so only the kernel wall can keep a worker out."""
    root = Path(tempfile.mkdtemp(prefix="kernel-wall-"))
    root.chmod(0o755)
    database = root / "crm-host.db"
    with sqlite3.connect(database) as db:
        db.execute("create table tenants (id text)")
    database.chmod(0o644)
    key = root / "crm-host.db.key"
    key.write_bytes(b"fernet-key-material")
    key.chmod(0o644)
    owned = root / "owned.db"  # a file of the worker's own uid: only seccomp keeps its mode
    owned.write_bytes(b"")
    owned.chmod(0o600)
    if IS_ROOT:
        os.chown(owned, 65534, 65534)
    writable = root / "drop"
    writable.mkdir()
    writable.chmod(0o777)
    listener = socket.socket(socket.AF_UNIX)
    unix_path = str(root / "host.sock")
    listener.bind(unix_path)
    os.chmod(unix_path, 0o777)
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield {
        "database": str(database),
        "key": str(key),
        "project_file": str(Path(sandbox.__file__).resolve()),
        "project_dir": str(Path(sandbox.__file__).resolve().parent.parent),
        "owned": str(owned),
        "writable": str(writable),
        "unix": unix_path,
    }
    stop.set()
    thread.join(5)
    listener.close()
    for conn in accepted:
        conn.close()
    subprocess.run(["rm", "-rf", str(root)], check=False)


IOVEC = (
    "class Iovec(ctypes.Structure):\n"
    "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
    "local = ctypes.create_string_buffer(16)\n"
    "mine, theirs = Iovec(ctypes.addressof(local), 16), Iovec(id(os), 16)\n"
)

#: name → (code, errno inside the worker); ``target`` is another live process of the uid
ATTACKS: dict[str, tuple[str, int]] = {
    "read /etc/passwd": ("result = open('/etc/passwd').read(4)", errno.EACCES),
    "read the database": ("result = len(open(files['database'], 'rb').read())", errno.EACCES),
    "read the key file": ("result = open(files['key']).read()", errno.EACCES),
    "read the project tree": ("result = len(open(files['project_file']).read())", errno.EACCES),
    "list the project tree": ("result = os.listdir(files['project_dir'])", errno.EACCES),
    "read another process's /proc": (
        "result = open(f'/proc/{target}/status').read(5)",
        errno.EACCES,
    ),
    "write a file": (
        "result = open(os.path.join(files['writable'], 'x'), 'w').write('x')",
        errno.EACCES,
    ),
    "create a TCP socket": ("result = socket.socket().fileno()", errno.EPERM),
    "create a socket pair": ("result = len(socket.socketpair())", errno.EPERM),
    "connect to a Unix socket on the filesystem": (
        "s = socket.socket(socket.AF_UNIX)\ns.connect(files['unix'])\nresult = 'connected'",
        errno.EPERM,
    ),
    "exec": (
        "os.execv('/bin/sh', ['sh', '-c', 'echo \\'{\"value\": \"exec\"}\\''])",
        errno.EPERM,
    ),
    "fork": (
        "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nresult = 'forked'",
        errno.EPERM,
    ),
    "posix_spawn (vfork-style clone)": (
        "pid = os.posix_spawn('/bin/true', ['true'], {})\nos.waitpid(pid, 0)\nresult = 'spawned'",
        errno.EPERM,
    ),
    "ptrace another process": (
        f"result = syscall({NR.get('ptrace')}, {PTRACE_ATTACH}, target, 0, 0)",
        errno.EPERM,
    ),
    "read another process's memory": (
        IOVEC + f"result = syscall({NR.get('process_vm_readv')}, target, ctypes.byref(mine), 1,"
        " ctypes.byref(theirs), 1, 0)",
        errno.EPERM,
    ),
    "kill another process": ("os.kill(target, signal.SIGKILL)\nresult = 'killed'", errno.EPERM),
    "tgkill another process": (
        f"result = syscall({NR.get('tgkill')}, target, target, signal.SIGKILL)",
        errno.EPERM,
    ),
    "aim SIGIO at another process (F_SETOWN)": (
        "r, w = os.pipe()\nresult = fcntl.fcntl(r, fcntl.F_SETOWN, target)",
        errno.EPERM,
    ),
    "become dumpable again (its /proc readable by the uid)": (
        f"result = syscall({NR.get('prctl')}, 4, 1, 0, 0, 0)",
        errno.EPERM,
    ),
    "make a file of its uid world-readable": (
        "os.chmod(files['owned'], 0o666)\nresult = 'chmodded'",
        errno.EPERM,
    ),
    "pidfd_send_signal to another process": (
        "signal.pidfd_send_signal(os.pidfd_open(target), signal.SIGKILL)\nresult = 'killed'",
        errno.EPERM,
    ),
}


def control(code: str, files: dict[str, str]) -> dict[str, Any]:
    """``code`` in an unconfined process with the worker's uid (its target: its own child)."""
    completed = subprocess.run(
        [sys.executable, "-I", "-B", str(EXECUTOR), code, json.dumps({"files": files})],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def alive(pid: int) -> bool:
    """A live (not zombie) descendant of this process (forked workers are the template's
    children): a SIGKILLed worker stops being one."""
    return pid in descendant_pids()


def in_worker(pool: SandboxPool, code: str, **names: Any) -> tuple[dict[str, Any], int, int]:
    """``code`` in one confined worker, ``target`` being the *other* live worker's pid."""
    workers = pool.worker_pids()
    assert len(workers) == 2
    prefix = "target = next(p for p in workers if p != os.getpid())\n"
    result = pool.run(
        Invocation(
            source="def f(code, names):\n    return None\n",
            function="f",
            args=[prefix + code, {"workers": workers, **names}],
        )
    )
    assert result.ok, result.error
    (other,) = set(workers) - {result.worker_pid}
    return result.value, result.worker_pid, other


def test_every_layer_is_reported_as_the_kernel_allows(pool: SandboxPool) -> None:
    """Nothing is skipped: where a layer cannot be applied here, the report must say so."""
    expected = [
        name
        for name, present in (
            ("seccomp", TABLE is not None),
            ("landlock", landlock.abi_version() > 0),
            ("netns", IS_ROOT),
            ("uid", IS_ROOT),
        )
        if present
    ]
    for info in pool.worker_info():
        report = info["sandbox"]
        assert report["layers"] == expected
        assert report["uid"] == (65534 if IS_ROOT else os.getuid())
        assert report["landlock_abi"] == landlock.abi_version()
        missing = {line.split(":", 1)[0] for line in report["missing"]}
        assert missing == {"seccomp", "landlock", "netns", "uid"} - set(expected)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_plain_python_in_a_worker_cannot(
    pool: SandboxPool, files: dict[str, str], name: str
) -> None:
    code, expected_errno = ATTACKS[name]
    if TABLE is None or (expected_errno == errno.EACCES and landlock.abi_version() == 0):
        report = pool.worker_info()[0]["sandbox"]
        layer = "seccomp" if TABLE is None else "landlock"
        assert layer not in report["layers"] and any(m.startswith(layer) for m in report["missing"])
        return
    unconfined = control(code, files)
    assert "error" not in unconfined, unconfined
    value, _pid, other = in_worker(pool, code, files=files)
    assert value == {
        "error": "PermissionError",
        "errno": expected_errno,
    }, f"{name}: {value}"
    # the neighbour survived and still serves
    assert alive(other) and alive(_pid)
    assert pool.worker_pids() == sorted({_pid, other})
    assert in_worker(pool, "result = os.getpid()")[0]["value"] in (_pid, other)


def test_connect_is_refused_before_the_descriptor_is_even_looked_at(
    pool: SandboxPool, files: dict[str, str]
) -> None:
    code = f"result = syscall({NR['connect']}, -1, None, 0)"
    assert control(code, files) == {"error": "OSError", "errno": errno.EBADF}
    assert in_worker(pool, code)[0] == {"error": "PermissionError", "errno": errno.EPERM}


def test_clone3_is_enosys_so_glibc_falls_back_to_checked_clone(
    pool: SandboxPool, files: dict[str, str]
) -> None:
    code = f"result = syscall({NR['clone3']}, None, 0)"
    assert control(code, files) == {"error": "OSError", "errno": errno.EINVAL}
    assert in_worker(pool, code)[0] == {"error": "OSError", "errno": errno.ENOSYS}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="vfork is an x86_64 syscall")
def test_raw_vfork_is_refused(pool: SandboxPool) -> None:
    # no control: a raw vfork child would return into the parent's Python stack
    assert in_worker(pool, f"result = syscall({NR['vfork']})")[0] == {
        "error": "PermissionError",
        "errno": errno.EPERM,
    }


def test_the_worker_may_still_signal_itself(pool: SandboxPool) -> None:
    """kill() and tgkill() to its own pid stay open (SIGXCPU handling, raise())."""
    code = (
        "os.kill(os.getpid(), 0)\n"
        "signal.raise_signal(signal.SIGWINCH)\n"  # ignored by default; raise() is tgkill
        f"syscall({NR.get('tgkill')}, os.getpid(), os.getpid(), signal.SIGWINCH)\n"
        "result = 'signalled'"
    )
    assert in_worker(pool, code)[0] == {"value": "signalled"}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x32 ABI is x86_64's")
def test_a_syscall_of_another_abi_kills_the_worker(pool: SandboxPool) -> None:
    """x32 numbers (nr | 0x40000000) mean other calls: the filter kills instead of guessing."""
    before = pool.worker_pids()
    result = pool.run(
        Invocation(
            source="def f(code, names):\n    return None\n",
            function="f",
            args=[f"result = syscall({seccomp_filter.X32_SYSCALL_BIT | 39})", {}],  # getpid
        )
    )
    assert result.error is not None
    assert result.error.message == (f"the worker exited unexpectedly (status {-signal.SIGSYS})")
    assert not alive(result.worker_pid or 0)
    assert pool.wait_full(15) and pool.worker_pids() != before


def test_the_survival_check_sees_a_killed_worker(pool: SandboxPool) -> None:
    """``alive`` (used above) can fail: a worker SIGKILLed from outside stops being alive."""
    victim = pool.worker_pids()[0]
    assert alive(victim)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(victim) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(victim)


def test_an_unknown_architecture_gets_no_filter_and_says_why() -> None:
    with pytest.raises(seccomp_filter.UnsupportedArchitecture, match="riscv64"):
        seccomp_filter.machine_table("riscv64")
    assert seccomp_filter.machine_table("arm64") is seccomp_filter.TABLES["aarch64"]


@pytest.mark.parametrize(
    ("machine", "header", "pattern"),
    [
        ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", r"#define __NR_(\w+)\s+(\d+)"),
        ("aarch64", "/usr/include/asm-generic/unistd.h", r"#define __NR(?:3264)?_(\w+)\s+(\d+)"),
    ],
)
def test_syscall_numbers_match_the_kernel_headers(machine: str, header: str, pattern: str) -> None:
    import re

    if not os.path.exists(header):
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    defined = {name: int(nr) for name, nr in re.findall(pattern, Path(header).read_text())}
    numbers = seccomp_filter.TABLES[machine].numbers
    # the architecture's own numbers must all be there; newer common ones (fchmodat2, ...)
    # may postdate the installed headers
    assert {n: defined.get(n) for n in numbers if n not in seccomp_filter.COMMON} == {
        n: nr for n, nr in numbers.items() if n not in seccomp_filter.COMMON
    }
    assert {n: nr for n, nr in numbers.items() if n in defined} == {
        n: defined[n] for n in numbers if n in defined
    }
    assert defined["seccomp"] == seccomp_filter.TABLES[machine].seccomp_nr


def test_readable_paths_are_the_stdlib_and_imported_packages_never_the_project() -> None:
    import RestrictedPython

    from sandbox.kernel_wall import interpreter_read_paths

    paths = interpreter_read_paths()
    assert os.path.dirname(os.__file__) in paths
    assert str(Path(RestrictedPython.__file__).resolve().parent) in paths
    project_package = Path(sandbox.__file__).resolve().parent
    assert not any(project_package.is_relative_to(path) for path in paths), paths
