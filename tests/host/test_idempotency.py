"""Idempotency-Key on campaign creation and contact import, through HTTP: a retry gets the
first answer, another body with the same key is a 422 naming the header, two concurrent
duplicates create one campaign, and keys expire."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from host.api.app import create_app
from host.db.models import Campaign, Contact, IdempotencyKey, utcnow
from host.modules.packages import from_json_body
from host.platform import Host
from tests.host.conftest import ADMIN_TOKEN, json_body, make_host

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CAMPAIGNS = "/api/v1/tenants/acme/campaigns"
CONTACTS = "/api/v1/tenants/acme/contacts"


@pytest.fixture
def host(db_path: Path) -> Iterator[Host]:
    instance = make_host(db_path)
    instance.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
    for tenant in ("acme", "other"):
        instance.tenants.create(tenant, tenant.title())
        instance.tenants.configure(tenant, "sendmail", settings={"api_key": "k" * 12})
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> TestClient:
    # No lifespan: campaigns stay queued (the send job is not what is tested here).
    return TestClient(create_app(host))


def campaign(name: str = "Spring") -> dict[str, Any]:
    return {
        "module": "sendmail",
        "name": name,
        "type": "Email",
        "subject": "Hi",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "contactIds": "all",
    }


def count(host: Host, model: Any, **where: Any) -> int:
    with host.db.transaction() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(session.scalar(query) or 0)


@pytest.fixture(autouse=True)
def contacts(client: TestClient) -> None:
    for tenant in ("acme", "other"):
        rows = [{"name": "Ann", "email": "ann@x.test"}]
        url = f"/api/v1/tenants/{tenant}/contacts"
        assert client.post(url, json=rows, headers=ADMIN).status_code == 200


def test_a_retried_campaign_gets_the_first_answer(client: TestClient, host: Host) -> None:
    headers = {**ADMIN, "Idempotency-Key": "crm-req-1"}
    first = client.post(CAMPAIGNS, json=campaign(), headers=headers)
    again = client.post(CAMPAIGNS, json=campaign(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert count(host, Campaign, tenant_id="acme") == 1
    # without a key every request creates
    assert client.post(CAMPAIGNS, json=campaign(), headers=ADMIN).json()["id"] != first.json()["id"]
    assert count(host, Campaign, tenant_id="acme") == 2


def test_same_key_other_body_is_refused_naming_the_header(client: TestClient, host: Host) -> None:
    headers = {**ADMIN, "Idempotency-Key": "k-1"}
    assert client.post(CAMPAIGNS, json=campaign(), headers=headers).status_code == 202
    other = client.post(CAMPAIGNS, json=campaign("Autumn"), headers=headers)
    assert other.status_code == 422
    assert [p["location"] for p in other.json()["problems"]] == ["header.Idempotency-Key"]
    assert "different request" in other.json()["problems"][0]["message"]
    assert count(host, Campaign, tenant_id="acme") == 1


def test_keys_are_scoped_per_tenant_and_route(client: TestClient, host: Host) -> None:
    headers = {**ADMIN, "Idempotency-Key": "shared"}
    mine = client.post(CAMPAIGNS, json=campaign(), headers=headers)
    theirs = client.post("/api/v1/tenants/other/campaigns", json=campaign(), headers=headers)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    rows = [{"name": "Bob", "email": "bob@x.test"}]
    imported = client.post(CONTACTS, json=rows, headers=headers)  # same key, other route
    assert imported.status_code == 200 and "idempotent-replayed" not in imported.headers


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "é"])
def test_malformed_keys_are_refused(client: TestClient, host: Host, key: str) -> None:
    headers = [*ADMIN.items(), ("Idempotency-Key", key.encode())]
    answer = client.post(CAMPAIGNS, json=campaign(), headers=headers)
    assert answer.status_code == 422, answer.text
    assert [p["location"] for p in answer.json()["problems"]] == ["header.Idempotency-Key"]
    assert count(host, Campaign) == 0


def test_an_invalid_request_stores_no_key(client: TestClient, host: Host) -> None:
    headers = {**ADMIN, "Idempotency-Key": "fix-and-retry"}
    bad = client.post(CAMPAIGNS, json={**campaign(), "type": "Fax"}, headers=headers)
    assert bad.status_code == 422
    assert count(host, IdempotencyKey) == 0
    assert client.post(CAMPAIGNS, json=campaign(), headers=headers).status_code == 202


def test_concurrent_duplicates_create_one_campaign(
    client: TestClient, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests pass the look-up before either commits (the barrier holds them), so
    only the key's primary key stops the second campaign."""
    barrier = threading.Barrier(2, timeout=20)
    create = host.campaigns.create

    def create_together(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        return create(*args, **kwargs)

    monkeypatch.setattr(host.campaigns, "create", create_together)
    answers: list[Any] = []

    def send() -> None:
        headers = {**ADMIN, "Idempotency-Key": "race"}
        answers.append(client.post(CAMPAIGNS, json=campaign(), headers=headers))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    assert sorted(a.headers.get("idempotent-replayed", "") for a in answers) == ["", "true"]
    assert count(host, Campaign, tenant_id="acme") == 1


def test_keys_expire(client: TestClient, host: Host) -> None:
    headers = {**ADMIN, "Idempotency-Key": "old"}
    first = client.post(CAMPAIGNS, json=campaign(), headers=headers).json()
    with host.db.transaction() as session:
        session.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    later = client.post(CAMPAIGNS, json=campaign(), headers=headers)
    assert later.status_code == 202 and later.json()["id"] != first["id"]
    assert count(host, IdempotencyKey) == 1


def test_contact_import_is_idempotent_json_and_csv(client: TestClient, host: Host) -> None:
    headers = {**ADMIN, "Idempotency-Key": "import-7"}
    rows = [{"name": "Cy"}]  # no id, no email: a second import would create a second contact
    first = client.post(CONTACTS, json=rows, headers=headers)
    again = client.post(CONTACTS, json=rows, headers=headers)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert count(host, Contact, tenant_id="acme", name="Cy") == 1

    csv_headers = {**ADMIN, "Idempotency-Key": "csv-1", "Content-Type": "text/csv"}
    body = "name\nDee\n"
    assert client.post(CONTACTS, content=body, headers=csv_headers).status_code == 200
    replay = client.post(CONTACTS, content=body, headers=csv_headers)
    assert replay.headers["idempotent-replayed"] == "true"
    changed = client.post(CONTACTS, content="name\nEve\n", headers=csv_headers)
    assert changed.status_code == 422
    assert changed.json()["problems"][0]["location"] == "header.Idempotency-Key"
    assert count(host, Contact, tenant_id="acme", name="Dee") == 1
    assert count(host, Contact, tenant_id="acme", name="Eve") == 0
