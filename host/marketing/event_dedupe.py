"""Provider event ids: the first occurrence of an event applies all of its actions, a
repeat within the window applies none of them.

Services deliver at least once (SendGrid retries a whole batch for up to 72 hours when a
request failed or timed out), and an event's actions are not always idempotent by
themselves (a SendEmail, a Resubscribe after a later Unsubscribe). So a module may give
each action the provider's event id (``eventId``); the host keeps (tenant, module, event
id) in ``webhook_events`` for ``CRM_HOST_WEBHOOK_EVENT_WINDOW_DAYS`` (the retention purge
deletes older rows). The rows are written in the webhook's own transaction, so an event
whose request failed is not remembered and its retry applies it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from host.db.models import WebhookEvent, utcnow

DUPLICATE_EVENT = "duplicate_event"
IN_CHUNK = 500


def repeated_events(
    session: Session,
    tenant_id: str,
    module_id: str,
    event_ids: Iterable[str],
    window: timedelta,
    now: datetime | None = None,
) -> set[str]:
    """The ids among ``event_ids`` already applied within the window."""
    cutoff = (now or utcnow()) - window
    wanted = sorted(set(event_ids))
    seen: set[str] = set()
    for start in range(0, len(wanted), IN_CHUNK):
        seen.update(
            session.scalars(
                select(WebhookEvent.event_id).where(
                    WebhookEvent.tenant_id == tenant_id,
                    WebhookEvent.module_id == module_id,
                    WebhookEvent.event_id.in_(wanted[start : start + IN_CHUNK]),
                    WebhookEvent.seen_at >= cutoff,
                )
            )
        )
    return seen


def remember_events(
    session: Session, tenant_id: str, module_id: str, event_ids: Sequence[str]
) -> None:
    """Record ``event_ids`` as applied now (an expired row of the same id is renewed)."""
    now = utcnow()
    for event_id in dict.fromkeys(event_ids):
        session.merge(
            WebhookEvent(tenant_id=tenant_id, module_id=module_id, event_id=event_id, seen_at=now)
        )
