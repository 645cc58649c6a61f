"""Listing and searching a tenant's contacts: filters by subscriber status, by a category the
contact unsubscribed from, and by a text in name, email or phone; keyset paging by id (the
``next`` of one page is the ``after`` of the following one), so a deep page costs what the
first costs and concurrent imports never shift a page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, or_, select

from host.db.engine import Database
from host.db.models import Contact, ContactUnsubscription


@dataclass(frozen=True)
class ContactFilter:
    status: str | None = None
    category: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class ContactSummary:
    """A contact as a listing shows it: the categories it left, by name."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: str
    unsubscribed_categories: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ContactPage:
    items: list[ContactSummary]
    next: str | None
    """``after`` of the following page; None on the last one."""


class ContactSearch:
    def __init__(self, db: Database):
        self.db = db

    def page(
        self, tenant_id: str, where: ContactFilter, *, after: str | None = None, limit: int = 100
    ) -> ContactPage:
        """Up to ``limit`` contacts with ids after ``after``, in id order."""
        query = select(Contact).where(Contact.tenant_id == tenant_id)
        if where.status is not None:
            query = query.where(Contact.status == where.status)
        if where.category is not None:
            query = query.where(
                exists().where(
                    ContactUnsubscription.tenant_id == Contact.tenant_id,
                    ContactUnsubscription.contact_id == Contact.id,
                    ContactUnsubscription.category == where.category,
                )
            )
        if where.text:
            text = where.text.lower()
            query = query.where(
                or_(
                    func.lower(Contact.name).contains(text, autoescape=True),
                    Contact.email_key.contains(text, autoescape=True),
                    Contact.phone.contains(where.text, autoescape=True),
                )
            )
        if after is not None:
            query = query.where(Contact.id > after)
        with self.db.transaction() as session:
            rows = session.scalars(query.order_by(Contact.id).limit(limit + 1)).all()
            page = rows[:limit]
            categories: dict[str, list[str]] = {c.id: [] for c in page}
            if page:
                for contact_id, category in session.execute(
                    select(ContactUnsubscription.contact_id, ContactUnsubscription.category)
                    .where(
                        ContactUnsubscription.tenant_id == tenant_id,
                        ContactUnsubscription.contact_id.in_(list(categories)),
                    )
                    .order_by(ContactUnsubscription.category)
                ):
                    categories[contact_id].append(category)
            items = [
                ContactSummary(
                    id=c.id,
                    name=c.name,
                    email=c.email,
                    phone=c.phone,
                    status=c.status,
                    unsubscribed_categories=categories[c.id],
                    created_at=c.created_at,
                    updated_at=c.updated_at,
                )
                for c in page
            ]
        more = len(rows) > limit
        return ContactPage(items, items[-1].id if more and items else None)
