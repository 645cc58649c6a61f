"""The metrics a Host counts as things happen, in a registry of its own.

Every Host owns one :class:`~prometheus_client.CollectorRegistry`, so several hosts in one
process (tests, an embedding application) never share or collide on a series; nothing is
registered in prometheus-client's global registry.

**Labels and their cardinality.** A platform may host 10,000s of (tenant, module) pairs, and
Prometheus keeps one series per label combination, so no metric has a tenant label: per-tenant
detail is what the invocation log and the receipts API are for. The labels used are bounded
by what the platform admin controls or the code defines: ``module`` (module ids: uploaded by
the admin only), ``function`` (the contract's functions), ``outcome``/``kind`` (the SPEC's
failure kinds), ``host`` (a manifest's egress entry, see :mod:`host.metrics.fetch_hosts`),
``status`` (an HTTP status code or a campaign status). Durations are labelled by function
and outcome only, not by module: a histogram is a dozen series per label combination.
No label value is taken from a tenant's settings, so no secret can reach a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector

from host.contract.enums import CampaignStatus
from host.metrics.fetch_hosts import fetch_host_label

OK_KIND = "none"
"""The ``kind`` of an invocation that succeeded."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; up to past the default wall-time limit (10 s)."""

_CAMPAIGN_STATUSES = frozenset(status.value for status in CampaignStatus)


class HostMetrics:
    """The host's counters and histograms, and the registry ``GET /metrics`` exposes
    (the gauges read at scrape time are collectors registered beside them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "crm_host_invocations",
            "Module function calls that reached the plugins, by module, function, outcome "
            "(ok, failed, refused) and failure kind (none when ok).",
            ["module", "function", "outcome", "kind"],
            registry=self.registry,
        )
        self.invocation_seconds = Histogram(
            "crm_host_invocation_duration_seconds",
            "Wall time of module function calls, by function and outcome.",
            ["function", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.fetches = Counter(
            "crm_host_fetches",
            "fetch() requests of modules (each redirect hop counts), by egress entry and "
            "HTTP status (error: no response, e.g. denied or timed out).",
            ["host", "status"],
            registry=self.registry,
        )
        self.webhook_receipts = Counter(
            "crm_host_webhook_receipts",
            "Webhook receipts recorded, by the HTTP status answered for them.",
            ["status"],
            registry=self.registry,
        )
        self.campaign_status_changes = Counter(
            "crm_host_campaign_status_changes",
            "Campaign status changes, by the new status.",
            ["status"],
            registry=self.registry,
        )

    def register(self, collectors: Iterable[Collector]) -> None:
        for collector in collectors:
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (collectors run now)."""
        return generate_latest(self.registry)

    # --- what happened -------------------------------------------------------------------

    def observe_call(
        self,
        *,
        module: str,
        function: str,
        outcome: str,
        kind: str,
        seconds: float,
        fetches: Sequence[dict[str, Any]] = (),
        egress: Sequence[str] = (),
    ) -> None:
        """One module call ended; ``fetches`` are its fetch records, ``egress`` the
        manifest's entries that label them."""
        self.invocations.labels(module, function, outcome, kind).inc()
        self.invocation_seconds.labels(function, outcome).observe(max(0.0, seconds))
        for record in fetches:
            status = record.get("status")
            self.fetches.labels(
                fetch_host_label(record.get("host"), egress),
                str(status) if isinstance(status, int) and 100 <= status <= 599 else "error",
            ).inc()

    def count_receipt(self, status_code: int) -> None:
        self.webhook_receipts.labels(str(status_code)).inc()

    def count_campaign_status(self, status: str) -> None:
        self.campaign_status_changes.labels(
            status if status in _CAMPAIGN_STATUSES else "other"
        ).inc()
