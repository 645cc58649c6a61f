"""CRM contacts: bulk upsert from JSON rows or a CSV stream, one contact with its subscriber
state, and the ``crm.contacts(ids)`` view lent to scripts.

An address that belonged to an erased contact who had unsubscribed comes back unsubscribed
(``host.marketing.suppressions``).

Matching: a row with an ``id`` updates that contact (or creates it under that id); a row
without one updates the contact with the same email (case-insensitively, ``email_key``) or
creates a new contact with a generated id. Rows apply in input order, so a later row of the
same request sees what an earlier one did.

A request is all-or-nothing: every row is validated and matched before anything is written,
every bad row is reported (``rows[17].email`` for JSON, ``line 18: email`` for CSV), and a
single bad row means nothing is stored (rows are parsed and validated in
``host.marketing.contact_rows``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import Contact, ContactUnsubscription
from host.errors import Conflict, NotFound, Problem
from host.idempotency import IdempotentRequest
from host.marketing import suppressions
from host.marketing.contact_rows import ContactRow, field_location, raise_if_problems
from sandbox import errors as sandbox_errors

MAX_SCRIPT_IDS = 1000
"""Ids per ``crm.contacts(ids)`` call; a script asks again for the next chunk."""


def requested_ids(ids: Any) -> list[str]:
    """The ids a script's ``crm.contacts(ids)`` asks for, each once, in the order asked;
    a script error for anything but a list of at most :data:`MAX_SCRIPT_IDS` strings.
    Shared with the offline contacts of ``crm-host module run/test``, so both refuse alike."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise sandbox_errors.ScriptError("crm.contacts(ids) expects a list of id strings")
    if len(ids) > MAX_SCRIPT_IDS:
        raise sandbox_errors.LimitExceeded(
            f"crm.contacts(ids) takes at most {MAX_SCRIPT_IDS} ids per call; got {len(ids)}"
        )
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class UpsertResult:
    ids: list[str]
    created: int
    updated: int

    def as_dict(self) -> dict[str, Any]:
        """The answer stored under an ``Idempotency-Key`` in the upsert's own transaction
        (the API's ``ContactsUpserted`` reads it back when a retry replays it)."""
        return {"ids": self.ids, "created": self.created, "updated": self.updated}


@dataclass(frozen=True)
class Unsubscription:
    """A category the contact left, and through which module's webhook."""

    category: str
    module: str | None
    at: datetime


@dataclass(frozen=True)
class ContactView:
    id: str
    name: str
    email: str | None
    phone: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    unsubscribed: list[Unsubscription] = field(default_factory=list)


