"""Deleting a tenant through HTTP: gone at once (404, key and webhook URLs dead), purged in
batches of bounded size while other tenants are served, resumed after a restart; and
rotating a tenant's API key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.api.app import create_app
from host.db.models import Campaign, Contact, Delivery, Tenant
from host.modules.packages import from_json_body
from host.platform import Host
from host.tenant_deletion import PurgeBatch
from tests.host.conftest import ADMIN_TOKEN, json_body, make_host, table_dump

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BATCH = 400
CONTACTS = 1500


def open_host(db_path: Path) -> Host:
    return make_host(db_path, tenant_purge_batch_rows=BATCH)


@pytest.fixture
def host(db_path: Path) -> Iterator[Host]:
    instance = open_host(db_path)
    instance.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
    for tenant in ("acme", "other"):
        instance.tenants.create(tenant, tenant.title())
        instance.tenants.configure(tenant, "sendmail", settings={"api_key": "k" * 12})
    with instance.db.transaction() as session:
        session.add_all(
            Contact(tenant_id="acme", id=f"c{i:05d}", name="x", email=f"p{i}@acme.test")
            for i in range(CONTACTS)
        )
        session.add(
            Campaign(
                id="acme-camp",
                tenant_id="acme",
                module_id="sendmail",
                module_version="1.0.0",
                type="Email",
                name="Spring",
                stage="preparing",
                status="Sending",
            )
        )
        session.flush()
        session.add_all(
            Delivery(campaign_id="acme-camp", contact_id=f"c{i:05d}") for i in range(CONTACTS)
        )
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> TestClient:
    return TestClient(create_app(host))  # no lifespan: the background purge is not running


def acme_rows(host: Host) -> int:
    """Rows anywhere in the database that belong to tenant acme."""
    dump = table_dump(host)
    return sum(1 for rows in dump.values() for row in rows if "acme" in row or "acme-camp" in row)


def test_a_deleted_tenant_is_gone_at_once(client: TestClient, host: Host) -> None:
    key = client.post("/api/v1/tenants/acme/api-key/rotate", headers=ADMIN).json()["apiKey"]
    webhook_url = host.tenants.enablement("acme", "sendmail").webhook_url
    webhook = webhook_url.removeprefix("https://crm.example.test")
    assert client.post(webhook, json={}).status_code != 404  # the URL answers before
    as_tenant = client.delete("/api/v1/tenants/acme", headers={"Authorization": f"Bearer {key}"})
    assert as_tenant.status_code == 403  # only the admin deletes tenants
    assert client.get("/api/v1/tenants/acme", headers=ADMIN).status_code == 200

    deleted = client.delete("/api/v1/tenants/acme", headers=ADMIN)
    assert deleted.status_code == 202 and deleted.json() == {
        "id": "acme",
        "deleted": True,
        "purge": "pending",
    }
    tenant_key = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/tenants/acme", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/tenants/acme/contacts", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/tenants/acme/campaigns/acme-camp", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/tenants/acme/contacts", headers=tenant_key).status_code == 401
    assert client.post(webhook, json={}).status_code == 404
    assert [t["id"] for t in client.get("/api/v1/tenants", headers=ADMIN).json()] == ["other"]
    again = client.post("/api/v1/tenants", json={"id": "acme", "name": "A"}, headers=ADMIN)
    assert again.status_code == 409 and "being deleted" in again.json()["message"]
    assert client.delete("/api/v1/tenants/acme", headers=ADMIN).status_code == 404
    with host.db.transaction() as session:  # its running campaign was stopped
        stage = session.scalar(select(Campaign.stage).where(Campaign.id == "acme-camp"))
    assert stage == "cancelled"
    assert client.get("/api/v1/tenants/other/contacts", headers=ADMIN).status_code == 200
    assert acme_rows(host) > CONTACTS  # only a tombstone so far: the purge comes after


def test_purge_runs_in_bounded_batches_while_others_are_served(
    client: TestClient, host: Host
) -> None:
    host.delete_tenant("acme")
    batches: list[PurgeBatch] = []
    served: list[int] = []

    def between_batches(batch: PurgeBatch) -> None:
        batches.append(batch)
        url = "/api/v1/tenants/other/contacts"
        row = [{"name": "During", "email": f"d{len(batches)}@other.test"}]
        served.append(client.post(url, json=row, headers=ADMIN).status_code)
        served.append(client.get(url, headers=ADMIN).status_code)

    total = host.tenant_deletion.purge("acme", on_batch=between_batches)
    assert total >= 2 * CONTACTS
    assert all(b.rows <= BATCH for b in batches) and len(batches) >= 2 * CONTACTS // BATCH
    assert {b.table for b in batches} >= {"deliveries", "contacts", "campaigns", "tenants"}
    assert set(served) == {200}
    assert acme_rows(host) == 0
    with host.db.transaction() as session:
        others = session.scalar(select(func.count()).where(Contact.tenant_id == "other"))
    assert others == len(batches)
    created = client.post("/api/v1/tenants", json={"id": "acme", "name": "A"}, headers=ADMIN)
    assert created.status_code == 201  # the id is free again


def test_a_restart_mid_purge_finishes_it(host: Host, db_path: Path) -> None:
    host.delete_tenant("acme")
    stop = threading.Event()
    done: list[PurgeBatch] = []

    def crash_after_two(batch: PurgeBatch) -> None:
        done.append(batch)
        if len(done) == 2:
            stop.set()

    host.tenant_deletion.purge("acme", stop=stop, on_batch=crash_after_two)
    host.close()
    assert len(done) == 2 and 0 < acme_rows(host) < 2 * CONTACTS

    restarted = open_host(db_path)
    try:
        with TestClient(create_app(restarted)) as client:  # serve: the purger resumes
            deadline = time.monotonic() + 60  # a liveness bound, not a timing assertion
            while restarted.tenant_deletion.pending() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert restarted.tenant_deletion.pending() == []
            assert client.get("/api/v1/tenants/other", headers=ADMIN).status_code == 200
        assert acme_rows(restarted) == 0
        with restarted.db.transaction() as session:
            assert session.get(Tenant, "acme") is None
    finally:
        restarted.close()


def test_rotating_the_api_key(client: TestClient, host: Host) -> None:
    old = client.post("/api/v1/tenants/acme/api-key/rotate", headers=ADMIN).json()["apiKey"]
    answer = client.post("/api/v1/tenants/acme/api-key/rotate", headers=ADMIN)
    assert answer.status_code == 200
    new = answer.json()["apiKey"]
    assert new != old and answer.json()["id"] == "acme"
    url = "/api/v1/tenants/acme/contacts"
    assert client.get(url, headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get(url, headers={"Authorization": f"Bearer {new}"}).status_code == 200
    as_tenant = client.post(
        "/api/v1/tenants/acme/api-key/rotate", headers={"Authorization": f"Bearer {new}"}
    )
    assert as_tenant.status_code == 403  # only the admin rotates keys
    assert client.get(url, headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert client.post("/api/v1/tenants/nope/api-key/rotate", headers=ADMIN).status_code == 404
    with host.db.transaction() as session:
        stored = session.scalar(select(Tenant.api_key_hash).where(Tenant.id == "acme"))
    assert new not in str(stored)
