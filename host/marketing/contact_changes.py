"""The contacts a batch of webhook actions reads and changes, as plain rows.

A batch reads the contacts it names locked (``SELECT ... FOR UPDATE`` in primary-key order,
like its deliveries: :mod:`host.marketing.delivery_moves`; on SQLite its transaction holds
the write lock), changes them in memory, and writes each changed row once at the end with
one compiled UPDATE (executemany). A contact the batch creates is inserted at once, after the
changes so far are written, so that an address another contact just moved away from is
free again (the order an ORM flush would use: updates, then inserts).

Plain Core rather than ORM objects: all of this runs inside the webhook's write
transaction, which on SQLite every writer waits for.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from host.db.models import Contact

CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
_c = CONTACTS.c
LOCKED_CONTACTS = (
    select(_c.id, _c.email, _c.email_key, _c.name, _c.status, _c.soft_bounces)
    .where(_c.tenant_id == bindparam("tenant"), _c.email_key.in_(bindparam("keys", expanding=True)))
    .order_by(_c.id)
    .with_for_update()
)
CONTACT_UPDATE = (
    update(CONTACTS)
    .where(_c.tenant_id == bindparam("row_tenant"), _c.id == bindparam("row_id"))
    .values(
        email=bindparam("new_email"),
        email_key=bindparam("new_key"),
        name=bindparam("new_name"),
        status=bindparam("new_status"),
        soft_bounces=bindparam("new_soft_bounces"),
        updated_at=bindparam("at"),
    )
)
"""Built once, so each compiles once."""


@dataclass
class ContactRow:
    """One contact as the batch sees it; the fields are changed in place, ``stored`` is what
    the database holds now."""

    tenant_id: str
    id: str
    email: str | None
    email_key: str | None
    name: str
    status: str
    soft_bounces: int
    stored: tuple[object, ...] = field(default=(), repr=False)

    def values(self) -> tuple[object, ...]:
        return (self.email, self.email_key, self.name, self.status, self.soft_bounces)

    @property
    def changed(self) -> bool:
        return self.values() != self.stored


def locked_contacts(
    session: Session, tenant_id: str, email_keys: Collection[str]
) -> list[ContactRow]:
    """The tenant's contacts with these email keys, locked for this transaction."""
    rows = session.connection().execute(
        LOCKED_CONTACTS, {"tenant": tenant_id, "keys": sorted(email_keys)}
    )
    found = [
        ContactRow(tenant_id, cid, email, key, name or "", status, soft_bounces or 0)
        for cid, email, key, name, status, soft_bounces in rows
    ]
    for row in found:
        row.stored = row.values()
    return found


def write_changes(session: Session, rows: Sequence[ContactRow]) -> None:
    """Write every row changed since it was read or last written: one executemany."""
    at = datetime.now(UTC)
    params = [
        {
            "row_tenant": row.tenant_id,
            "row_id": row.id,
            "new_email": row.email,
            "new_key": row.email_key,
            "new_name": row.name,
            "new_status": row.status,
            "new_soft_bounces": row.soft_bounces,
            "at": at,
        }
        for row in rows
        if row.changed
    ]
    if params:
        session.connection().execute(CONTACT_UPDATE, params)
    for row in rows:
        row.stored = row.values()


def insert_contact(session: Session, row: ContactRow, written_before: Sequence[ContactRow]) -> None:
    """Insert a contact the batch creates, after writing the changes of ``written_before``
    (see the module docstring)."""
    write_changes(session, written_before)
    session.connection().execute(
        insert(CONTACTS).values(
            tenant_id=row.tenant_id,
            id=row.id,
            email=row.email,
            email_key=row.email_key,
            name=row.name,
            status=row.status,
            soft_bounces=row.soft_bounces,
        )
    )
    row.stored = row.values()
