"""A contact's personal data: export everything stored about it, or erase it (GDPR art. 15,
17), in one transaction.

Erasure removes the contact and its unsubscribed categories, and its personal data wherever
else the host stored it:

* **deliveries** stay (a campaign's counts must not change) but are anonymised: their contact
  id becomes an opaque ``erased-…`` id, their email and phone are cleared;
* **webhook receipts** that mention the email or phone (in their skipped or returned actions,
  or their error) have it replaced by ``[erased]``;
* **invocation log** rows whose captured log mentions the email or phone lose the log
  (replaced by a note) and have the address replaced in their error text;
* **outbox** messages addressed to the email are deleted.

What survives is a hash of each address of a contact that had unsubscribed
(``host.marketing.suppressions``), so the person stays unsubscribed if imported again. With
SQLite the database runs with ``secure_delete``, so erased values are overwritten on disk,
not merely unlinked. A module's own ``storage`` is the module's: the host cannot know what
it holds.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, delete, func, or_, select
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import (
    Campaign,
    Contact,
    ContactUnsubscription,
    Delivery,
    Invocation,
    OutboxMessage,
    WebhookReceipt,
)
from host.errors import NotFound
from host.marketing import suppressions
from host.marketing.contacts import Unsubscription

ERASED = "[erased]"
REDACTED_LOG = "[log removed: it mentioned an erased contact]"


@dataclass(frozen=True)
class ErasureReport:
    contact_id: str
    deliveries: int
    webhook_receipts: int
    invocations: int
    outbox: int
    suppressions: int


@dataclass(frozen=True)
class ExportedContact:
    id: str
    name: str
    email: str | None
    phone: str | None
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ExportedDelivery:
    campaign_id: str
    campaign_name: str
    module: str
    email: str | None
    phone: str | None
    status: str
    history: list[Any]
    updated_at: datetime


@dataclass(frozen=True)
class ExportedReceipt:
    """A webhook receipt mentioning the contact."""

    id: int
    module: str
    received_at: datetime
    status: int
    skipped: list[Any]
    error: str | None
    actions: list[Any] | None = None


@dataclass(frozen=True)
class ExportedMail:
    """Outbox mail addressed to the contact, with its HTML."""

    id: int
    module: str
    recipient: str
    subject: str
    html: str
    status: str
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class ExportedInvocation:
    """A module call whose log or error mentions the contact."""

    id: int
    module: str
    function: str
    started_at: datetime
    log: str | None
    error: str | None


@dataclass(frozen=True)
class ContactDossier:
    """Everything stored about one contact (GDPR access)."""

    contact: ExportedContact
    unsubscriptions: list[Unsubscription]
    deliveries: list[ExportedDelivery]
    webhook_receipts: list[ExportedReceipt]
    outbox: list[ExportedMail]
    invocations: list[ExportedInvocation]


def _terms(contact: Contact) -> list[str]:
    """The contact's addresses as they may appear in stored text (lower-cased)."""
    return [t.strip().lower() for t in (contact.email, contact.phone) if t and t.strip()]


def _mentions(column: Any, terms: list[str]) -> Any:
    return or_(*(func.lower(column).contains(t, autoescape=True) for t in terms))


def _redact_text(text: str | None, pattern: re.Pattern[str]) -> str | None:
    return pattern.sub(ERASED, text) if text is not None else None


def _redact_json(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, list):
        return [_redact_json(v, pattern) for v in value]
    if isinstance(value, dict):
        return {k: _redact_json(v, pattern) for k, v in value.items()}
    return value


