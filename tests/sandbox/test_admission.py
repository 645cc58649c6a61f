"""The fair admission scheduler: caps per key and group, round-robin between groups, a
bounded queue and a wait deadline. Waiters are real threads; every step waits for the
scheduler's own state (no sleeps, no timing assertions)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from sandbox.admission import AdmissionRefused, FairAdmission

LIVENESS_S = 10.0


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + LIVENESS_S
    while not condition():
        assert time.monotonic() < deadline, "the scheduler did not get there"
        time.sleep(0.005)


class Waiter:
    """A thread that asks for a slot, records the grant in ``order`` and holds the slot
    until released."""

    def __init__(self, admission: FairAdmission, group: str, key: str, order: list[str]):
        self.name = f"{group}/{key}"
        self.release = threading.Event()
        self.refused: AdmissionRefused | None = None
        self.thread = threading.Thread(target=self._run, args=(admission, group, key, order))
        self.thread.start()

    def _run(self, admission: FairAdmission, group: str, key: str, order: list[str]) -> None:
        try:
            with admission.admitted(group, key, wait_s=LIVENESS_S):
                order.append(self.name)
                self.release.wait(LIVENESS_S)
        except AdmissionRefused as refused:
            self.refused = refused

    def finish(self) -> None:
        self.release.set()
        self.thread.join(LIVENESS_S)


def waiting(admission: FairAdmission, group: str) -> int:
    return admission.snapshot().get(group, {}).get("waiting", 0)


@contextmanager
def waiters() -> Iterator[list[Waiter]]:
    started: list[Waiter] = []
    try:
        yield started
    finally:
        for waiter in started:
            waiter.release.set()
        for waiter in started:
            waiter.finish()


def test_key_cap_refuses_a_second_call_of_the_same_key_but_not_another_key() -> None:
    admission = FairAdmission(4, group_cap=4, key_cap=1)
    with admission.admitted("t1", "m1"):
        with pytest.raises(AdmissionRefused) as refused:
            admission.acquire("t1", "m1", wait_s=0)
        assert refused.value.reason == "deadline"
        assert refused.value.retry_after_s >= 1
        assert admission.refusals() == {"deadline": 1}
        with admission.admitted("t1", "m2"):
            assert admission.snapshot()["t1"] == {"running": 2, "waiting": 0}
    assert admission.snapshot() == {}


def test_group_cap_and_slots_are_enforced_and_a_per_group_cap_overrides() -> None:
    admission = FairAdmission(3, group_cap=2, key_cap=5, group_caps={"admin": 1})
    with admission.admitted("t1", "a"), admission.admitted("t1", "b"):
        with pytest.raises(AdmissionRefused):
            admission.acquire("t1", "c", wait_s=0)
        with admission.admitted("admin", "x"):
            with pytest.raises(AdmissionRefused):
                admission.acquire("admin", "y", wait_s=0)
            with pytest.raises(AdmissionRefused):  # all three slots are taken
                admission.acquire("t2", "z", wait_s=0)
        with admission.admitted("t2", "z"):
            pass


def test_a_refused_wait_leaves_no_trace_and_a_slot_is_released_on_error() -> None:
    admission = FairAdmission(1, group_cap=1, key_cap=1)
    with pytest.raises(RuntimeError), admission.admitted("t1", "a"):
        raise RuntimeError("the body failed")
    with admission.admitted("t1", "a"):
        with pytest.raises(AdmissionRefused):
            admission.acquire("t2", "b", wait_s=0.01)
        assert "t2" not in admission.snapshot()
    assert admission.snapshot() == {}


def test_groups_are_served_round_robin_not_in_arrival_order() -> None:
    admission = FairAdmission(1, group_cap=1, key_cap=1)
    order: list[str] = []
    with waiters() as started:
        first = Waiter(admission, "flood", "m0", order)
        started.append(first)
        wait_until(lambda: order == ["flood/m0"])
        for index in range(1, 4):  # the flood queues three more calls first
            started.append(Waiter(admission, "flood", f"m{index}", order))
            wait_until(lambda index=index: waiting(admission, "flood") == index)
        quiet = Waiter(admission, "quiet", "m", order)
        started.append(quiet)
        wait_until(lambda: waiting(admission, "quiet") == 1)
        first.finish()
        wait_until(lambda: len(order) == 2)
        flood_next = next(w for w in started if w.name == "flood/m1")
        # the flood's next call was queued before the quiet group's, but the flood was
        # served last: the quiet group goes first
        assert order[1] == "quiet/m"
        quiet.finish()
        wait_until(lambda: len(order) == 3)
        assert order[2] == "flood/m1"  # FIFO within the group
        flood_next.finish()


def test_a_waiter_whose_key_is_at_its_cap_does_not_block_its_group() -> None:
    admission = FairAdmission(2, group_cap=2, key_cap=1)
    order: list[str] = []
    with waiters() as started:
        started.append(Waiter(admission, "t1", "busy", order))
        wait_until(lambda: order == ["t1/busy"])
        started.append(Waiter(admission, "t1", "busy", order))  # over its key cap: waits
        wait_until(lambda: waiting(admission, "t1") == 1)
        started.append(Waiter(admission, "t1", "other", order))
        wait_until(lambda: order == ["t1/busy", "t1/other"])
        assert waiting(admission, "t1") == 1


def test_a_full_queue_refuses_at_once() -> None:
    admission = FairAdmission(1, group_cap=1, key_cap=1, max_waiting_per_group=1)
    order: list[str] = []
    with waiters() as started:
        started.append(Waiter(admission, "t1", "a", order))
        wait_until(lambda: order == ["t1/a"])
        started.append(Waiter(admission, "t1", "a", order))
        wait_until(lambda: waiting(admission, "t1") == 1)
        with pytest.raises(AdmissionRefused) as refused:
            admission.acquire("t1", "a", wait_s=LIVENESS_S)  # would wait long; refused now
        assert refused.value.reason == "queue_full"
        assert admission.refusals() == {"queue_full": 1}
        started.append(Waiter(admission, "t2", "b", order))  # another group still queues
        wait_until(lambda: waiting(admission, "t2") == 1)


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        FairAdmission(0, group_cap=1, key_cap=1)
    with pytest.raises(ValueError):
        FairAdmission(1, group_cap=1, key_cap=1, wait_s=-1)
