"""A module's storage survives overlapping calls: each call's changes are applied key by
key to what is stored, never as a whole snapshot over another call's changes."""

from __future__ import annotations

from host.modules.packages import from_json_body
from tests.host.conftest import json_body, make_host


def test_overlapping_calls_keep_each_others_keys(tmp_path) -> None:
    host = make_host(tmp_path / "h.db")
    try:
        host.tenants.create("acme", "Acme")
        host.registry.upload(from_json_body(json_body(), max_script_bytes=65536))
        store = host.module_storage
        store.save("acme", "sendmail", {}, {"cursor": 1, "old": True})
        first = store.load("acme", "sendmail")
        second = store.load("acme", "sendmail")
        store.save("acme", "sendmail", first, {**first, "chat:1": "c1"})
        store.save("acme", "sendmail", second, {"cursor": 2})  # changes cursor, drops "old"
        assert store.load("acme", "sendmail") == {"cursor": 2, "chat:1": "c1"}
        untouched = store.load("acme", "sendmail")
        store.save("acme", "sendmail", untouched, dict(untouched))
        assert store.load("acme", "sendmail") == untouched
    finally:
        host.close()
