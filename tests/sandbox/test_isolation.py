"""Nothing crosses between invocations, tenants or into the host: fresh globals, separate
settings and storage, no host environment, no network, secrets masked, crashes contained."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from sandbox.invocation import Invocation, InvocationResult
from sandbox.limits import Limits
from sandbox.pool import SandboxPool
from tests.sandbox.http_servers import RecordingListener


@pytest.fixture(scope="module")
def single() -> Iterator[SandboxPool]:
    """One worker: consecutive calls are guaranteed to land in the same process."""
    with SandboxPool(size=1) as pool:
        yield pool


def test_module_globals_are_fresh_every_invocation(single: SandboxPool) -> None:
    source = (
        "counter = 0\n"
        "seen = []\n"
        "def f():\n"
        "    global counter\n"
        "    counter += 1\n"
        "    seen.append(counter)\n"
        "    return [counter, len(seen)]\n"
    )
    results = [single.run(Invocation(source=source, function="f")) for _ in range(3)]
    assert [r.value for r in results] == [[1, 1]] * 3
    assert len({r.worker_pid for r in results}) == 1


def test_tenants_never_see_each_others_settings_or_storage(single: SandboxPool) -> None:
    source = (
        "def f(value):\n"
        "    before = storage.get('mine')\n"
        "    storage.set('mine', value)\n"
        "    return [settings.get('api_key'), before]\n"
    )
    a = single.run(
        Invocation(
            source=source, function="f", args=["A"], settings={"api_key": "key-a"}, storage={}
        )
    )
    b = single.run(
        Invocation(source=source, function="f", args=["B"], settings={"other": 1}, storage={})
    )
    assert a.value == ["key-a", None] and a.storage == {"mine": "A"}
    assert b.value == [None, None] and b.storage == {"mine": "B"}
    assert a.worker_pid == b.worker_pid


def test_worker_environment_has_no_host_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_HOST_SECRET_KEY", "host-secret-value")
    monkeypatch.setenv("API_TOKEN", "tok-123")
    with SandboxPool(size=1) as pool:
        (pid,) = pool.worker_pids()
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
        result = pool.run(Invocation(source="import os\ndef f():\n    return 1\n", function="f"))
    assert b"host-secret-value" not in environ and b"CRM_HOST_" not in environ
    assert b"tok-123" not in environ
    assert set(dict(v.split(b"=", 1) for v in environ.split(b"\0") if v)) <= {b"PATH", b"LANG"}
    assert result.error is not None and result.error.kind == "policy_violation"


@pytest.mark.parametrize(
    "source",
    [
        "import socket\ndef f():\n    return socket.create_connection(('127.0.0.1', PORT))\n",
        "def f():\n    return __import__('socket').socket().connect(('127.0.0.1', PORT))\n",
        "import urllib.request\ndef f():\n    return urllib.request.urlopen(URL).read()\n",
        "import json\ndef f():\n    return json.codecs.sys.modules['socket']\n",
        "def f():\n    return ().__class__.__base__.__subclasses__()\n",
        "def f():\n    return fetch(URL).status\n",
    ],
)
def test_no_path_opens_a_socket(single: SandboxPool, source: str) -> None:
    with RecordingListener() as listener:
        source = source.replace("PORT", str(listener.port)).replace(
            "URL", repr(f"http://127.0.0.1:{listener.port}/")
        )
        result = single.run(Invocation(source=source, function="f"))
        time.sleep(0.1)
    assert not result.ok
    assert listener.connections == 0


def test_worker_lives_in_its_own_network_namespace(single: SandboxPool) -> None:
    (info,) = single.worker_info()
    if not info["network_isolated"]:
        pytest.skip("unshare(CLONE_NEWNET) is not permitted here")
    (pid,) = single.worker_pids()
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")


def test_secrets_are_masked_in_log_and_errors(single: SandboxPool) -> None:
    secret = "sk-live-0123456789"
    source = (
        "def f():\n"
        "    print('key is', settings.api_key)\n"
        "    log('again: ' + settings.api_key[:6] + settings.api_key[6:])\n"
        "    raise ValueError('bad key ' + settings.api_key)\n"
    )
    result = single.run(
        Invocation(source=source, function="f", settings={"api_key": secret}, redact=[secret])
    )
    assert result.error is not None
    assert secret not in result.log and secret not in result.error.message
    assert result.log == "key is ***\nagain: ***\n"
    assert result.error.message.endswith("bad key ***")


def test_a_secret_straddling_the_log_cap_is_still_masked(single: SandboxPool) -> None:
    secret = "SECRET-abcdefghijklmnop"
    source = "def f():\n    print('x' * 90 + settings.k + 'y' * 50)\n    return 1\n"
    result = single.run(
        Invocation(
            source=source,
            function="f",
            settings={"k": secret},
            redact=[secret],
            limits=Limits(log_bytes=100),
        )
    )
    assert result.log_truncated
    assert "SECRET" not in result.log and result.log.startswith("x" * 90 + "***y")


def _crash(pool: SandboxPool, sig: signal.Signals) -> InvocationResult:
    holder: list[InvocationResult] = []
    thread = threading.Thread(
        target=lambda: holder.append(
            pool.run(
                Invocation(
                    source="def f():\n    while True:\n        pass\n",
                    function="f",
                    limits=Limits(timeout_s=8),
                )
            )
        )
    )
    (pid,) = pool.worker_pids()
    thread.start()
    time.sleep(0.3)
    os.kill(pid, sig)
    thread.join(10)
    return holder[0]


@pytest.mark.parametrize(
    ("sig", "kind"),
    [(signal.SIGSEGV, "limit_exceeded"), (signal.SIGKILL, "memory_limit")],
)
def test_a_crashed_worker_is_replaced(single: SandboxPool, sig: signal.Signals, kind: str) -> None:
    """SIGSEGV stands for a C-stack crash; a SIGKILL we did not send, for the OOM killer."""
    result = _crash(single, sig)
    assert result.error is not None and result.error.kind == kind
    assert single.wait_full(10)
    assert single.run(Invocation(source="def f():\n    return 5\n", function="f")).value == 5


def test_concurrent_runs_from_eight_threads(sandbox_pool: SandboxPool) -> None:
    source = "def f(tenant, n):\n    return [tenant, settings.tenant, sum(range(n))]\n"
    results: dict[tuple[int, int], InvocationResult] = {}

    def work(tenant: int) -> None:
        for n in range(5):
            results[(tenant, n)] = sandbox_pool.run(
                Invocation(
                    source=source,
                    function="f",
                    args=[tenant, n * 1000],
                    settings={"tenant": tenant},
                )
            )

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 40
    for (tenant, n), result in results.items():
        assert result.ok and result.value == [tenant, tenant, sum(range(n * 1000))]
