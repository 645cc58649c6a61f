"""Webhook targets served from memory (``host.webhook_targets``), through the HTTP app.

A fresh target costs no database read; a change made through this node is used by the very
next request (settings, disable, enable, tenant deletion); a change made on another node on
the same database is seen once the entry is older than
``CRM_HOST_WEBHOOK_TARGET_CACHE_SECONDS`` (a fake clock stands in for the wait); a wrong
token is refused from memory like from the database, with nothing stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from host.api.app import create_app
from host.db.models import WebhookReceipt, WebhookRequest
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import (
    ADMIN_TOKEN,
    EMAIL_SCRIPT,
    SECRET_API_KEY,
    email_manifest,
    json_body,
    make_host,
)

SCRIPT = EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n",
    "def CRM_Marketing_ParseWebhookRequest(request):\n"
    '    return {"response": {"body": {"sender": settings.get("sender_email")}}}\n',
)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODULE_URL = "/api/v1/tenants/acme/modules/sendmail"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    host = make_host(tmp_path / "host.db", sandbox=pool)
    host.registry.upload(
        from_json_body(json_body(email_manifest(), SCRIPT), max_script_bytes=64 * 1024)
    )
    host.tenants.create("acme", "Acme")
    host.tenants.configure(
        "acme", "sendmail", settings={"api_key": SECRET_API_KEY, "sender_email": "a@acme.test"}
    )
    yield host
    host.close()


@pytest.fixture
def client(node: Host) -> Iterator[TestClient]:
    with TestClient(create_app(node), raise_server_exceptions=False) as test_client:
        yield test_client


def hook_path(host: Host) -> str:
    url = host.tenants.enablement("acme", "sendmail").webhook_url
    return url.removeprefix(host.settings.public_url)


def sender(client: TestClient, path: str) -> object:
    answer = client.post(path, content=b"{}")
    return answer.json().get("sender") if answer.status_code == 200 else answer.status_code


def stored_rows(host: Host) -> tuple[int, int]:
    with host.db.transaction() as session:
        return (
            int(session.scalar(select(func.count()).select_from(WebhookReceipt)) or 0),
            int(session.scalar(select(func.count()).select_from(WebhookRequest)) or 0),
        )


def test_a_fresh_target_is_served_without_reading_the_enablement(
    node: Host, client: TestClient
) -> None:
    path = hook_path(node)
    assert sender(client, path) == "a@acme.test"  # read once, kept
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(node.db.engine, "before_cursor_execute", record)
    try:
        assert sender(client, path) == "a@acme.test"
    finally:
        event.remove(node.db.engine, "before_cursor_execute", record)
    assert statements, "the webhook wrote its receipt"
    assert not [s for s in statements if "FROM enablements" in s or "FROM tenants" in s]


def test_changes_through_this_node_apply_to_the_next_request(
    node: Host, client: TestClient
) -> None:
    path = hook_path(node)
    assert sender(client, path) == "a@acme.test"
    changed = client.patch(
        MODULE_URL, headers=ADMIN, json={"settings": {"sender_email": "b@acme.test"}}
    )
    assert changed.status_code == 200, changed.text
    assert sender(client, path) == "b@acme.test"

    assert client.put(MODULE_URL, headers=ADMIN, json={"enabled": False}).status_code == 200
    assert sender(client, path) == 404
    assert client.put(MODULE_URL, headers=ADMIN, json={"enabled": True}).status_code == 200
    assert sender(client, path) == "b@acme.test"

    assert client.delete("/api/v1/tenants/acme", headers=ADMIN).status_code == 202
    assert sender(client, path) == 404


def test_a_wrong_token_is_refused_from_memory_and_stores_nothing(
    node: Host, client: TestClient
) -> None:
    path = hook_path(node)
    assert sender(client, path) == "a@acme.test"
    before = stored_rows(node)
    wrong = path.rsplit("/", 1)[0] + "/" + "x" * 43
    answer = client.post(wrong, content=b"{}")
    assert answer.status_code == 404
    assert answer.json() == client.post("/hooks/acme/nomodule/abc", content=b"{}").json()
    assert stored_rows(node) == before


def test_another_nodes_change_is_seen_within_the_cache_time(
    node: Host, client: TestClient, pool: SandboxPool
) -> None:
    clock = FakeClock()
    other = Host(node.settings, load_entry_points=False, sandbox=pool).open()  # same database
    other.tenants.webhook_targets.clock = clock
    path = hook_path(node)
    try:
        with TestClient(create_app(other), raise_server_exceptions=False) as other_client:
            assert sender(other_client, path) == "a@acme.test"
            answer = client.patch(
                MODULE_URL, headers=ADMIN, json={"settings": {"sender_email": "c@acme.test"}}
            )
            assert answer.status_code == 200
            clock.now += 0.5
            assert sender(other_client, path) == "a@acme.test"  # within the bound: stale
            clock.now += 0.5  # 1 s after it read the target
            assert sender(other_client, path) == "c@acme.test"

            assert client.put(MODULE_URL, headers=ADMIN, json={"enabled": False}).status_code == 200
            clock.now += 1.0
            assert sender(other_client, path) == 404
            assert sender(client, path) == 404
    finally:
        other.close()


def test_a_cache_time_of_zero_reads_every_request(tmp_path: Path, pool: SandboxPool) -> None:
    host = make_host(tmp_path / "h.db", sandbox=pool, webhook_target_cache_seconds=0)
    try:
        host.registry.upload(
            from_json_body(json_body(email_manifest(), SCRIPT), max_script_bytes=64 * 1024)
        )
        host.tenants.create("acme", "Acme")
        host.tenants.configure("acme", "sendmail", settings={"api_key": SECRET_API_KEY})
        path = hook_path(host)
        with TestClient(create_app(host)) as client:
            assert client.post(path, content=json.dumps({}).encode()).status_code == 200
            assert host.tenants.webhook_targets.fresh(("acme", "sendmail")) is None
    finally:
        host.close()
