"""Moving a delivery's status forward safely when webhooks for one recipient arrive at once
(two nodes, the same batch posted twice, two different events together).

Two guards, for both databases:

* The rows a batch touches are read **locked** in a fixed order (``SELECT ... FOR UPDATE``
  ordered by primary key; on SQLite the batch's transaction holds the write lock from its
  start, :meth:`host.db.engine.Database.write_transaction`), so what a batch decides from is
  current and a concurrent batch waits for it instead of deciding from the same old status.
* The UPDATE itself is **conditional**: it moves the row only while its stored status ranks
  below the new one (:data:`host.marketing.lifecycle.DELIVERY_RANK`, as SQL), so no
  interleaving can ever move a status back. A batch decides its moves on the locked rows in
  memory and writes each moved row once at the end (:func:`write_moves`), checking that
  every conditional UPDATE matched: what the receipt reports as applied is what happened.

Plain Core statements compiled once (:data:`FORWARD_UPDATES`) run as one executemany per
status, rather than ORM objects or one statement per event: this runs while the batch holds
the database's write lock (on SQLite, every writer's), so it is the serial part of every
webhook.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, Update, bindparam, literal_column, select, update
from sqlalchemy.orm import Session

from host.db.models import Delivery
from host.marketing.lifecycle import DELIVERY_RANK, delivery_moves_forward

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


_c = DELIVERIES.c
LOCKED_DELIVERIES = (
    select(_c.campaign_id, _c.contact_id, _c.email_key, _c.status, _c.history)
    .where(
        _c.campaign_id.in_(bindparam("campaigns", expanding=True)),
        _c.email_key.in_(bindparam("keys", expanding=True)),
    )
    .order_by(_c.campaign_id, _c.contact_id)
    .with_for_update()
)


@dataclass
class DeliveryRow:
    """One recipient of a campaign as a batch sees it: ``status`` and ``history`` are kept
    current as the batch moves it (in memory), ``stored_status`` is what was read locked, so
    the batch's moves are written at the end, one row once (:func:`write_moves`)."""

    campaign_id: str
    contact_id: str
    email_key: str
    status: str
    history: list[Any]
    stored_status: str = ""
    updated_at: datetime | None = None

    @property
    def moved(self) -> bool:
        return self.status != self.stored_status


class MovesLost(Exception):
    """A delivery the batch read locked was moved by someone else before the batch wrote it
    (the locks of :func:`locked_deliveries` rule that out): the batch must not report moves
    that did not happen, so its transaction is rolled back."""


def locked_deliveries(
    session: Session, campaign_ids: Collection[str], email_keys: Collection[str]
) -> list[DeliveryRow]:
    """The deliveries of ``campaign_ids`` to ``email_keys``, locked for this transaction in
    primary-key order (concurrent batches lock in the same order: no deadlock)."""
    rows = session.connection().execute(
        LOCKED_DELIVERIES, {"campaigns": sorted(campaign_ids), "keys": sorted(email_keys)}
    )
    return [
        DeliveryRow(campaign_id, contact_id, str(key), status, list(history or []), status)
        for campaign_id, contact_id, key, status, history in rows
    ]


def move_forward(row: DeliveryRow, status: str, at: datetime) -> bool:
    """Move ``row`` to ``status`` in memory if that is forward of where it is now (stored or
    moved by this batch); whether it moved. :func:`write_moves` writes it."""
    if not delivery_moves_forward(row.status, status):
        return False
    row.status = status
    row.history = [*row.history, {"status": status, "at": at.isoformat()}]
    row.updated_at = at
    return True


def write_moves(session: Session, rows: Sequence[DeliveryRow]) -> None:
    """Write every row the batch moved: one executemany per final status, each UPDATE
    conditional on the stored rank. The rows are locked, so every UPDATE matches; a row
    count short of that (a lock not held) raises :class:`MovesLost` rather than letting the
    receipt report moves that did not happen."""
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.moved:
            by_status.setdefault(row.status, []).append(
                {
                    "row_campaign": row.campaign_id,
                    "row_contact": row.contact_id,
                    "new_history": row.history,
                    "at": row.updated_at,
                }
            )
    connection = session.connection()
    exact = connection.dialect.supports_sane_multi_rowcount
    for status, params in by_status.items():
        moved = connection.execute(FORWARD_UPDATES[status], params).rowcount
        if exact and moved != len(params):
            raise MovesLost(f"{len(params) - moved} of {len(params)} deliveries moved meanwhile")
    for row in rows:
        row.stored_status = row.status
