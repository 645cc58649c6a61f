"""Suppressions: what survives a contact's erasure, so that someone who unsubscribed stays
unsubscribed when a CRM imports them again later.

Only hashes are kept: SHA-256 of the tenant id and the normalised address (email lower-cased,
phone reduced to its digits), so the table names no one and a hash of one tenant matches
nothing of another. Each row says what the address had left: a category it unsubscribed from,
or (``category`` "") the contact's whole status (Unsubscribed, Complained, Bounced).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from host.contract.enums import SubscriberStatus
from host.db.models import Contact, ContactSuppression, ContactUnsubscription

WHOLE_CONTACT = ""
"""``category`` of the row that carries the contact's status rather than one category."""

SUPPRESSED_STATUSES = frozenset(
    {SubscriberStatus.Unsubscribed, SubscriberStatus.Complained, SubscriberStatus.Bounced}
)
"""Statuses a re-imported address gets back; Subscribed and Pending are not remembered."""

REPLACEABLE_STATUSES = frozenset({SubscriberStatus.Subscribed, SubscriberStatus.Pending})


def address_hashes(tenant_id: str, email: str | None, phone: str | None) -> list[str]:
    """The hashes of a contact's addresses (none for an address it does not have)."""
    hashes = []
    if email and email.strip():
        hashes.append(_hash(tenant_id, "email", email.strip().lower()))
    digits = "".join(c for c in phone or "" if c.isdigit())
    if digits:
        hashes.append(_hash(tenant_id, "phone", digits))
    return hashes


def _hash(tenant_id: str, kind: str, normalised: str) -> str:
    return hashlib.sha256(f"{tenant_id}\0{kind}\0{normalised}".encode()).hexdigest()


def remember(session: Session, contact: Contact, categories: Iterable[str]) -> int:
    """Store the suppressions of a contact about to be erased; returns how many rows."""
    scopes: list[tuple[str, str | None]] = [(c, None) for c in categories]
    if contact.status in SUPPRESSED_STATUSES:
        scopes.append((WHOLE_CONTACT, contact.status))
    stored = 0
    for address in address_hashes(contact.tenant_id, contact.email, contact.phone):
        for category, status in scopes:
            row = session.get(ContactSuppression, (contact.tenant_id, address, category))
            if row is None:
                session.add(
                    ContactSuppression(
                        tenant_id=contact.tenant_id,
                        address_sha256=address,
                        category=category,
                        status=status,
                    )
                )
                stored += 1
            elif status is not None:
                row.status = status
    return stored


def apply(session: Session, tenant_id: str, contacts: Iterable[Contact]) -> None:
    """Give imported contacts back what an erased contact with the same address had left:
    its status (unless they are already not mailable) and its unsubscribed categories."""
    by_hash: dict[str, list[Contact]] = {}
    for contact in contacts:
        for address in address_hashes(tenant_id, contact.email, contact.phone):
            by_hash.setdefault(address, []).append(contact)
    hashes = sorted(by_hash)
    for start in range(0, len(hashes), 500):
        rows = session.scalars(
            select(ContactSuppression).where(
                ContactSuppression.tenant_id == tenant_id,
                ContactSuppression.address_sha256.in_(hashes[start : start + 500]),
            )
        ).all()
        for row in rows:
            for contact in by_hash[row.address_sha256]:
                _apply_one(session, contact, row)


def _apply_one(session: Session, contact: Contact, row: ContactSuppression) -> None:
    if row.category == WHOLE_CONTACT:
        if row.status and contact.status in REPLACEABLE_STATUSES:
            contact.status = row.status
        return
    key = (contact.tenant_id, contact.id, row.category)
    if session.get(ContactUnsubscription, key) is None:
        session.add(
            ContactUnsubscription(
                tenant_id=contact.tenant_id, contact_id=contact.id, category=row.category
            )
        )
