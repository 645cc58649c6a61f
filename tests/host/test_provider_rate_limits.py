"""The retry decision of a campaign batch that met a provider's rate limit: which failed calls
count as rate-limited, how long each ``Retry-After`` form (and SendGrid's ``X-RateLimit-Reset``)
asks to wait, and the per-wait and total bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from host.calls import ModuleResult
from host.errors import ModuleCallFailed, NotFound
from host.marketing.provider_rate_limits import (
    MIN_WAIT_S,
    ProviderRateLimit,
    RateLimitPolicy,
    asked_wait,
    decide,
    provider_rate_limit,
)

NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
POLICY = RateLimitPolicy(max_wait_s=120, max_total_s=600, default_wait_s=30)


def failed(*fetches: dict[str, Any], kind: str = "script_error") -> ModuleCallFailed:
    """A module call that failed after making ``fetches`` (its invocation's records)."""
    trace = ModuleResult(value=None, fetches=list(fetches))
    return ModuleCallFailed(kind, "RuntimeError: HTTP 429", module="m@1.0.0", trace=trace)


def throttled(host: str = "api.example.test", **headers: str) -> dict[str, Any]:
    record: dict[str, Any] = {"method": "PUT", "url": f"https://{host}/x", "host": host}
    record.update(status=429, bytes=0, ms=3.0, error=None, rate_limit=headers)
    return record


def ok_fetch() -> dict[str, Any]:
    return {"method": "GET", "url": "https://api.example.test/", "host": "api.example.test"} | {
        "status": 200
    }


@pytest.mark.parametrize(
    ("headers", "asked", "header"),
    [
        ({"retry-after": "7"}, 7.0, "retry-after"),
        ({"Retry-After": "0"}, 0.0, "retry-after"),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=45), usegmt=True)}, 45.0, None),
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) + 12)}, 12.0, "x-ratelimit-reset"),
        ({"x-ratelimit-reset": "20"}, 20.0, "x-ratelimit-reset"),  # a delay, not an epoch
        ({"ratelimit-reset": "9"}, 9.0, "ratelimit-reset"),
        # Retry-After wins over the vendor's reset when both are there
        ({"retry-after": "3", "x-ratelimit-reset": str(int(NOW.timestamp()) + 50)}, 3.0, None),
        # unusable values fall through to the next header, or to "not said"
        ({"retry-after": "soon", "x-ratelimit-reset": "4"}, 4.0, "x-ratelimit-reset"),
        ({"retry-after": "-5"}, None, None),
        ({"retry-after": "\u00b2"}, None, None),  # a digit to str.isdigit, not to HTTP
        ({"x-ratelimit-reset": "nan"}, None, None),
        ({"retry-after": "Tue, 32 Foo 2026 99:00:00"}, None, None),
        ({}, None, None),
    ],
)
def test_how_long_a_429_asks_to_wait(
    headers: dict[str, str], asked: float | None, header: str | None
) -> None:
    seconds, name = asked_wait(headers, NOW)
    assert seconds == (pytest.approx(asked) if asked is not None else None)
    if header is not None:
        assert name == header


def test_a_failed_call_with_a_429_is_rate_limited_by_the_longest_hint() -> None:
    error = failed(
        ok_fetch(),
        throttled(**{"retry-after": "5"}),
        throttled("mx.example.test", **{"retry-after": "40"}),
        throttled(),
    )
    limit = provider_rate_limit(error, NOW)
    assert limit == ProviderRateLimit("mx.example.test", 40.0, "retry-after")
    assert "mx.example.test answered 429" in limit.describe()


@pytest.mark.parametrize("kind", ["script_error", "timeout", "limit_exceeded"])
def test_failures_a_429_can_explain_are_retried(kind: str) -> None:
    assert provider_rate_limit(failed(throttled(), kind=kind), NOW) is not None


@pytest.mark.parametrize(
    "error",
    [
        failed(ok_fetch()),  # failed, but the service never said 429
        failed(),  # no fetch at all
        failed(throttled(), kind="invalid_return"),  # a module bug: waiting will not help
        failed(throttled(), kind="egress_denied"),
        ModuleCallFailed("script_error", "boom"),  # no trace
        NotFound("module m is not enabled"),
    ],
)
def test_other_failures_are_not_rate_limits(error: Any) -> None:
    assert provider_rate_limit(error, NOW) is None


def test_the_wait_is_what_was_asked_within_its_bounds() -> None:
    def wait(asked: float | None, waited: float = 0.0) -> float | None:
        return decide(ProviderRateLimit("h", asked, "retry-after"), waited, POLICY).wait_s

    assert wait(7) == 7
    assert wait(0) == MIN_WAIT_S  # never a tight loop
    assert wait(-3) == MIN_WAIT_S  # a reset already past
    assert wait(None) == 30  # no hint: the default
    assert wait(10_000) == 120  # one wait is capped
    assert wait(100, waited=500) == 100  # exactly at the total bound is still allowed


def test_past_the_total_bound_it_gives_up_naming_the_rate_limit() -> None:
    decision = decide(ProviderRateLimit("api.sendgrid.com", 60, "x-ratelimit-reset"), 580, POLICY)
    assert decision.wait_s is None
    assert "api.sendgrid.com answered 429 Too Many Requests" in decision.reason
    assert "at most 600 s in total" in decision.reason
    assert "CRM_HOST_CAMPAIGN_RATE_LIMIT_MAX_TOTAL_SECONDS" in decision.reason


def test_a_total_bound_of_zero_never_waits() -> None:
    never = RateLimitPolicy(max_total_s=0)
    assert decide(ProviderRateLimit("h", 1, "retry-after"), 0, never).wait_s is None
