"""Background processing of acknowledge-first webhook requests, with retries.

A module whose manifest says ``"webhook": {"mode": "acknowledge-first"}`` serves a service
that gives up quickly or disables a hook after errors (Unisender waits 3 s). Its requests
are stored (``pending``) and answered 200 at once; these threads then run them through the
live path (:meth:`host.marketing.webhooks.WebhookReceiver.process_stored`). A failed run is
retried after ``retry_s``, doubling per attempt (capped at an hour), up to
``max_attempts`` runs; each run leaves its own receipt. Pending requests are stored, so a
host that restarts resumes them (:meth:`WebhookBacklog.start` is given the pending ids); a
run repeated by a crash between applying and clearing ``pending`` is harmless for actions
with an ``eventId`` (deduped) and for the idempotent ones.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

MAX_DELAY_S = 3600.0

ProcessStored = Callable[[int, bool], bool]
"""``(request_id, last_attempt) -> done``: run a stored request; False asks for a retry."""


class WebhookBacklog:
    """A delay queue of stored request ids served by ``workers`` daemon threads."""

    def __init__(self, process: ProcessStored, *, max_attempts: int, retry_s: float, workers: int):
        self.process = process
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        self.workers = workers
        self._queue: list[tuple[float, int, int, int]] = []  # (due, seq, request_id, attempt)
        self._seq = itertools.count()
        self._ready = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []

    def submit(self, request_id: int, attempt: int = 1, delay_s: float = 0.0) -> None:
        with self._ready:
            due = time.monotonic() + delay_s
            heapq.heappush(self._queue, (due, next(self._seq), request_id, attempt))
            self._ready.notify()

    def start(self, pending: Iterable[int] = ()) -> None:
        """Start the threads (idempotent), first queueing ``pending`` (a restart's backlog)."""
        for request_id in pending:
            self.submit(request_id)
        with self._ready:
            if self._threads:
                return
            self._stop = False
            self._threads = [
                threading.Thread(target=self._run, name=f"crm-host-webhooks-{n}", daemon=True)
                for n in range(self.workers)
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; what is queued stays pending in the database."""
        with self._ready:
            self._stop = True
            self._queue.clear()
            self._ready.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)

    def _next(self) -> tuple[int, int] | None:
        with self._ready:
            while not self._stop:
                if self._queue:
                    wait = self._queue[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, request_id, attempt = heapq.heappop(self._queue)
                        return request_id, attempt
                    self._ready.wait(wait)
                else:
                    self._ready.wait()
            return None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            request_id, attempt = job
            last = attempt >= self.max_attempts
            try:
                done = self.process(request_id, last)
            except Exception:  # one broken request must not stop the others
                log.exception("processing stored webhook request %s failed", request_id)
                done = last
            if not done and not last:
                delay = min(self.retry_s * 2 ** (attempt - 1), MAX_DELAY_S)
                self.submit(request_id, attempt + 1, delay)
