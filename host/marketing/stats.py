"""Campaign stats: GetCampaignStats through the module, cached on the campaign row.

Stats pages are viewed far more often than numbers change, and every call costs a sandbox
run plus a request to the service, so a value is reused for ``ttl`` seconds. When the module
fails, the last value is still the best answer: it is served marked ``stale`` with the error,
and the module is not asked again before another ``ttl`` has passed (a failing service is
not hammered by every page view); only when nothing was ever fetched does the error itself
surface. Webhook actions
(UpdateCampaignStats) may write the same cache; whichever is newer wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from host.contract.types import CampaignStats
from host.db.engine import Database
from host.db.models import Campaign, utcnow
from host.errors import Conflict, HostError, ModuleCallFailed, NotFound, ServiceBusy
from host.invoker import ModuleInvoker


@dataclass(frozen=True)
class StatsView:
    """What a stats page shows: the values (None when the first fetch failed), when they were
    fetched, and whether they are stale (the module failed since) with that error."""

    values: dict[str, int] | None
    fetched_at: datetime | None
    stale: bool
    error: str | None


class StatsService:
    def __init__(self, db: Database, invoker: ModuleInvoker, *, ttl_seconds: float = 60.0):
        self.db = db
        self.invoker = invoker
        self.ttl = timedelta(seconds=ttl_seconds)
        self._failed_at: dict[str, datetime] = {}

    def get(self, tenant_id: str, campaign_id: str, *, refresh: bool = False) -> StatsView:
        """Cached while fresh, else fetched; on a
        module error the cached value marked stale; with no cached value, the error raises
        (ModuleCallFailed). ``refresh`` ignores the TTL."""
        with self.db.transaction() as session:
            row = session.get(Campaign, campaign_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"campaign {campaign_id} does not exist")
            if not row.external_id:
                raise Conflict(f"campaign {campaign_id} does not exist in the service yet")
            module_id, external_id = row.module_id, row.external_id
            version = row.module_version
            cached, fetched_at = row.stats, row.stats_fetched_at
            stale, error = row.stats_stale, row.stats_error
        now = utcnow()
        if cached is not None and fetched_at and not refresh:
            if now - fetched_at < self.ttl:
                return _view(cached, fetched_at, stale, error)
            failed_at = self._failed_at.get(campaign_id)
            if failed_at is not None and now - failed_at < self.ttl:
                return _view(cached, fetched_at, True, error)
        try:
            stats = self.invoker.call(
                tenant_id,
                module_id,
                "CRM_Marketing_GetCampaignStats",
                version=version,
                campaignExternalId=external_id,
            )
        except ServiceBusy:
            # the module did not run (its tenant's share is full): serve what is cached,
            # marked stale, without recording a module failure
            if cached is None:
                raise
            return _view(cached, fetched_at, True, error)
        except ModuleCallFailed as exc:
            if cached is None:
                raise
            message = f"{exc.kind}: {exc.message}"
            self._forget_failures_before(now - self.ttl)
            self._failed_at[campaign_id] = now
            self._store(campaign_id, stats_stale=True, stats_error=message)
            return _view(cached, fetched_at, True, message)
        assert isinstance(stats, CampaignStats)
        values = stats.model_dump()
        self._failed_at.pop(campaign_id, None)
        self._store(
            campaign_id, stats=values, stats_fetched_at=now, stats_stale=False, stats_error=None
        )
        return _view(values, now, False, None)

    def view(self, tenant_id: str, campaign_id: str) -> StatsView | None:
        """What ``GET campaign`` embeds: None before the campaign exists in the service; an
        error with no values when the first fetch fails (the campaign itself still shows)."""
        try:
            return self.get(tenant_id, campaign_id)
        except Conflict:
            return None
        except HostError as exc:
            error = f"{exc.kind}: {exc.message}"
            return StatsView(values=None, fetched_at=None, stale=True, error=error)

    def _forget_failures_before(self, cutoff: datetime) -> None:
        for campaign_id, failed_at in list(self._failed_at.items()):
            if failed_at < cutoff:
                del self._failed_at[campaign_id]

    def _store(self, campaign_id: str, **values: Any) -> None:
        with self.db.transaction() as session:
            session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))


def _view(
    values: dict[str, Any], fetched_at: datetime | None, stale: bool, error: str | None
) -> StatsView:
    return StatsView(values=values, fetched_at=fetched_at, stale=stale, error=error)
