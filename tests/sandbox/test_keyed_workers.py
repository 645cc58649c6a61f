"""One trust domain per worker process (real workers): a worker that ran code of one
isolation key is reused only for that key; another key gets a fresh process, evicting the
least recently used idle worker when the pool is full; an evicted process is gone."""

from __future__ import annotations

import os
import time
from collections.abc import Hashable

from sandbox.invocation import Invocation
from sandbox.pool import SandboxPool

SOURCE = "def f():\n    return 1\n"


def pid_for(pool: SandboxPool, key: Hashable) -> int:
    result = pool.run(Invocation(source=SOURCE, function="f", isolation_key=key))
    assert result.ok and result.worker_pid is not None, result.error
    return result.worker_pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def dies(pid: int, within_s: float = 10.0) -> bool:
    """Whether ``pid`` is gone within a generous bound: an eviction sends SIGKILL through
    the worker's pidfd and returns at once, so the kernel may not have ended it yet when
    the next call has already been answered."""
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_workers_are_reused_only_for_their_own_key() -> None:
    with SandboxPool(size=2, spares=1) as pool:
        a = pid_for(pool, ("live", "acme", "sendgrid", "1.0.0"))
        assert pid_for(pool, ("live", "acme", "sendgrid", "1.0.0")) == a
        b = pid_for(pool, ("live", "globex", "sendgrid", "1.0.0"))
        assert b != a
        assert pid_for(pool, ("live", "acme", "sendgrid", "1.0.0")) == a  # both stay warm
        assert pid_for(pool, ("live", "globex", "sendgrid", "1.0.0")) == b
        # another version, another purpose, the unkeyed domain: never a warm worker of others
        others = {
            pid_for(pool, ("live", "acme", "sendgrid", "1.1.0")),
            pid_for(pool, ("local", "acme", "sendgrid", "1.0.0")),
            pid_for(pool, None),
        }
        assert not others & {a, b} and len(others) == 3
        assert pool.evictions >= 3
        assert dies(a) and dies(b)  # evicted processes were killed
        assert pool.wait_full(30)
        again = pid_for(pool, ("live", "acme", "sendgrid", "1.0.0"))
        assert again not in others | {a, b}


def test_the_least_recently_used_worker_is_evicted() -> None:
    with SandboxPool(size=2, spares=0) as pool:
        a = pid_for(pool, "a")
        b = pid_for(pool, "b")
        assert pid_for(pool, "a") == a  # b is now the least recently used
        c = pid_for(pool, "c")
        assert c not in (a, b) and dies(b)
        assert pid_for(pool, "a") == a
        assert os.getpid() not in (a, b, c)


def test_concurrent_calls_of_one_key_get_workers_of_that_key_only() -> None:
    import threading

    with SandboxPool(size=3, spares=0) as pool:
        other = pid_for(pool, "other")
        seen: list[int] = []
        lock = threading.Lock()

        def call() -> None:
            pid = pid_for(pool, "mine")
            with lock:
                seen.append(pid)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(seen) == 6 and other not in seen
