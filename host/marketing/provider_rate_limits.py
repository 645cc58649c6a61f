"""Provider rate limits seen by a campaign batch: is a failed call worth waiting for, and
for how long.

A module's ``fetch()`` records every response; for a ``429 Too Many Requests`` the record
also keeps the response's rate-limit headers (:class:`sandbox.fetch.FetchRecord`). When a
batch call of a campaign job fails and its own fetch records show a 429, the service asked
the tenant to slow down — the batch is not wrong, it is early. The job then waits what the
service asked (bounded, see :class:`RateLimitPolicy`) and calls the same batch again, instead
of failing the whole campaign (:meth:`host.marketing.campaign_job.CampaignJob._call`).

How long the service asked, from the first header present (per 429 record; the longest of the
invocation's 429s wins, since every one of them must have passed):

* ``Retry-After`` — delay seconds or an HTTP-date (RFC 9110 §10.2.3);
* ``X-RateLimit-Reset`` — SendGrid's (and GitHub's) epoch seconds of the window's reset;
  small values are taken as seconds from now, as some vendors send them;
* ``RateLimit-Reset`` — seconds from now (the IETF RateLimit header fields draft).

No usable header: the policy's default wait. A wait never drops below :data:`MIN_WAIT_S`,
so ``Retry-After: 0`` or a reset already past cannot spin the job in a tight loop.

A call that *succeeded* is never second-guessed: a module that handles a 429 itself (waits
inside its time limit and retries, or gives up on an optional request) gets what it
returned. Only a failure of one of :data:`RETRIED_KINDS` counts — a module bug (invalid
return, egress denied, ...) is not made better by waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from host.calls import ModuleResult
from host.errors import HostError, ModuleCallFailed

TOO_MANY_REQUESTS = 429
MIN_WAIT_S = 1.0
"""The shortest wait: a hint of 0 (or a reset already past) still waits this long."""
RETRIED_KINDS = frozenset({"script_error", "timeout", "limit_exceeded"})
"""Failure kinds a 429 can explain: the module raised on it, or retried until its time or
fetch limit ran out."""
EPOCH_THRESHOLD_S = 1_000_000_000
"""An ``X-RateLimit-Reset`` at least this large is an epoch time (2001-09-09 onwards), a
smaller one a number of seconds from now."""
HINT_HEADERS = ("retry-after", "x-ratelimit-reset", "ratelimit-reset")
"""The response headers that say how long to wait, in the order they are trusted."""


class ProviderRateLimitExceeded(HostError):
    """A campaign's rate-limit waits would pass their total bound: it fails with this."""

    kind = "rate_limited"


@dataclass(frozen=True)
class RateLimitPolicy:
    """How long a campaign job may wait for a provider's rate limit (CRM_HOST_CAMPAIGN_RATE_
    LIMIT_* settings): ``max_wait_s`` caps one wait, ``max_total_s`` all of one campaign's
    waits together (past it the campaign fails as before, naming the rate limit), and
    ``default_wait_s`` is the wait for a 429 that gives no hint. ``max_total_s = 0`` turns
    waiting off."""

    max_wait_s: float = 300.0
    max_total_s: float = 3600.0
    default_wait_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> RateLimitPolicy:
        return cls(
            max_wait_s=settings.campaign_rate_limit_max_wait_seconds,
            max_total_s=settings.campaign_rate_limit_max_total_seconds,
            default_wait_s=settings.campaign_rate_limit_default_wait_seconds,
        )


@dataclass(frozen=True)
class ProviderRateLimit:
    """A failed call's 429: which host answered it, how long it asked to wait (seconds,
    uncapped; None: it did not say) and which header said so."""

    host: str
    asked_s: float | None
    header: str | None

    def describe(self) -> str:
        if self.asked_s is None:
            return f"{self.host} answered 429 Too Many Requests"
        return (
            f"{self.host} answered 429 Too Many Requests "
            f"({self.header}: retry in {math.ceil(self.asked_s)} s)"
        )


@dataclass(frozen=True)
class RateLimitDecision:
    """Wait ``wait_s`` and call again, or (``wait_s`` None) give up with ``reason``."""

    wait_s: float | None
    reason: str


def retry_after_seconds(value: str, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP-date; None when it
    is neither."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP-date is GMT by definition
        return None
    return (moment - now).total_seconds()


def reset_seconds(value: str, now: datetime) -> float | None:
    """``X-RateLimit-Reset`` / ``RateLimit-Reset`` as seconds from ``now``: an epoch time
    (SendGrid) or, when small, a delay in seconds; None when it is not a number."""
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number >= EPOCH_THRESHOLD_S:
        return number - now.timestamp()
    return number


_PARSERS = {
    "retry-after": retry_after_seconds,
    "x-ratelimit-reset": reset_seconds,
    "ratelimit-reset": reset_seconds,
}


def asked_wait(headers: dict[str, Any], now: datetime) -> tuple[float | None, str | None]:
    """How long one 429 response asked to wait, and the header that said it."""
    folded = {str(k).lower(): str(v) for k, v in headers.items()}
    for name in HINT_HEADERS:
        if name in folded and (seconds := _PARSERS[name](folded[name], now)) is not None:
            return seconds, name
    return None, None


def provider_rate_limit(error: HostError, now: datetime) -> ProviderRateLimit | None:
    """The rate limit ``error`` (a failed module call) ran into, from the call's own fetch
    records; None when it failed for another reason."""
    if not isinstance(error, ModuleCallFailed) or error.kind not in RETRIED_KINDS:
        return None
    trace = error.trace
    if not isinstance(trace, ModuleResult):
        return None
    found: ProviderRateLimit | None = None
    for record in trace.fetches:
        if record.get("status") != TOO_MANY_REQUESTS:
            continue
        asked, header = asked_wait(record.get("rate_limit") or {}, now)
        host = str(record.get("host") or "the service")
        if found is None or (asked is not None and (found.asked_s or 0) < asked):
            found = ProviderRateLimit(host, asked, header)
    return found


def decide(limit: ProviderRateLimit, waited_s: float, policy: RateLimitPolicy) -> RateLimitDecision:
    """Wait what ``limit`` asked — at least :data:`MIN_WAIT_S`, at most ``max_wait_s`` —
    unless that wait would take the campaign's waits (``waited_s`` so far) past
    ``max_total_s``: then give up."""
    asked = limit.asked_s if limit.asked_s is not None else policy.default_wait_s
    wait = min(max(asked, MIN_WAIT_S), policy.max_wait_s)
    if waited_s + wait > policy.max_total_s:
        return RateLimitDecision(
            None,
            f"{limit.describe()}; the campaign already waited {math.ceil(waited_s)} s for "
            f"rate limits and may wait at most {policy.max_total_s:g} s in total "
            "(CRM_HOST_CAMPAIGN_RATE_LIMIT_MAX_TOTAL_SECONDS)",
        )
    return RateLimitDecision(wait, f"{limit.describe()}; waiting {math.ceil(wait)} s")
