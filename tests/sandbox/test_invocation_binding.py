"""Capabilities belong to one invocation (real workers, real attacks): a lent object kept
past its invocation raises inside the script and sends nothing; garbage a script leaves
behind is collected inside its own window, with its own callbacks; a frame that does not
carry the current invocation's identity, or arrives when none is running, gets the worker
killed and replaced, and the next call is unaffected."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.egress import EgressPolicy
from sandbox.invocation import Invocation
from sandbox.pool import SandboxPool
from sandbox.world import WorldSpec
from tests.sandbox.fake_network import fake_network

SPEC = WorldSpec(namespaces={"crm": ["contacts"]})
HOSTILE = "tests.sandbox.hostile_executor:execute"


def recorder(name: str, calls: list[tuple[str, Any]]) -> Any:
    def contacts(args: list[Any]) -> list[dict[str, Any]]:
        calls.append((name, args))
        return [{"id": i, "email": f"{i}@{name}.test"} for i in args[0]]

    return contacts


@pytest.fixture(scope="module")
def hostile() -> Iterator[SandboxPool]:
    """One worker running the hostile executor: consecutive calls share the process."""
    with SandboxPool(size=1, spares=0, executor=HOSTILE) as pool:
        yield pool


def invocation(
    function: str,
    calls: list[tuple[str, Any]],
    name: str,
    source: str = "def f():\n    return 1\n",
    **extra: Any,
) -> Invocation:
    return Invocation(
        source=source,
        function=function,
        world=SPEC,
        callbacks={"crm.contacts": recorder(name, calls)},
        egress=EgressPolicy.from_config(["api.example.test"]),
        network=fake_network(lambda request: httpx.Response(200, text=name)),
        storage={},
        isolation_key="one-key",
        **extra,
    )


def test_a_capability_kept_past_its_invocation_raises_inside_the_script(
    hostile: SandboxPool,
) -> None:
    calls: list[tuple[str, Any]] = []
    kept = hostile.run(invocation("stash", calls, "a"))
    used = hostile.run(invocation("use_stash", calls, "b"))
    assert kept.ok and used.ok, (kept.error, used.error)
    assert kept.worker_pid == used.worker_pid  # the same process: only the binding protects
    assert set(used.value) == {
        "crm.contacts",
        "fetch",
        "storage.get",
        "storage.set",
        "log",
        "print",
    }
    for name, outcome in used.value.items():
        assert "belonged to an invocation that has ended" in outcome, (name, outcome)
    assert used.value["crm.contacts"].startswith("HostCallError")
    assert used.value["fetch"].startswith("FetchError")
    assert calls == []  # nothing reached either invocation's callbacks
    assert used.log == "" and used.storage is None and used.fetches == []


def test_a_frame_with_another_invocations_identity_kills_the_worker(
    hostile: SandboxPool,
) -> None:
    calls: list[tuple[str, Any]] = []
    forged = hostile.run(invocation("forged_call", calls, "a"))
    assert forged.error is not None and forged.error.kind == "script_error"
    assert "invalid message" in forged.error.message
    assert calls == []  # refused, never answered
    assert hostile.wait_full(30)
    after = hostile.run(invocation("f", calls, "b"))
    assert after.ok and after.value == 1, after.error
    assert after.worker_pid != forged.worker_pid
    assert forged.worker_pid not in hostile.worker_pids()


def test_a_frame_after_the_end_of_an_invocation_kills_the_worker(hostile: SandboxPool) -> None:
    calls: list[tuple[str, Any]] = []
    late = hostile.run(invocation("late_frame", calls, "a"))
    assert late.ok and late.value == "early"
    assert hostile.wait_full(30)
    after = hostile.run(invocation("f", calls, "b"))
    assert after.ok and after.value == 1, after.error
    assert after.worker_pid != late.worker_pid
    assert late.worker_pid not in hostile.worker_pids()
    assert calls == []


def test_a_late_frame_that_reaches_the_next_invocation_reruns_it_on_a_fresh_worker(
    hostile: SandboxPool,
) -> None:
    calls: list[tuple[str, Any]] = []
    first = hostile.run(invocation("remember_token", calls, "a"))
    assert first.ok and first.value == "remembered"
    after = hostile.run(invocation("stale_then_run", calls, "b"))
    assert after.ok and after.value == 1, after.error
    assert after.worker_pid != first.worker_pid
    assert first.worker_pid not in hostile.worker_pids()
    assert calls == []


LEAVES_A_GENERATOR_CYCLE = """
def f(ids):
    def leftover():
        try:
            yield 1
        finally:
            found = crm.contacts(ids)
            log("leftover read " + ",".join([c["email"] for c in found]))
            storage.set("leftover", len(found))
            fetch("https://api.example.test/leftover")
    g = leftover()
    next(g)
    holder = [g]
    holder.append(holder)
    return "left"
"""

MAKES_GARBAGE = """
def f(ids):
    junk = []
    for i in range(30000):
        junk.append([i])
    junk = None
    return [c["email"] for c in crm.contacts(ids)]
"""


def test_leftovers_are_collected_in_their_own_invocation(hostile: SandboxPool) -> None:
    calls: list[tuple[str, Any]] = []
    a = hostile.run(invocation("f", calls, "a", LEAVES_A_GENERATOR_CYCLE, args=[["b-1"]]))
    assert a.ok, a.error
    b = hostile.run(invocation("f", calls, "b", MAKES_GARBAGE, args=[["b-1"]]))
    assert b.ok and b.value == ["b-1@b.test"], b.error
    assert a.worker_pid == b.worker_pid
    # the finalizer ran in A's window, with A's callbacks, and was charged to A
    assert calls == [("a", [["b-1"]]), ("b", [["b-1"]])]
    assert a.log == "leftover read b-1@a.test\n"
    assert a.storage == {"leftover": 1}
    assert [f.get("url") for f in a.fetches] == ["https://api.example.test/leftover"]
    assert b.log == "" and b.fetches == [] and b.storage is None


def test_the_request_id_travels_to_the_worker_and_back_unread(hostile: SandboxPool) -> None:
    calls: list[tuple[str, Any]] = []
    labelled = hostile.run(invocation("f", calls, "a", request_id="req-7Hq2"))
    assert labelled.ok and labelled.value == 1, labelled.error
    assert labelled.request_id == "req-7Hq2"
    assert labelled.as_dict()["request_id"] == "req-7Hq2"
    unlabelled = hostile.run(invocation("f", calls, "a"))
    assert unlabelled.ok and unlabelled.request_id == ""


def test_a_result_naming_another_request_id_kills_the_worker(hostile: SandboxPool) -> None:
    calls: list[tuple[str, Any]] = []
    forged = hostile.run(invocation("answer_other_request", calls, "a", request_id="req-mine"))
    assert not forged.ok and forged.value is None
    assert forged.error is not None and "invalid message" in forged.error.message
    assert forged.request_id == "req-mine"  # the parent's own copy labels the failure
    assert hostile.wait_full(30)
    after = hostile.run(invocation("f", calls, "b", request_id="req-next"))
    assert after.ok and after.value == 1 and after.request_id == "req-next", after.error
    assert forged.worker_pid not in hostile.worker_pids()
