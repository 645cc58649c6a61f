"""Workers forked from the pool's template process (real processes, inspected through /proc):
the template is their parent, single-threaded and clean; each worker keeps only its own two
pipes, runs as ``nobody`` in the template's one network namespace, is killed through its
pidfd and reaped by the template; a dead template is replaced; compiled code is shipped to
fresh workers; where fork-serving is impossible the pool spawns workers and says why."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path

import pytest

import sandbox.pool
from sandbox.invocation import Invocation
from sandbox.limits import Limits
from sandbox.pool import SandboxPool
from tests.sandbox.conftest import child_pids, parent_pid

SOURCE = "def f():\n    return 1\n"
HOSTILE = "tests.sandbox.hostile_executor:execute"


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(size=2, spares=1) as pool:
        assert pool.start_method == "fork-server", pool.fork_server_unavailable
        yield pool


def pid_for(pool: SandboxPool, key: Hashable, source: str = SOURCE) -> int:
    result = pool.run(Invocation(source=source, function="f", isolation_key=key))
    assert result.ok and result.worker_pid is not None, result.error
    return result.worker_pid


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        entries = [e.decode() for e in fh.read().split(b"\0") if e]
    return dict(e.split("=", 1) for e in entries)


def fd_targets(pid: int | str) -> dict[int, str]:
    """What each open descriptor of ``pid`` refers to (``pipe:[inode]``, a path, ...)."""
    targets: dict[int, str] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        # a descriptor closed meanwhile (e.g. listdir's own) is no longer there
        with contextlib.suppress(FileNotFoundError):
            targets[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
    return targets


def gone(pid: int, timeout: float = 10.0) -> bool:
    """The process no longer exists at all — not even as a zombie (its parent reaped it)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_workers_are_children_of_the_single_threaded_template(pool: SandboxPool) -> None:
    template = pool.template_pid
    assert template is not None and template in child_pids()
    worker = pid_for(pool, "tenant-a")
    assert parent_pid(worker) == template != os.getpid()
    assert worker not in child_pids()
    assert status_field(template, "Threads") == "1"


def test_a_forked_worker_keeps_only_its_own_two_pipes(pool: SandboxPool) -> None:
    worker = pid_for(pool, "tenant-fds")
    fds = fd_targets(worker)
    assert fds[0] == fds[1] == os.devnull
    # the one file the worker opens itself, before the kernel wall: its own peak-RSS reset
    own = {fd for fd, target in fds.items() if target == f"/proc/{worker}/clear_refs"}
    assert len(own) <= 1
    protocol = {fd: target for fd, target in fds.items() if fd > 2 and fd not in own}
    # nothing of the template survives: no control socket, no wake-up pipe, no other
    # worker's pipes — exactly the two pipes whose other ends this (the pool's) process holds
    assert len(protocol) == 2 and all(t.startswith("pipe:") for t in protocol.values())
    assert set(protocol.values()) <= set(fd_targets("self").values())
    template_fds = set(fd_targets(pool.template_pid or 0).values())
    assert any(t.startswith("socket:") for t in template_fds)
    assert not set(protocol.values()) & template_fds  # the template closed its copies


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are only dropped when root")
def test_workers_run_as_nobody_and_the_template_keeps_its_credentials(pool: SandboxPool) -> None:
    worker = pid_for(pool, "tenant-uid")
    assert status_field(worker, "Uid").split() == ["65534"] * 4
    assert status_field(worker, "Gid").split() == ["65534"] * 4
    assert status_field(worker, "Groups") == ""
    # a nobody worker can neither signal nor ptrace a root template
    assert status_field(pool.template_pid or 0, "Uid").split()[1] == "0"
    assert all(info["privileges_dropped"] for info in pool.worker_info())


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_workers_share_the_one_network_namespace_of_the_template(pool: SandboxPool) -> None:
    namespaces = {os.readlink(f"/proc/{pool.template_pid}/ns/net")}
    for key in ("net-a", "net-b"):
        pid = pid_for(pool, key)
        namespaces.add(os.readlink(f"/proc/{pid}/ns/net"))
    assert len(namespaces) == 1, namespaces
    assert namespaces != {os.readlink("/proc/self/ns/net")}
    assert all(info["network_isolated"] for info in pool.worker_info())


def test_no_host_secret_reaches_the_template_or_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_HOST_SECRET_KEY", "host-secret-value")
    with SandboxPool(size=1, spares=0) as pool:
        worker = pid_for(pool, "tenant-env")
        for pid in (pool.template_pid or 0, worker):
            assert set(environ(pid)) <= {"PATH", "LANG", "LC_ALL"}
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                assert b"host-secret-value" not in fh.read()


def test_two_tenants_get_two_processes(pool: SandboxPool) -> None:
    a = pid_for(pool, ("live", "acme", "sendgrid", "1.0.0"))
    b = pid_for(pool, ("live", "globex", "sendgrid", "1.0.0"))
    assert a != b
    assert parent_pid(a) == parent_pid(b) == pool.template_pid
    assert pid_for(pool, ("live", "acme", "sendgrid", "1.0.0")) == a


def test_a_hung_worker_is_killed_through_its_pidfd_and_reaped(pool: SandboxPool) -> None:
    result = pool.run(
        Invocation(
            source="def f():\n    while True:\n        pass\n",
            function="f",
            limits=Limits(timeout_s=0.5, cpu_s=30),
            isolation_key="tenant-hung",
        )
    )
    assert result.error is not None and result.error.kind == "timeout"
    assert "wall-clock" in result.error.message
    assert result.worker_pid is not None and gone(result.worker_pid)  # dead and reaped
    assert pool.wait_full(30)
    assert pid_for(pool, "tenant-hung") != result.worker_pid


