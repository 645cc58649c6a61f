"""The pool's contract: values, arguments, settings, callbacks and fetch round-trip through
real worker processes; results are JSON; close() leaves no child process behind."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import pytest

from sandbox.egress import EgressPolicy
from sandbox.invocation import Invocation
from sandbox.limits import Limits
from sandbox.pool import PoolClosed, SandboxPool
from sandbox.world import WorldSpec
from tests.sandbox.conftest import child_pids, descendant_pids
from tests.sandbox.fake_network import PUBLIC_ADDRESS, fake_network
from tests.sandbox.http_servers import LocalHTTPServer, RequestHandler

SPEC = WorldSpec(
    enums={"Status": {"Sent": "Sent"}},
    record_types={"Stats": {"total": 0, "sent": 0}},
    namespaces={"crm": ["contacts"]},
)


def test_basic_call_returns_its_value(sandbox_pool: SandboxPool) -> None:
    result = sandbox_pool.run(Invocation(source="def f():\n    return 41 + 1\n", function="f"))
    assert result.ok and result.value == 42 and result.error is None
    assert result.wall_ms > 0 and result.cpu_ms >= 0
    assert result.peak_memory_kb and result.peak_memory_kb > 1000
    assert result.worker_pid in sandbox_pool.worker_pids()


def test_args_kwargs_settings_spec_and_callbacks_round_trip(sandbox_pool: SandboxPool) -> None:
    seen: list[Any] = []

    def contacts(args: list[Any]) -> list[dict[str, Any]]:
        seen.append(args)
        return [{"id": i, "email": f"c{i}@example.com"} for i in args[0]]

    source = (
        "def f(ids, label, suffix='!'):\n"
        "    found = crm.contacts(ids)\n"
        "    stats = Stats(total=len(found), sent=1)\n"
        "    return {'emails': [c['email'] for c in found], 'label': label + suffix,\n"
        "            'region': settings.region, 'status': Status.Sent, 'stats': stats}\n"
    )
    result = sandbox_pool.run(
        Invocation(
            source=source,
            function="f",
            args=[[1, 2], "hello"],
            kwargs={"suffix": "?"},
            settings={"region": "eu"},
            world=SPEC,
            callbacks={"crm.contacts": contacts},
        )
    )
    assert result.ok, result.error
    assert result.value == {
        "emails": ["c1@example.com", "c2@example.com"],
        "label": "hello?",
        "region": "eu",
        "status": "Sent",
        "stats": {"total": 2, "sent": 1},
    }
    assert seen == [[[1, 2]]]


def test_a_failing_callback_does_not_leak_host_details(sandbox_pool: SandboxPool) -> None:
    def broken(args: list[Any]) -> Any:
        raise RuntimeError("database password is hunter2")

    result = sandbox_pool.run(
        Invocation(
            source="def f():\n    return crm.contacts([1])\n",
            function="f",
            world=SPEC,
            callbacks={"crm.contacts": broken},
        )
    )
    assert not result.ok and "hunter2" not in result.error.message  # type: ignore[union-attr]


def test_fetch_goes_through_the_parent(sandbox_pool: SandboxPool) -> None:
    requests: list[httpx.Request] = []
    parent = os.getpid()

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        assert os.getpid() == parent  # performed here, not in the worker
        return httpx.Response(200, json={"n": 7})

    source = (
        "def f():\n"
        "    r = fetch('https://api.example.com/x', method='POST', json={'a': 1})\n"
        "    return [r.ok, r.status, r.json()['n']]\n"
    )
    result = sandbox_pool.run(
        Invocation(
            source=source,
            function="f",
            egress=EgressPolicy.from_config(["api.example.com"]),
            network=fake_network(answer),
        )
    )
    assert result.ok, result.error
    assert result.value == [True, 200, 7]
    assert requests[0].headers["host"] == "api.example.com"
    assert requests[0].url.host == PUBLIC_ADDRESS  # pinned to the resolved address
    assert requests[0].method == "POST" and json.loads(requests[0].content) == {"a": 1}
    assert 0 < requests[0].extensions["timeout"]["read"] <= 10
    assert result.fetches[0]["status"] == 200
    assert result.fetches[0]["url"] == "https://api.example.com/x"


def test_real_fetcher_against_a_local_server_with_the_allow_list(
    sandbox_pool: SandboxPool,
) -> None:
    server = LocalHTTPServer()

    @server.route("/hello")
    def hello(req: RequestHandler) -> None:
        req.reply(200, b'{"greeting": "hi"}', {"Content-Type": "application/json"})

    with server:
        policy = EgressPolicy.from_config(["127.0.0.1"], ["127.0.0.1"])
        source = f"def f():\n    return fetch('{server.url('/hello')}').json()['greeting']\n"
        result = sandbox_pool.run(Invocation(source=source, function="f", egress=policy))
        denied = sandbox_pool.run(
            Invocation(
                source=source, function="f", egress=EgressPolicy.from_config(["127.0.0.1"], [])
            )
        )
    assert result.ok and result.value == "hi", result.error
    assert result.fetches and result.fetches[0]["status"] == 200
    assert denied.error is not None and denied.error.kind == "egress_denied"
    assert len(server.seen) == 1


def test_fetch_without_egress_is_denied_and_fetch_count_is_capped(
    sandbox_pool: SandboxPool,
) -> None:
    source = "def f():\n    return fetch('https://api.example.com/').status\n"
    denied = sandbox_pool.run(Invocation(source=source, function="f"))
    assert denied.error is not None and denied.error.kind == "egress_denied"

    many = "def f():\n    for i in range(5):\n        fetch('https://api.example.com/')\n"
    capped = sandbox_pool.run(
        Invocation(
            source=many,
            function="f",
            egress=EgressPolicy.from_config(["api.example.com"]),
            network=fake_network(lambda request: httpx.Response(204)),
            limits=Limits(max_fetches=3),
        )
    )
    assert capped.error is not None and capped.error.kind == "limit_exceeded"


def test_storage_snapshot_only_after_success(sandbox_pool: SandboxPool) -> None:
    source = (
        "def f(fail):\n"
        "    storage.set('count', (storage.get('count') or 0) + 1)\n"
        "    if fail:\n"
        "        raise ValueError('no')\n"
        "    return storage.get('count')\n"
    )
    ok = sandbox_pool.run(
        Invocation(source=source, function="f", args=[False], storage={"count": 1})
    )
    assert ok.value == 2 and ok.storage == {"count": 2}
    failed = sandbox_pool.run(
        Invocation(source=source, function="f", args=[True], storage={"count": 1})
    )
    assert failed.error is not None and failed.error.kind == "script_error"
    assert failed.storage is None
    untouched = sandbox_pool.run(
        Invocation(source="def f():\n    return 1\n", function="f", storage={"count": 1})
    )
    assert untouched.storage is None


def test_errors_carry_kind_and_line(sandbox_pool: SandboxPool) -> None:
    cases = {
        "def f():\n    x = 1\n    raise ValueError('bad')\n": ("script_error", 3),
        "def f(:\n": ("invalid_module", 1),
        "import os\ndef f():\n    return 1\n": ("policy_violation", None),
        "def g():\n    return 1\n": ("not_implemented", None),
        "def f():\n    return object()\n": ("invalid_return", None),
    }
    for source, (kind, line) in cases.items():
        result = sandbox_pool.run(Invocation(source=source, function="f"))
        assert result.error is not None and result.error.kind == kind, (source, result.error)
        if line is not None:
            assert result.error.line == line


def test_results_are_json_serialisable(sandbox_pool: SandboxPool) -> None:
    ok = sandbox_pool.run(
        Invocation(source="def f():\n    log('x')\n    return {'a': [1]}\n", function="f")
    )
    failed = sandbox_pool.run(Invocation(source="def f():\n    1 / 0\n", function="f"))
    for result in (ok, failed):
        data = json.loads(json.dumps(result.as_dict()))
        assert data["ok"] is result.ok
    assert json.loads(json.dumps(failed.as_dict()))["error"]["kind"] == "script_error"
    assert ok.log == "x\n"


def test_non_json_arguments_are_the_callers_error(sandbox_pool: SandboxPool) -> None:
    with pytest.raises(TypeError):
        sandbox_pool.run(
            Invocation(source="def f(x):\n    return 1\n", function="f", args=[object()])
        )
    assert sandbox_pool.run(Invocation(source="def f():\n    return 1\n", function="f")).ok


def test_workers_are_recycled_after_n_invocations() -> None:
    with SandboxPool(size=1, recycle_after=2) as pool:
        first = [
            pool.run(Invocation(source="def f():\n    return 1\n", function="f")) for _ in range(2)
        ]
        assert pool.wait_full(10)
        third = pool.run(Invocation(source="def f():\n    return 1\n", function="f"))
    assert first[0].worker_pid == first[1].worker_pid != third.worker_pid


def test_close_leaves_no_child_processes() -> None:
    """Workers are the template's children (see test_fork_server.py); close() stops them
    and the template, and reaps the template, so nothing of the pool is left."""
    pool = SandboxPool(size=2, spares=1)
    assert pool.wait_full(10)
    deadline = time.monotonic() + 10
    while len(pool.worker_pids(include_spares=True)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = pool.worker_pids(include_spares=True)
    template = pool.template_pid
    assert template is not None and template in child_pids()
    assert len(pids) == 3 and set(pids) <= descendant_pids()
    assert pool.run(Invocation(source="def f():\n    return 1\n", function="f")).ok
    pool.close()
    pool.close()  # idempotent
    assert not {*pids, template} & descendant_pids()
    for pid in [*pids, template]:
        with pytest.raises(ChildProcessError):  # already reaped: no zombie left
            os.waitpid(pid, os.WNOHANG)
    with pytest.raises(PoolClosed):
        pool.run(Invocation(source="def f():\n    return 1\n", function="f"))


def test_worker_hardening_is_reported(sandbox_pool: SandboxPool) -> None:
    for info in sandbox_pool.worker_info():
        assert info["memory_limited"] is True
        if os.geteuid() == 0 and os.path.exists("/proc/self/ns/net"):
            assert info["network_isolated"] is True


def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (a liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


def test_stats_show_busy_workers_and_callers_waiting_for_one() -> None:
    import threading

    release = threading.Event()

    def blocking(args: list[Any]) -> list[Any]:
        release.wait(30)
        return []

    call = Invocation(
        source="def f():\n    return len(crm.contacts([1]))\n",
        function="f",
        world=SPEC,
        callbacks={"crm.contacts": blocking},
    )
    with SandboxPool(size=1, spares=0) as pool:
        idle = pool.stats()
        assert (idle.size, idle.alive, idle.idle, idle.busy, idle.waiting) == (1, 1, 1, 0, 0)
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(pool.run(call)))]
        threads[0].start()
        _until(lambda: pool.stats().busy == 1, "the first call holding the worker")
        threads.append(threading.Thread(target=lambda: results.append(pool.run(call))))
        threads[1].start()
        _until(lambda: pool.stats().waiting == 1, "the second call waiting")
        waiting = pool.stats()
        assert (waiting.busy, waiting.idle, waiting.waits) == (1, 0, 1)
        release.set()
        for thread in threads:
            thread.join(30)
        assert [r.ok for r in results] == [True, True], [r.error for r in results]
        done = pool.stats()
        assert (done.busy, done.waiting, done.waits, done.wait_timeouts) == (0, 0, 1, 0)
        assert done.idle == 1


def test_stats_count_a_wait_that_timed_out() -> None:
    import threading

    release = threading.Event()

    def blocking(args: list[Any]) -> list[Any]:
        release.wait(30)
        return []

    held = Invocation(
        source="def f():\n    return len(crm.contacts([1]))\n",
        function="f",
        world=SPEC,
        callbacks={"crm.contacts": blocking},
    )
    with SandboxPool(size=1, spares=0, acquire_timeout_s=0.05) as pool:
        holder = threading.Thread(target=pool.run, args=(held,))
        holder.start()
        _until(lambda: pool.stats().busy == 1, "the call holding the worker")
        with pytest.raises(TimeoutError):
            pool.run(Invocation(source="def f():\n    return 1\n", function="f"))
        release.set()
        holder.join(30)
        stats = pool.stats()
        assert (stats.waits, stats.wait_timeouts, stats.busy, stats.waiting) == (1, 1, 0, 0)
