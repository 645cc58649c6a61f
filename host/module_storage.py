"""The persistent key-value store a module keeps per tenant (the script's ``storage``).

A call starts from a snapshot and, if it succeeds, ends with a new one. Two calls of the same
module may overlap (two webhooks at once), so the new snapshot is not written whole: only the
keys the call changed (:class:`StorageChanges`) are applied to what is stored now, and a
concurrent call's other keys survive. The sandbox enforces the size quota on the call's own
view.

Who commits: never the code that served the call. The invoker applies a call's changes with
:meth:`ModuleStorageStore.apply` inside the transaction that also holds the caller's effects
(a webhook's actions and receipt), after the return value was validated, so a call reported
as failed keeps no storage writes. The one exception is the script's explicit
``storage.set(key, value, durable=True)``, which :meth:`ModuleStorageStore.write_durable`
commits at once, for a side effect that must not be forgotten if the call fails later.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import ModuleStorage
from sandbox.errors import LimitExceeded, ScriptError


@dataclass(frozen=True)
class StorageChanges:
    """The keys one call set (with their new values) and deleted."""

    changed: dict[str, Any]
    removed: tuple[str, ...]

    @classmethod
    def between(
        cls, before: Mapping[str, Any], after: Mapping[str, Any], written: Collection[str] = ()
    ) -> StorageChanges | None:
        """What turns ``before`` into ``after``; None when nothing changed. ``written`` are
        keys the call wrote durably: what is stored for them is no longer ``before``, so their
        final state (set, or removed) is always part of the changes — a durable write the
        call later deleted or set back to its old value must not stay behind."""
        changed = {
            k: v for k, v in after.items() if k in written or k not in before or before[k] != v
        }
        removed = tuple(
            [k for k in before if k not in after]
            + [k for k in written if k not in before and k not in after]
        )
        return cls(changed, removed) if changed or removed else None


def encoded_size(data: Mapping[str, Any]) -> int:
    """Bytes of the storage as compact JSON: the measure the sandbox's quota uses."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


class ModuleStorageStore:
    def __init__(self, db: Database):
        self.db = db

    def load(self, tenant_id: str, module_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            row = session.get(ModuleStorage, (tenant_id, module_id))
            return dict(row.data) if row else {}

    def apply(
        self, session: Session, tenant_id: str, module_id: str, changes: StorageChanges
    ) -> None:
        """Apply ``changes`` to the stored data inside the caller's transaction (committed,
        or rolled back, with everything else it holds)."""
        data = self._locked_row(session, tenant_id, module_id)
        data.data = {
            **{k: v for k, v in data.data.items() if k not in changes.removed},
            **changes.changed,
        }

    def write_durable(
        self, tenant_id: str, module_id: str, key: str, value: Any, *, quota_bytes: int
    ) -> None:
        """Commit one key now (``storage.set(..., durable=True)``), refusing a write that
        would take what is stored over ``quota_bytes`` (the worker checked its own view, but
        the worker is not trusted)."""
        if not isinstance(key, str) or not key:
            raise ScriptError("storage keys must be non-empty strings")
        self.ensure_row(tenant_id, module_id)
        with self.db.write_transaction() as session:
            row = self._locked_row(session, tenant_id, module_id)
            data = {**row.data, key: value}
            size = encoded_size(data)
            if size > quota_bytes:
                raise LimitExceeded(
                    f"storage quota of {quota_bytes} bytes exceeded (would be {size} bytes)"
                )
            row.data = data

    def ensure_row(self, tenant_id: str, module_id: str) -> None:
        """Create the (tenant, module) row if it is missing, in a transaction of its own, so
        that a concurrent first write (a unique-key race) never aborts a caller's
        transaction. Called before the caller's write transaction starts: inside one, on
        SQLite, it would wait for that transaction's own lock."""
        with self.db.transaction() as session:
            if session.get(ModuleStorage, (tenant_id, module_id)) is not None:
                return
        try:
            with self.db.transaction() as own:
                own.add(ModuleStorage(tenant_id=tenant_id, module_id=module_id, data={}))
        except IntegrityError:
            pass  # the concurrent call created it

    def _locked_row(self, session: Session, tenant_id: str, module_id: str) -> ModuleStorage:
        """The (tenant, module) row, locked for this transaction (see :meth:`ensure_row`);
        a row deleted meanwhile (the tenant purged) is created again."""
        row = session.get(ModuleStorage, (tenant_id, module_id), with_for_update=True)
        if row is None:
            row = ModuleStorage(tenant_id=tenant_id, module_id=module_id, data={})
            session.add(row)
        return row
