"""The persistent key-value store a module keeps per tenant (the script's ``storage``).

A call starts from a snapshot and ends with a new one. Two calls of the same module may
overlap (two webhooks at once), so the new snapshot is not written whole: only the keys the
call changed are applied to what is stored now, and a concurrent call's other keys survive.
The sandbox enforces the size quota on the call's own view."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from host.db.engine import Database
from host.db.models import ModuleStorage


class ModuleStorageStore:
    def __init__(self, db: Database):
        self.db = db

    def load(self, tenant_id: str, module_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            row = session.get(ModuleStorage, (tenant_id, module_id))
            return dict(row.data) if row else {}

    def save(
        self, tenant_id: str, module_id: str, before: dict[str, Any], after: dict[str, Any]
    ) -> None:
        """Apply the keys that changed from ``before`` to ``after`` to the stored data."""
        changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
        removed = [k for k in before if k not in after]
        if not changed and not removed:
            return
        try:
            self._apply(tenant_id, module_id, changed, removed)
        except IntegrityError:  # a concurrent first write created the row: apply onto it
            self._apply(tenant_id, module_id, changed, removed)

    def _apply(
        self, tenant_id: str, module_id: str, changed: dict[str, Any], removed: list[str]
    ) -> None:
        with self.db.transaction() as session:
            row = session.get(ModuleStorage, (tenant_id, module_id), with_for_update=True)
            data = dict(row.data) if row else {}
            data.update(changed)
            for key in removed:
                data.pop(key, None)
            if row is None:
                session.add(ModuleStorage(tenant_id=tenant_id, module_id=module_id, data=data))
            else:
                row.data = data
