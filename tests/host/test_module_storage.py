"""A module's storage survives overlapping calls: each call's changes are applied key by
key to what is stored, never as a whole snapshot over another call's changes."""

from __future__ import annotations

from typing import Any

from host.module_storage import ModuleStorageStore, StorageChanges
from host.modules.packages import from_json_body
from tests.host.conftest import json_body, make_host


def commit(store: ModuleStorageStore, before: dict[str, Any], after: dict[str, Any]) -> None:
    """What the invoker does with a successful call's snapshot."""
    changes = StorageChanges.between(before, after)
    if changes is not None:
        store.ensure_row("acme", "sendmail")
        with store.db.write_transaction() as session:
            store.apply(session, "acme", "sendmail", changes)


def test_overlapping_calls_keep_each_others_keys(tmp_path) -> None:
    host = make_host(tmp_path / "h.db")
    try:
        host.tenants.create("acme", "Acme")
        host.registry.upload(from_json_body(json_body(), max_script_bytes=65536))
        store = host.module_storage
        commit(store, {}, {"cursor": 1, "old": True})
        first = store.load("acme", "sendmail")
        second = store.load("acme", "sendmail")
        commit(store, first, {**first, "chat:1": "c1"})
        commit(store, second, {"cursor": 2})  # changes cursor, drops "old"
        assert store.load("acme", "sendmail") == {"cursor": 2, "chat:1": "c1"}
        untouched = store.load("acme", "sendmail")
        assert StorageChanges.between(untouched, dict(untouched)) is None
    finally:
        host.close()


def test_a_concurrent_first_write_is_merged_not_lost(tmp_path, monkeypatch) -> None:
    from sqlalchemy.orm import Session

    host = make_host(tmp_path / "h.db")
    try:
        host.tenants.create("acme", "Acme")
        host.registry.upload(from_json_body(json_body(), max_script_bytes=65536))
        store = host.module_storage
        commit(store, {}, {"a": 1})  # the other call's first write
        real_get = Session.get
        calls = []

        def first_get_misses_the_row(self, *args, **kwargs):
            calls.append(args)
            return None if len(calls) == 1 else real_get(self, *args, **kwargs)

        monkeypatch.setattr(Session, "get", first_get_misses_the_row)
        commit(store, {}, {"b": 2})
        monkeypatch.undo()
        assert store.load("acme", "sendmail") == {"a": 1, "b": 2}
    finally:
        host.close()
