"""Limits per webhook URL, checked at the door before any thread or database work.

* **In flight**: one URL may have ``CRM_HOST_WEBHOOK_MAX_INFLIGHT`` requests in progress; the
  next one answers 503 with ``Retry-After`` at once, on the event loop. A tenant whose service
  floods its URL therefore holds a few threads of the webhook pool, never all of them, and
  other tenants' webhooks do not queue behind the flood. Counted per full URL (token
  included), so requests with a guessed tenant id and a wrong token cannot use up a real
  URL's allowance.
* **Rate** (optional, off by default): a token bucket per URL that is known to be valid
  (``CRM_HOST_WEBHOOK_RATE_PER_S`` refill, ``CRM_HOST_WEBHOOK_RATE_BURST`` size); an empty
  bucket answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from host.config import HostSettings
from host.errors import RateLimited, ServiceBusy

UrlKey = tuple[str, str, str]
"""(tenant id, module id, token) of a webhook URL."""


class WebhookGate:
    def __init__(self, settings: HostSettings):
        self.max_inflight = settings.webhook_max_inflight
        self.rate_per_s = settings.webhook_rate_per_s
        self.burst = settings.webhook_rate_burst
        self._lock = threading.Lock()
        self._inflight: dict[UrlKey, int] = {}
        self._buckets: dict[UrlKey, tuple[float, float]] = {}  # tokens, last refill

    @contextmanager
    def inflight(self, url: UrlKey) -> Iterator[None]:
        """Count the request as in progress on ``url``, or raise ServiceBusy (503)."""
        with self._lock:
            count = self._inflight.get(url, 0)
            if count >= self.max_inflight:
                raise ServiceBusy(
                    f"this webhook URL already has {count} requests in progress; retry later",
                    retry_after_s=1,
                )
            self._inflight[url] = count + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._inflight[url] - 1
                if left:
                    self._inflight[url] = left
                else:
                    del self._inflight[url]  # the map holds only URLs in use

    def take_token(self, url: UrlKey) -> None:
        """Spend one request of ``url``'s rate (a no-op when no rate is configured), or
        raise RateLimited (429). Call it only for a URL whose token was checked, so that the
        buckets are bounded by the number of real webhook URLs."""
        if self.rate_per_s is None:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(url, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
            if tokens < 1:
                self._buckets[url] = (tokens, now)
                wait = math.ceil((1 - tokens) / self.rate_per_s)
                raise RateLimited(
                    f"this webhook URL is limited to {self.rate_per_s:g} requests a second",
                    retry_after_s=max(1, wait),
                )
            self._buckets[url] = (tokens - 1, now)