# --- the service -----------------------------------------------------------------------------


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """IN lists stay under every database's bound-parameter limit."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class ContactService:
    def __init__(self, db: Database):
        self.db = db

    def upsert(
        self,
        tenant_id: str,
        rows: Sequence[ContactRow],
        *,
        idempotency: IdempotentRequest | None = None,
    ) -> UpsertResult:
        """Create or update every row in one transaction, or none (see the module doc).
        ``idempotency`` stores the answer under its key in that same transaction."""
        try:
            with self.db.transaction() as session:
                if idempotency is not None:
                    idempotency.claim(session)
                result = self._upsert(session, tenant_id, rows)
                if idempotency is not None:
                    idempotency.complete(session, 200, result.as_dict())
                return result
        except IntegrityError:
            # another request stored the same email or id between our read and our write
            raise Conflict("contacts changed concurrently; retry the request") from None

    def _upsert(self, session: Session, tenant_id: str, rows: Sequence[ContactRow]) -> UpsertResult:
        contacts: dict[str, Contact] = {}
        ids = sorted({r.id for r in rows if r.id})
        keys = sorted({k for r in rows if (k := r.email_key)})
        for chunk in _chunks(ids):
            contacts.update((c.id, c) for c in self._select(session, tenant_id, Contact.id, chunk))
        for chunk in _chunks(keys):
            found = self._select(session, tenant_id, Contact.email_key, chunk)
            contacts.update((c.id, c) for c in found)
        # Every contact holding an email of the request is loaded, so ``owner`` is complete
        # for the emails that matter; it follows the rows as they move emails around.
        owner = {c.email_key: c.id for c in contacts.values() if c.email_key}
        stored_keys = {c.id: c.email_key for c in contacts.values()}
        final: dict[str, dict[str, Any]] = {}
        problems: list[Problem] = []
        ids_out: list[str] = []
        created = 0
        for row in rows:
            key = row.email_key
            target = row.id or (owner.get(key) if key else None) or uuid.uuid4().hex
            if key and owner.get(key, target) != target:
                problems.append(
                    Problem(
                        field_location(row.where, "email"), f"is the email of contact {owner[key]}"
                    )
                )
                continue
            values = final.get(target)
            if values is None:
                values = final[target] = {"email_key": stored_keys.get(target)}
                created += target not in contacts
            values["name"] = row.name
            if key:
                if values["email_key"] and values["email_key"] != key:
                    owner.pop(values["email_key"], None)
                owner[key] = target
                values.update(email=row.email, email_key=key)
            if row.phone is not None:
                values["phone"] = row.phone
            ids_out.append(target)
        raise_if_problems(problems)
        written = self._write(session, tenant_id, contacts, final)
        suppressions.apply(session, tenant_id, written)
        return UpsertResult(ids=ids_out, created=created, updated=len(ids_out) - created)

    @staticmethod
    def _write(
        session: Session,
        tenant_id: str,
        contacts: dict[str, Contact],
        final: dict[str, dict[str, Any]],
    ) -> list[Contact]:
        """Store the final values and return the contacts written. Emails that move between
        contacts are released first: the unique (tenant, email_key) index is checked per
        statement on some databases."""
        moved = [
            contacts[i]
            for i, v in final.items()
            if i in contacts and contacts[i].email_key not in (None, v["email_key"])
        ]
        for contact in moved:
            contact.email_key = None
        if moved:
            session.flush()
        written = []
        for contact_id, values in final.items():
            stored = contacts.get(contact_id)
            if stored is None:
                stored = Contact(tenant_id=tenant_id, id=contact_id, **values)
                session.add(stored)
            else:
                for name, value in values.items():
                    setattr(stored, name, value)
            written.append(stored)
        session.flush()
        return written

    @staticmethod
    def _select(session: Session, tenant_id: str, column: Any, values: Sequence[str]) -> Any:
        return session.scalars(
            select(Contact).where(Contact.tenant_id == tenant_id, column.in_(values))
        )

    def get(self, tenant_id: str, contact_id: str) -> ContactView:
        """One contact with its subscriber status and the categories it left."""
        with self.db.transaction() as session:
            contact = session.get(Contact, (tenant_id, contact_id))
            if contact is None:
                raise NotFound(f"contact {contact_id} does not exist")
            unsubscribed = session.scalars(
                select(ContactUnsubscription)
                .where(
                    ContactUnsubscription.tenant_id == tenant_id,
                    ContactUnsubscription.contact_id == contact_id,
                )
                .order_by(ContactUnsubscription.created_at, ContactUnsubscription.category)
            )
            return ContactView(
                id=contact.id,
                name=contact.name,
                email=contact.email,
                phone=contact.phone,
                status=contact.status,
                created_at=contact.created_at,
                updated_at=contact.updated_at,
                unsubscribed=[
                    Unsubscription(u.category, u.module_id, u.created_at) for u in unsubscribed
                ],
            )

    def for_script(self, tenant_id: str, ids: Any) -> list[dict[str, Any]]:
        """``crm.contacts(ids)``: this tenant's contacts among ``ids``, in the order asked,
        unknown ids left out. The tenant comes from the call, never from the script."""
        wanted = requested_ids(ids)
        found: dict[str, dict[str, Any]] = {}
        with self.db.transaction() as session:
            for chunk in _chunks(wanted):
                for c in self._select(session, tenant_id, Contact.id, chunk):
                    found[c.id] = {
                        "id": c.id,
                        "name": c.name,
                        "email": c.email,
                        "phone": c.phone,
                        "status": c.status,
                    }
        return [found[i] for i in wanted if i in found]

    def script_callback(self, tenant_id: str) -> Callable[[list[Any]], Any]:
        """The ``crm.contacts`` host callback of one call, bound to its tenant."""

        def contacts(args: list[Any]) -> list[dict[str, Any]]:
            if len(args) != 1:
                raise sandbox_errors.ScriptError("crm.contacts(ids) takes one argument")
            return self.for_script(tenant_id, args[0])

        return contacts
