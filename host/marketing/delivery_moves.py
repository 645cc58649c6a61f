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

from sqlalchemy import ColumnElement, Table, Update, bindparam, literal_column, select, update
from sqlalchemy.orm import Session

from host.db.models import Delivery
from host.marketing.lifecycle import DELIVERY_RANK

DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
STATUS_RANK: ColumnElement[int] = literal_column(
    "CASE status "
    + " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in DELIVERY_RANK.items())
    + " ELSE -1 END"
)
"""``deliveries.status`` as its rank, in SQL (built from the fixed rank table, no input)."""


def _forward_update(status: str) -> Update:
    return (
        update(DELIVERIES)
        .where(
            DELIVERIES.c.campaign_id == bindparam("row_campaign"),
            DELIVERIES.c.contact_id == bindparam("row_contact"),
            literal_column(str(DELIVERY_RANK[status])) > STATUS_RANK,
        )
        .values(status=status, history=bindparam("new_history"), updated_at=bindparam("at"))
    )


FORWARD_UPDATES = {status: _forward_update(status) for status in DELIVERY_RANK}
"""One statement per target status, so each compiles once (plain Core, no ORM bookkeeping)."""


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
    c = DELIVERIES.c
    rows = session.execute(
        select(c.campaign_id, c.contact_id, c.email_key, c.status, c.history)
        .where(c.campaign_id.in_(campaign_ids), c.email_key.in_(email_keys))
        .order_by(c.campaign_id, c.contact_id)
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
