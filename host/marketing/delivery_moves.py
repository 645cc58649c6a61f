"""Moving a delivery's status forward safely when webhooks for one recipient arrive at once
(two nodes, the same batch posted twice, two different events together).

Two guards, for both databases:

* The rows a batch touches are read **locked** in a fixed order (``SELECT ... FOR UPDATE``
  ordered by primary key; on SQLite the batch's transaction holds the write lock from its
  start, :meth:`host.db.engine.Database.write_transaction`), so what a batch decides from is
  current and a concurrent batch waits for it instead of deciding from the same old status.
* The UPDATE itself is **conditional**: it moves the row only while its stored status ranks
  below the new one (:data:`host.marketing.lifecycle.DELIVERY_RANK`, as SQL), so no
  interleaving can ever move a status back, and its row count tells whether this batch
  moved it: what the receipt reports as applied is what happened.

Plain SQL rather than ORM objects: a webhook touches a handful of rows and this is its
hottest path.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, select, update
from sqlalchemy.orm import Session

from host.db.models import Delivery
from host.marketing.lifecycle import DELIVERY_RANK

STATUS_RANK: ColumnElement[int] = case(DELIVERY_RANK, value=Delivery.status, else_=-1)
"""``deliveries.status`` as its rank, in SQL."""


@dataclass
class DeliveryRow:
    """One recipient of a campaign as a batch sees it (kept current as the batch moves it)."""

    campaign_id: str
    contact_id: str
    email_key: str
    status: str
    history: list[Any]


def locked_deliveries(
    session: Session, campaign_ids: Collection[str], email_keys: Collection[str]
) -> list[DeliveryRow]:
    """The deliveries of ``campaign_ids`` to ``email_keys``, locked for this transaction in
    primary-key order (concurrent batches lock in the same order: no deadlock)."""
    rows = session.execute(
        select(
            Delivery.campaign_id,
            Delivery.contact_id,
            Delivery.email_key,
            Delivery.status,
            Delivery.history,
        )
        .where(Delivery.campaign_id.in_(campaign_ids), Delivery.email_key.in_(email_keys))
        .order_by(Delivery.campaign_id, Delivery.contact_id)
        .with_for_update()
    )
    return [
        DeliveryRow(campaign_id, contact_id, str(key), status, list(history or []))
        for campaign_id, contact_id, key, status, history in rows
    ]


def move_forward(session: Session, row: DeliveryRow, status: str, at: datetime) -> bool:
    """Set ``row`` to ``status`` if that is forward of what is stored now; whether it moved."""
    history = [*row.history, {"status": status, "at": at.isoformat()}]
    moved = session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id == row.campaign_id,
            Delivery.contact_id == row.contact_id,
            DELIVERY_RANK[status] > STATUS_RANK,
        )
        .values(status=status, history=history, updated_at=at)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if moved:
        row.status, row.history = status, history
    return bool(moved)
