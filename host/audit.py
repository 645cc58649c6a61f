"""The audit log: every change made through the console or the API — who, what, when.

:class:`~host.api.audit_trail.AuditTrail` records each state-changing request (POST, PUT,
PATCH, DELETE) that succeeded, naming the person or credential that made it; admins read the
log on the console's *Audit log* page and at ``GET /api/v1/audit``. Entries are never edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from host.db.engine import Database
from host.db.models import AuditEntry


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    method: str
    path: str
    status: int
    client: str


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(
        self, *, actor: str, action: str, method: str, path: str, status: int, client: str
    ) -> None:
        with self.db.transaction() as session:
            session.add(
                AuditEntry(
                    actor=actor[:320],
                    action=action[:500],
                    method=method[:10],
                    path=path[:1000],
                    status=status,
                    client=client[:64],
                )
            )

    def list(
        self, *, limit: int = 100, before: int | None = None, actor: str | None = None
    ) -> list[AuditRecord]:
        """Newest first; ``before`` (an entry id) pages back, ``actor`` filters exactly."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if before is not None:
            query = query.where(AuditEntry.id < before)
        if actor:
            query = query.where(AuditEntry.actor == actor)
        with self.db.transaction() as session:
            return [
                AuditRecord(r.id, r.at, r.actor, r.action, r.method, r.path, r.status, r.client)
                for r in session.scalars(query)
            ]