def test_evicted_workers_are_reaped_by_the_template() -> None:
    with SandboxPool(size=1, spares=0) as pool:
        first = pid_for(pool, "first")
        second = pid_for(pool, "second")
        assert second != first and pool.evictions == 1
        assert gone(first)  # not a zombie of the template: reaped on SIGCHLD


def test_a_worker_that_dies_by_itself_is_named_by_its_real_exit_status() -> None:
    # the pool is not the worker's parent: the status comes from the template that reaped it
    with SandboxPool(size=1, spares=0, executor=HOSTILE) as pool:
        result = pool.run(Invocation(source=SOURCE, function="crash", isolation_key="t"))
        assert result.error is not None and result.error.kind == "limit_exceeded"
        assert "SIGSEGV" in result.error.message
        assert result.worker_pid is not None and gone(result.worker_pid)
        assert pid_for(pool, "t") != result.worker_pid


def test_a_dead_template_is_replaced_and_calls_still_succeed() -> None:
    with SandboxPool(size=2, spares=1) as pool:
        old_template = pool.template_pid
        old_workers = pool.worker_pids(include_spares=True)
        assert old_template is not None
        os.kill(old_template, signal.SIGKILL)
        # its workers die with it (PR_SET_PDEATHSIG) instead of living on as orphans
        assert all(gone(pid) for pid in old_workers)
        for key in ("after-a", "after-b", "after-c"):
            worker = pid_for(pool, key)
            assert worker not in old_workers
            assert parent_pid(worker) == pool.template_pid != old_template
        assert pool.template_restarts == 1
        assert pool.start_method == "fork-server"


def test_fresh_workers_get_the_code_the_pool_compiled_once() -> None:
    source = "X = 2\n\ndef f(n):\n    if n < 0:\n        raise ValueError('negative')\n    return n * X\n"
    with SandboxPool(size=1, spares=1) as pool:
        pids = set()
        for tenant in ("t1", "t2", "t3"):
            ok = pool.run(Invocation(source=source, function="f", args=[3], isolation_key=tenant))
            assert ok.ok and ok.value == 6, ok.error
            failed = pool.run(
                Invocation(source=source, function="f", args=[-1], isolation_key=tenant)
            )
            # code shipped as marshal keeps its file name and line numbers
            assert failed.error is not None and failed.error.kind == "script_error"
            assert "negative" in failed.error.message and failed.error.line == 5
            pids.add(ok.worker_pid)
        assert len(pids) == 3
        assert pool.parent_compiles == 1  # t2 and t3 received t1's compiled code


def test_a_source_that_does_not_compile_is_never_compiled_by_the_parent() -> None:
    with SandboxPool(size=1, spares=0) as pool:
        for tenant in ("t1", "t2"):
            result = pool.run(
                Invocation(source="def f(:\n    pass\n", function="f", isolation_key=tenant)
            )
            assert result.error is not None and result.error.kind == "invalid_module"
        assert pool.parent_compiles == 0


def test_without_fork_serving_workers_are_spawned_and_the_reason_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox.pool, "unavailable_reason", lambda: "this Python has no pidfds")
    with SandboxPool(size=1, spares=0) as pool:
        assert pool.start_method == "spawn" and pool.template_pid is None
        assert pool.fork_server_unavailable == "this Python has no pidfds"
        worker = pid_for(pool, "tenant-spawned")
        assert parent_pid(worker) == os.getpid()
        assert pid_for(pool, "other") != worker


def test_fork_serving_can_be_turned_off() -> None:
    with SandboxPool(size=1, spares=0, fork_server=False) as pool:
        assert pool.start_method == "spawn" and pool.fork_server_unavailable is None
        assert parent_pid(pid_for(pool, "tenant")) == os.getpid()


def dead(pid: int, timeout: float = 10.0) -> bool:
    """Gone or a zombie: the process no longer runs (whoever reaps an orphan)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_host_killed_outright_leaves_no_template_or_worker_running() -> None:
    # the template sees its control socket close and exits; its workers die with it
    program = (
        "import sys, time\n"
        "from sandbox.pool import SandboxPool\n"
        "pool = SandboxPool(size=2, spares=1)\n"
        "assert pool.wait_full(30)\n"
        "print(pool.template_pid, *pool.worker_pids(include_spares=True), flush=True)\n"
        "time.sleep(60)\n"
    )
    host = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=str(Path(__file__).resolve().parents[2]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) >= 3 and all(not dead(pid, 0) for pid in pids)
    finally:
        host.kill()
        host.wait()
    assert all(dead(pid) for pid in pids)


def test_a_failed_fork_is_retried_and_does_not_cost_the_template() -> None:
    with SandboxPool(size=1, spares=0) as pool:
        template = pool.template_pid
        assert template is not None
        warm = pid_for(pool, "warm")
        # no descriptor left for the template's pipes: os.pipe() fails with EMFILE there
        limits = resource.prlimit(template, resource.RLIMIT_NOFILE)
        resource.prlimit(template, resource.RLIMIT_NOFILE, (3, limits[1]))
        results: list[int] = []
        caller = threading.Thread(target=lambda: results.append(pid_for(pool, "next")))
        try:
            caller.start()
            deadline = time.monotonic() + 10
            while pool.replacements == 0 and pool._spawn_failures == 0:
                assert time.monotonic() < deadline, "the pool never tried to fork"
                time.sleep(0.01)
            assert not results  # waiting for a worker the template could not fork yet
            assert not dead(template, 0)  # the template survived its failed fork
            assert parent_pid(warm) == template or dead(warm, 0)  # warm was evicted
        finally:
            resource.prlimit(template, resource.RLIMIT_NOFILE, limits)
        caller.join(30)
        assert results and parent_pid(results[0]) == template
        assert pool.template_pid == template and pool.template_restarts == 0
