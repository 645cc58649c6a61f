"""``storage.set(key, value, durable=True)`` in a real worker: the write is relayed to the
caller's ``storage.durable`` callback before the script goes on (committed at once, kept
after a later failure), under the worker's quota, and fails clearly without the callback.
The sandbox stores nothing itself: it only relays."""

from __future__ import annotations

from typing import Any

from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.invocation import Invocation
from sandbox.limits import DEFAULT_LIMITS
from sandbox.pool import SandboxPool

SOURCE = (
    "def f(fail):\n"
    "    storage.set('remote', 'r-1', durable=True)\n"
    "    storage.set('later', 1)\n"
    "    if fail:\n"
    "        raise ValueError('after the service created r-1')\n"
    "    return storage.get('remote')\n"
)


def run(pool: SandboxPool, fail: bool, committed: list[Any], **extra: Any) -> Any:
    callbacks = {DURABLE_STORAGE_CALLBACK: committed.append}
    return pool.run(
        Invocation(
            source=SOURCE,
            function="f",
            args=[fail],
            storage={},
            callbacks=extra.pop("callbacks", callbacks),
            **extra,
        )
    )


def test_the_durable_write_reaches_the_caller_even_when_the_call_fails(
    sandbox_pool: SandboxPool,
) -> None:
    committed: list[Any] = []
    failed = run(sandbox_pool, True, committed)
    assert not failed.ok and failed.storage is None  # the snapshot is all-or-nothing
    assert committed == [["remote", "r-1"]]  # but the durable write was relayed first
    committed.clear()
    ok = run(sandbox_pool, False, committed)
    assert ok.ok and ok.value == "r-1"
    assert ok.storage == {"remote": "r-1", "later": 1}  # the snapshot includes it
    assert committed == [["remote", "r-1"]]


def test_without_the_callback_a_durable_write_fails_clearly(sandbox_pool: SandboxPool) -> None:
    result = run(sandbox_pool, False, [], callbacks={})
    assert not result.ok and result.error is not None
    assert result.error.kind == "script_error"
    assert "storage.durable is not available" in result.error.message


def test_a_durable_write_over_the_quota_is_not_relayed(sandbox_pool: SandboxPool) -> None:
    committed: list[Any] = []
    limits = DEFAULT_LIMITS.lowered_by({"storage_bytes": 10})
    result = run(sandbox_pool, False, committed, limits=limits)
    assert not result.ok and result.error is not None
    assert result.error.kind == "limit_exceeded"
    assert committed == []
