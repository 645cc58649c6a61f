"""Failed console sign-ins, limited per account and per client address.

After ``per_account`` failures for one account within the window, further attempts for it
are refused — even with the right password — until the oldest failure leaves the window; a
client address gets ``per_address`` failures across all accounts (so guessing many accounts'
passwords from one place is slowed as well). Kept in the serving process's memory: each node
of a cluster counts on its own, which bounds guessing per node.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from host.errors import RateLimited

WINDOW_S = 15 * 60.0
MAX_TRACKED = 100_000
"""Keys kept at most; the oldest are dropped first, so a flood cannot exhaust memory."""


class SignInLimits:
    def __init__(
        self,
        *,
        per_account: int,
        per_address: int,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def check(self, account: str, address: str) -> None:
        """Raise :class:`RateLimited` when either key has used up its failures."""
        with self._lock:
            now = self._clock()
            for key, limit in (("account:" + account, self.per_account),
                               ("address:" + address, self.per_address)):  # fmt: skip
                failures = self._recent(key, now)
                if len(failures) >= limit:
                    wait = max(1, math.ceil(failures[0] + self.window_s - now))
                    raise RateLimited(
                        f"too many failed sign-ins; try again in {math.ceil(wait / 60)} minute(s)",
                        retry_after_s=wait,
                    )

    def failed(self, account: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            for key in ("account:" + account, "address:" + address):
                self._recent(key, now).append(now)
                self._failures[key] = self._failures.pop(key)  # newest last
            while len(self._failures) > MAX_TRACKED:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, account: str) -> None:
        """A right password clears the account's failures (not the address's)."""
        with self._lock:
            self._failures.pop("account:" + account, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures
