"""The targets of webhook URLs, kept in memory, so that the hot path does not read the
database for every request: the tenant, the module's pinned version and its decrypted
settings behind each (tenant, module) and the URL's token.

Staleness is bounded, not avoided. A target read from the database is served for
``CRM_HOST_WEBHOOK_TARGET_CACHE_SECONDS`` (default 1 s), then read again; a change made
through this node (enable, disable, settings, version, token, tenant deletion) drops the
entry at once (:meth:`WebhookTargets.forget`). A change made on another node sharing the
database is therefore seen here within that time, whichever process made it (a CLI command,
another ``serve``), with nothing to subscribe to. On PostgreSQL, LISTEN/NOTIFY could
shorten it further; the bound holds without it.

Only what the database confirmed is kept — a live target, or a known URL whose module is
disabled — so the map is bounded by the real enablements (and by ``max_entries``, least
recently used first out); a guessed tenant or module reads the database each time, as
before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from host.tenants import RuntimeEnablement

Key = tuple[str, str]
"""(tenant id, module id)."""


@dataclass(frozen=True)
class CachedTarget:
    """What the database said about one webhook URL at ``read_at``: its token and, when
    the module is enabled and the tenant live, what to call (None: answer 404)."""

    token: str
    runtime: RuntimeEnablement | None
    read_at: float


class WebhookTargets:
    def __init__(
        self,
        max_age_s: float,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, CachedTarget] = OrderedDict()
        self._generation = 0

    def now(self) -> float:
        return self.clock()

    def fresh(self, key: Key) -> CachedTarget | None:
        """The entry of ``key`` if it was read less than ``max_age_s`` ago."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self.clock() - entry.read_at >= self.max_age_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def generation(self) -> int:
        """Taken before reading the database: :meth:`keep` ignores a read that a
        :meth:`forget` overtook, so a change made meanwhile is never hidden."""
        with self._lock:
            return self._generation

    def keep(self, key: Key, entry: CachedTarget, generation: int) -> None:
        if self.max_age_s <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, tenant_id: str, module_id: str | None = None) -> None:
        """Drop the tenant's entries (or one module's): called after a change committed."""
        with self._lock:
            self._generation += 1
            for key in [k for k in self._entries if k[0] == tenant_id]:
                if module_id is None or key[1] == module_id:
                    del self._entries[key]
