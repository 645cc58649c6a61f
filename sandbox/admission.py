"""Fair admission in front of a shared pool of execution slots.

A caller asks to run under an opaque *share key* that belongs to a *group*. The scheduler
grants at most ``slots`` runs at once, at most ``group_cap`` per group (overridable per
group) and at most ``key_cap`` per key. Callers that cannot run at once wait in their
group's FIFO queue; when a slot frees, groups are served round-robin: the waiting group that
was served least recently goes first, so one group that queues a hundred calls delays another
group's single call by at most one turn, not by a hundred.

Waiting is bounded twice: a group's queue holds at most ``max_waiting_per_group`` callers
(the next one is refused at once, so a flood does not pin a thread per request), and every
wait ends at a deadline. Both refusals raise :class:`AdmissionRefused`, which carries a
retry-after hint for the caller's client.

The scheduler knows nothing about what the groups and keys mean: the caller maps its own
notions (tenants, modules, admin work) onto them.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

RefusalReason = Literal["deadline", "queue_full"]


class AdmissionRefused(Exception):
    """No slot could be granted: the group's queue was full, or the wait hit its deadline.
    ``retry_after_s`` is a whole number of seconds a client should wait before retrying."""

    def __init__(self, group: str, reason: RefusalReason, retry_after_s: int):
        what = "too many calls are waiting" if reason == "queue_full" else "no slot in time"
        super().__init__(f"{what} (share {group})")
        self.group = group
        self.reason: RefusalReason = reason
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Waiter:
    key: Hashable
    granted: bool = False
    event: threading.Event = field(default_factory=threading.Event)


class FairAdmission:
    """Per-key and per-group caps over ``slots`` shared slots, FIFO within a group and
    round-robin between groups, with a wait deadline (``wait_s``, per call overridable)."""

    def __init__(
        self,
        slots: int,
        *,
        group_cap: int,
        key_cap: int,
        wait_s: float = 1.0,
        max_waiting_per_group: int = 8,
        group_caps: Mapping[str, int] | None = None,
    ):
        if min(slots, group_cap, key_cap) < 1:
            raise ValueError("slots and caps must be at least 1")
        if wait_s < 0 or max_waiting_per_group < 0:
            raise ValueError("wait_s and max_waiting_per_group must not be negative")
        self.slots = slots
        self.group_cap = group_cap
        self.key_cap = key_cap
        self.wait_s = wait_s
        self.max_waiting_per_group = max_waiting_per_group
        self.group_caps = dict(group_caps or {})
        self._lock = threading.Lock()
        self._running = 0
        self._running_group: Counter[str] = Counter()
        self._running_key: Counter[Hashable] = Counter()
        self._queues: dict[str, deque[_Waiter]] = {}
        self._grants = 0
        self._last_served: dict[str, int] = {}  # group -> grant number, while it is active
        self._refused: Counter[RefusalReason] = Counter()

    @contextmanager
    def admitted(self, group: str, key: Hashable, *, wait_s: float | None = None) -> Iterator[None]:
        """Hold one slot for the body of the ``with``; raises AdmissionRefused instead of
        waiting past the deadline."""
        self.acquire(group, key, wait_s=wait_s)
        try:
            yield
        finally:
            self.release(group, key)

    def acquire(self, group: str, key: Hashable, *, wait_s: float | None = None) -> None:
        timeout = self.wait_s if wait_s is None else wait_s
        waiter = _Waiter(key)
        with self._lock:
            queue = self._queues.get(group)
            if queue is not None and len(queue) >= self.max_waiting_per_group:
                self._refused["queue_full"] += 1
                raise AdmissionRefused(group, "queue_full", self._retry_after(timeout))
            if queue is None:
                queue = self._queues[group] = deque()
            queue.append(waiter)
            self._dispatch_locked()
        if not waiter.granted:
            waiter.event.wait(timeout)
        with self._lock:
            if waiter.granted:  # a grant that raced the timeout still counts
                return
            self._forget_locked(group, waiter)
            self._refused["deadline"] += 1
        raise AdmissionRefused(group, "deadline", self._retry_after(timeout))

    def release(self, group: str, key: Hashable) -> None:
        with self._lock:
            self._running -= 1
            self._running_group[group] -= 1
            if not self._running_group[group]:
                del self._running_group[group]
            self._running_key[key] -= 1
            if not self._running_key[key]:
                del self._running_key[key]
            self._dispatch_locked()
            self._forget_idle_locked(group)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Running and waiting calls per group (for metrics and diagnostics)."""
        with self._lock:
            groups = set(self._running_group) | set(self._queues)
            return {
                g: {"running": self._running_group[g], "waiting": len(self._queues.get(g, ()))}
                for g in sorted(groups)
            }

    def refusals(self) -> dict[RefusalReason, int]:
        """Calls refused since start, by reason (for metrics)."""
        with self._lock:
            return dict(self._refused)

    # -- internals (called with the lock held) ---------------------------------------------

    def _cap(self, group: str) -> int:
        return self.group_caps.get(group, self.group_cap)

    def _dispatch_locked(self) -> None:
        """Grant slots while any are free: each time to the first waiter that its caps
        allow, of the least recently served group that has one."""
        while self._running < self.slots:
            candidates = [
                (self._last_served.get(group, -1), group, waiter)
                for group in self._queues
                if (waiter := self._eligible(group)) is not None
            ]
            if not candidates:
                return
            _, group, waiter = min(candidates, key=lambda c: c[0])
            self._queues[group].remove(waiter)
            if not self._queues[group]:
                del self._queues[group]
            self._grants += 1
            self._last_served[group] = self._grants
            self._running += 1
            self._running_group[group] += 1
            self._running_key[waiter.key] += 1
            waiter.granted = True
            waiter.event.set()

    def _eligible(self, group: str) -> _Waiter | None:
        if self._running_group[group] >= self._cap(group):
            return None
        for waiter in self._queues[group]:
            if self._running_key[waiter.key] < self.key_cap:
                return waiter
        return None

    def _forget_locked(self, group: str, waiter: _Waiter) -> None:
        queue = self._queues[group]
        queue.remove(waiter)
        if not queue:
            del self._queues[group]
        self._forget_idle_locked(group)

    def _forget_idle_locked(self, group: str) -> None:
        """A group with nothing running or waiting is forgotten (the maps stay bounded by
        the active groups); one that keeps calls running keeps its place in the turn."""
        if group not in self._queues and not self._running_group[group]:
            self._last_served.pop(group, None)

    def _retry_after(self, timeout: float) -> int:
        """A hint, not a promise: about one deadline from now a slot has usually turned over."""
        return max(1, math.ceil(timeout))
