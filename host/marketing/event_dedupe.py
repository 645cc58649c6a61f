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

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from host.db.models import WebhookEvent, utcnow

DUPLICATE_EVENT = "duplicate_event"
IN_CHUNK = 500


def claim_events(
    session: Session,
    tenant_id: str,
    module_id: str,
    event_ids: Iterable[str],
    window: timedelta,
    now: datetime | None = None,
) -> set[str]:
    """Record the ids among ``event_ids`` not applied within the window as applied now (an
    expired row of the same id is renewed), and return them: the events this webhook may
    apply; the others are repeats.

    One upsert per chunk rather than a read then a write, so two webhooks bringing the same
    id at the same moment cannot both take it: on PostgreSQL the second insert waits for the
    first one's transaction and, once it committed, finds the row (and claims the id if it
    rolled back); on SQLite the webhook's write transaction serialises them. Before this, the
    second webhook failed with a unique violation (a 500) and only the provider's retry was
    deduped."""
    now = now or utcnow()
    cutoff = now - window
    wanted = sorted(set(event_ids))
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    claimed: set[str] = set()
    for start in range(0, len(wanted), IN_CHUNK):
        rows = [
            {"tenant_id": tenant_id, "module_id": module_id, "event_id": e, "seen_at": now}
            for e in wanted[start : start + IN_CHUNK]
        ]
        statement = (
            upsert(WebhookEvent)
            .values(rows)
            .on_conflict_do_update(
                index_elements=["tenant_id", "module_id", "event_id"],
                set_={"seen_at": now},
                where=WebhookEvent.seen_at < cutoff,
            )
            .returning(WebhookEvent.event_id)
        )
        claimed.update(session.scalars(statement))
    return claimed