class ContactErasure:
    def __init__(self, db: Database):
        self.db = db

    def _contact(self, session: Session, tenant_id: str, contact_id: str) -> Contact:
        contact = session.get(Contact, (tenant_id, contact_id))
        if contact is None:
            raise NotFound(f"contact {contact_id} does not exist")
        return contact

    def _categories(self, session: Session, tenant_id: str, contact_id: str) -> list[Any]:
        return list(
            session.scalars(
                select(ContactUnsubscription)
                .where(
                    ContactUnsubscription.tenant_id == tenant_id,
                    ContactUnsubscription.contact_id == contact_id,
                )
                .order_by(ContactUnsubscription.category)
            )
        )

    def _deliveries(self, session: Session, tenant_id: str, contact: Contact) -> Any:
        matches = [Delivery.contact_id == contact.id]
        if contact.email_key:
            matches.append(Delivery.email_key == contact.email_key)
        return session.execute(
            select(Delivery, Campaign.name, Campaign.module_id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.tenant_id == tenant_id, or_(*matches))
            .order_by(Campaign.created_at, Delivery.campaign_id)
        ).all()

    def _receipts(self, session: Session, tenant_id: str, terms: list[str]) -> list[Any]:
        if not terms:
            return []
        return list(
            session.scalars(
                select(WebhookReceipt)
                .where(
                    WebhookReceipt.tenant_id == tenant_id,
                    or_(
                        _mentions(cast(WebhookReceipt.skipped, Text), terms),
                        _mentions(cast(WebhookReceipt.actions, Text), terms),
                        _mentions(WebhookReceipt.error, terms),
                    ),
                )
                .order_by(WebhookReceipt.id)
            )
        )

    def _invocations(self, session: Session, tenant_id: str, terms: list[str]) -> list[Any]:
        if not terms:
            return []
        return list(
            session.scalars(
                select(Invocation)
                .where(
                    Invocation.tenant_id == tenant_id,
                    or_(_mentions(Invocation.log, terms), _mentions(Invocation.error, terms)),
                )
                .order_by(Invocation.id)
            )
        )

    def _outbox(self, session: Session, tenant_id: str, contact: Contact) -> list[Any]:
        if not contact.email_key:
            return []
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(
                    OutboxMessage.tenant_id == tenant_id,
                    func.lower(OutboxMessage.recipient) == contact.email_key,
                )
                .order_by(OutboxMessage.id)
            )
        )

    # --- export ---------------------------------------------------------------------------

    def export(self, tenant_id: str, contact_id: str) -> ContactDossier:
        """Everything stored about the contact, as one document."""
        with self.db.transaction() as session:
            contact = self._contact(session, tenant_id, contact_id)
            terms = _terms(contact)
            return ContactDossier(
                contact=ExportedContact(
                    id=contact.id,
                    name=contact.name,
                    email=contact.email,
                    phone=contact.phone,
                    status=contact.status,
                    created_at=contact.created_at,
                    updated_at=contact.updated_at,
                ),
                unsubscriptions=[
                    Unsubscription(u.category, u.module_id, u.created_at)
                    for u in self._categories(session, tenant_id, contact_id)
                ],
                deliveries=[
                    ExportedDelivery(
                        campaign_id=d.campaign_id,
                        campaign_name=name,
                        module=module,
                        email=d.email_key,
                        phone=d.phone,
                        status=d.status,
                        history=d.history,
                        updated_at=d.updated_at,
                    )
                    for d, name, module in self._deliveries(session, tenant_id, contact)
                ],
                webhook_receipts=[
                    ExportedReceipt(
                        id=r.id,
                        module=r.module_id,
                        received_at=r.received_at,
                        status=r.status_code,
                        skipped=r.skipped,
                        error=r.error,
                        actions=r.actions,
                    )
                    for r in self._receipts(session, tenant_id, terms)
                ],
                outbox=[
                    ExportedMail(
                        id=m.id,
                        module=m.module_id,
                        recipient=m.recipient,
                        subject=m.subject,
                        html=m.html,
                        status=m.status,
                        created_at=m.created_at,
                        sent_at=m.sent_at,
                    )
                    for m in self._outbox(session, tenant_id, contact)
                ],
                invocations=[
                    ExportedInvocation(
                        id=i.id,
                        module=i.module_id,
                        function=i.function,
                        started_at=i.started_at,
                        log=i.log,
                        error=i.error,
                    )
                    for i in self._invocations(session, tenant_id, terms)
                ],
            )

    # --- erase ----------------------------------------------------------------------------

    def erase(self, tenant_id: str, contact_id: str) -> ErasureReport:
        """Erase the contact (see the module doc); all of it or, on any error, nothing."""
        with self.db.transaction() as session:
            contact = self._contact(session, tenant_id, contact_id)
            terms = _terms(contact)
            pattern = re.compile("|".join(re.escape(t) for t in terms) or r"(?!)", re.IGNORECASE)
            categories = self._categories(session, tenant_id, contact_id)
            kept = suppressions.remember(session, contact, [u.category for u in categories])
            deliveries = self._deliveries(session, tenant_id, contact)
            for delivery, _name, _module in deliveries:
                delivery.contact_id = f"erased-{uuid.uuid4().hex}"
                delivery.email_key = None
                delivery.phone = None
            receipts = self._receipts(session, tenant_id, terms)
            for receipt in receipts:
                receipt.skipped = _redact_json(receipt.skipped, pattern)
                if receipt.actions is not None:
                    receipt.actions = _redact_json(receipt.actions, pattern)
                receipt.error = _redact_text(receipt.error, pattern)
            invocations = self._invocations(session, tenant_id, terms)
            for invocation in invocations:
                if invocation.log and pattern.search(invocation.log):
                    invocation.log = REDACTED_LOG
                invocation.error = _redact_text(invocation.error, pattern)
            outbox = self._outbox(session, tenant_id, contact)
            for message in outbox:
                session.delete(message)
            session.execute(
                delete(ContactUnsubscription).where(
                    ContactUnsubscription.tenant_id == tenant_id,
                    ContactUnsubscription.contact_id == contact_id,
                )
            )
            session.delete(contact)
        return ErasureReport(
            contact_id,
            deliveries=len(deliveries),
            webhook_receipts=len(receipts),
            invocations=len(invocations),
            outbox=len(outbox),
            suppressions=kept,
        )
