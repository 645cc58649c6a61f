"""What the campaign services need of a job engine: defer a campaign's job inside the
transaction that makes it runnable, and wake the runners once it committed.

A leaf module (it imports no service), so ``host.marketing`` depends on this interface and
the engines depend on ``host.marketing``, never the other way round."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session

FRESH_PRIORITY = 0
RESUMED_PRIORITY = 10
"""Jobs of campaigns that were already under way (an admin resolved their *needs attention*
flag, a crash or a shutdown interrupted them) go before fresh ones: their marketer is
already waiting and part of the audience may already be prepared in the service, so the
host finishes work it started before starting new work."""


class CampaignQueue(Protocol):
    """A job engine as the campaign services see it."""

    def defer(self, session: Session, campaign_id: str, tenant_id: str, *, resumed: bool) -> None:
        """Queue the campaign's job in ``session``'s transaction: it exists if and only if
        that transaction commits. At most one job of a campaign waits at a time."""

    def wake(self) -> None:
        """A campaign was queued and committed: runners of this process look now."""


class InProcessQueue:
    """SQLite: the runner's threads find runnable campaigns by their rows (the lease loop),
    so there is no job to store; a new campaign only wakes them."""

    def __init__(self, wake: Callable[[], None] = lambda: None):
        self._wake = wake

    def defer(self, session: Session, campaign_id: str, tenant_id: str, *, resumed: bool) -> None:
        return None

    def wake(self) -> None:
        self._wake()
