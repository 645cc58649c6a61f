"""Who a campaign goes to, read from the database in keyset order, one batch at a time.

A campaign's audience is either every contact of the tenant created up to the campaign's
creation (``{"all": true, "createdBefore": ...}`` — the cut-off keeps the export and the
prepare passes on the same set however many contacts arrive meanwhile) or an explicit,
sorted, de-duplicated id list (``{"ids": [...]}``, capped at MAX_EXPLICIT_IDS so the row
stays small). Either way memory stays flat: only one batch of rows is ever held.

A recipient is *eligible* when its subscriber status allows sending, it has the field the
campaign type needs (email for Email, phone for Sms; Messenger goes by contact id) and it
has not unsubscribed from the campaign's category (``categoryExternalId`` of the campaign;
a messenger campaign's category is its module id, e.g. ``telegram``). Everyone else is
skipped and counted by reason (``left_out``), which the campaign's progress reports.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from host.contract.enums import CampaignType, SubscriberStatus
from host.db.models import Contact, ContactUnsubscription

MAX_EXPLICIT_IDS = 100_000
"""Largest explicit contact id list a campaign stores; bigger audiences use "all"."""

SKIPPED_STATUSES = (
    SubscriberStatus.Unsubscribed.value,
    SubscriberStatus.Bounced.value,
    SubscriberStatus.Complained.value,
)
"""Subscriber statuses that are never sent to (the sender must not, or must not again)."""

ID_CHUNK = 900
"""Ids per ``IN (...)`` query: well below every database's bound-parameter limit."""


class Recipient(NamedTuple):
    """One recipient (a tuple: a million of them are built per campaign)."""

    id: str
    email: str | None
    email_key: str | None
    phone: str | None

    def address(self, campaign_type: str) -> str:
        """What PrepareCampaign receives for this recipient (SPEC §2)."""
        if campaign_type == CampaignType.Email:
            return self.email or ""
        if campaign_type == CampaignType.Sms:
            return self.phone or ""
        return self.id


class Audience:
    """The recipients of one campaign. ``spec`` is the campaign's ``audience`` JSON."""

    def __init__(
        self, tenant_id: str, campaign_type: str, spec: dict[str, Any], category: str | None
    ):
        self.tenant_id = tenant_id
        self.type = campaign_type
        self.category = category
        self.ids: list[str] | None = None if spec.get("all") else sorted(spec.get("ids") or [])
        cutoff = spec.get("createdBefore")
        self.created_before = datetime.fromisoformat(cutoff) if cutoff else None

    # --- filters ------------------------------------------------------------------------

    def _member(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [Contact.tenant_id == self.tenant_id]
        if self.created_before is not None:
            conditions.append(Contact.created_at <= self.created_before)
        return conditions

    def _mailable(self) -> list[ColumnElement[bool]]:
        return [*self._member(), Contact.status.not_in(SKIPPED_STATUSES)]

    def _addressable(self) -> list[ColumnElement[bool]]:
        conditions = self._mailable()
        if self.type == CampaignType.Email:
            conditions += [Contact.email.is_not(None), Contact.email != ""]
        elif self.type == CampaignType.Sms:
            conditions += [Contact.phone.is_not(None), Contact.phone != ""]
        return conditions

    def _eligible(self) -> list[ColumnElement[bool]]:
        conditions = self._addressable()
        if self.category:
            conditions.append(
                ~exists().where(
                    ContactUnsubscription.tenant_id == Contact.tenant_id,
                    ContactUnsubscription.contact_id == Contact.id,
                    ContactUnsubscription.category == self.category,
                )
            )
        return conditions

    # --- reading ------------------------------------------------------------------------

    def counts(self, session: Session) -> tuple[int, int]:
        """(audience size, eligible recipients), counted by the database."""
        return self._count(session, self._member()), self._count(session, self._eligible())

    def left_out(self, session: Session) -> dict[str, int]:
        """Why members are not eligible: reason -> count, each member counted once under
        the first reason that applies (status, then a missing address, then the category).
        Reasons: ``unsubscribed``, ``bounced``, ``complained``, ``noAddress``, ``category``."""
        reasons = {
            status.lower(): self._count(session, [*self._member(), Contact.status == status])
            for status in SKIPPED_STATUSES
        }
        mailable = self._count(session, self._mailable())
        addressable = self._count(session, self._addressable())
        reasons["noAddress"] = mailable - addressable
        reasons["category"] = addressable - self._count(session, self._eligible())
        return reasons

    def _count(self, session: Session, conditions: list[ColumnElement[bool]]) -> int:
        if self.ids is None:
            return int(session.scalar(select(func.count()).where(*conditions)) or 0)
        total = 0
        for start in range(0, len(self.ids), ID_CHUNK):
            chunk = self.ids[start : start + ID_CHUNK]
            query = select(func.count()).where(*conditions, Contact.id.in_(chunk))
            total += int(session.scalar(query) or 0)
        return total

    def eligible_after(self, session: Session, cursor: str | None, limit: int) -> list[Recipient]:
        """The next ``limit`` eligible recipients whose id sorts after ``cursor``, in id
        order (keyset pagination: no OFFSET, so every batch costs the same)."""
        columns = (Contact.id, Contact.email, Contact.email_key, Contact.phone)
        if self.ids is None:
            query = select(*columns).where(*self._eligible())
            if cursor is not None:
                query = query.where(Contact.id > cursor)
            rows = session.execute(query.order_by(Contact.id).limit(limit)).all()
            return [Recipient._make(row) for row in rows]
        found: list[Recipient] = []
        start = bisect.bisect_right(self.ids, cursor) if cursor is not None else 0
        while start < len(self.ids) and len(found) < limit:
            chunk = self.ids[start : start + max(limit, ID_CHUNK)]
            start += len(chunk)
            query = select(*columns).where(*self._eligible(), Contact.id.in_(chunk))
            chunk_rows = session.execute(query).all()
            found += sorted((Recipient._make(row) for row in chunk_rows), key=lambda r: r.id)
        return found[:limit]


def unknown_contact_ids(session: Session, tenant_id: str, ids: Sequence[str]) -> list[str]:
    """Ids of ``ids`` that are not contacts of the tenant (for validation)."""
    missing: list[str] = []
    for start in range(0, len(ids), ID_CHUNK):
        chunk = list(ids[start : start + ID_CHUNK])
        query = select(Contact.id).where(Contact.tenant_id == tenant_id, Contact.id.in_(chunk))
        known = set(session.scalars(query))
        missing += [i for i in chunk if i not in known]
    return missing


def tenant_has_contacts(session: Session, tenant_id: str) -> bool:
    query = select(Contact.id).where(Contact.tenant_id == tenant_id).limit(1)
    return session.scalar(query) is not None
