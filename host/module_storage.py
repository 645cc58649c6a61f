"""The persistent key-value store a module keeps per tenant (the script's ``storage``).
The sandbox enforces the size quota; this keeps the snapshots."""

from __future__ import annotations

from typing import Any

from host.db.engine import Database
from host.db.models import ModuleStorage


class ModuleStorageStore:
    def __init__(self, db: Database):
        self.db = db

    def load(self, tenant_id: str, module_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            row = session.get(ModuleStorage, (tenant_id, module_id))
            return dict(row.data) if row else {}

    def save(self, tenant_id: str, module_id: str, data: dict[str, Any]) -> None:
        with self.db.transaction() as session:
            row = session.get(ModuleStorage, (tenant_id, module_id))
            if row is None:
                session.add(ModuleStorage(tenant_id=tenant_id, module_id=module_id, data=data))
            else:
                row.data = data
