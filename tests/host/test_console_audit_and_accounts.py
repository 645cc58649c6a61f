"""The audit log and the console's accounts, through HTTP.

Every successful change through the API or the console is one audit entry naming who (a
user's email, ``admin token NAME``, ``tenant ID API key``), what, when and from which
address; refused changes leave none. ``GET /api/v1/audit`` is the admin's and pages back
with ``before``. Users are created on the console's *Users* page: only an argon2id hash of
the password is stored, a short password and a taken email are refused by field.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from host.api.app import create_app
from host.db.models import ConsoleUser
from host.platform import Host
from tests.host.conftest import (
    ADMIN_TOKEN,
    checkpoint,
    database_bytes,
    make_host,
    table_dump,
)
from tests.host.console_client import (
    DEFAULT_ADDRESS,
    FAST_HASHER,
    PASSWORD,
    ConsoleVisitor,
    signed_in_admin,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    instance = make_host(tmp_path_factory.mktemp("audit") / "host.db")
    instance.accounts.hasher = FAST_HASHER
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def api(host: Host) -> TestClient:
    return TestClient(create_app(host), base_url="https://testserver", client=(DEFAULT_ADDRESS, 1))


def _audit(api: TestClient, **params: Any) -> dict[str, Any]:
    answer = api.get("/api/v1/audit", headers=ADMIN, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))


def _now() -> datetime:
    return datetime.now().astimezone()


def test_api_and_console_changes_are_recorded_with_who_what_when_and_where(
    host: Host, api: TestClient
) -> None:
    started = _now() - timedelta(seconds=1)
    created = api.post("/api/v1/tenants", headers=ADMIN, json={"id": "acme", "name": "Acme"})
    assert created.status_code == 201
    tenant_key = {"Authorization": f"Bearer {created.json()['apiKey']}"}
    contacts = api.post("/api/v1/tenants/acme/contacts", headers=tenant_key, json=[{"name": "A"}])
    assert contacts.status_code < 300, contacts.text

    admin = signed_in_admin(api.app, address="198.51.100.30")
    form = {"csrf_token": admin.csrf(), "email": "Mia@Example.com", "password": PASSWORD,
            "role": "marketer", "tenant": "acme"}  # fmt: skip
    assert admin.post("/console/users", form).status_code == 303
    marketer = ConsoleVisitor(api.app, address="198.51.100.31")
    assert marketer.sign_in("mia@example.com").status_code == 303
    finished = _now() + timedelta(seconds=1)

    entries = _audit(api)["items"][:5]
    oldest_first = [
        (e["actor"], e["action"], e["method"], e["path"], e["status"], e["client"])
        for e in reversed(entries)
    ]
    assert oldest_first == [
        (
            "admin token configured",
            "POST /api/v1/tenants",
            "POST",
            "/api/v1/tenants",
            201,
            DEFAULT_ADDRESS,
        ),
        (
            "tenant acme API key",
            "POST /api/v1/tenants/acme/contacts",
            "POST",
            "/api/v1/tenants/acme/contacts",
            contacts.status_code,
            DEFAULT_ADDRESS,
        ),
        (
            "admin token configured",
            "signed in to the console with the admin token",
            "POST",
            "/console/sign-in/admin-token",
            303,
            "198.51.100.30",
        ),
        (
            "admin token configured",
            "created user mia@example.com (marketer of tenant acme)",
            "POST",
            "/console/users",
            303,
            "198.51.100.30",
        ),
        (
            "mia@example.com",
            "signed in to the console",
            "POST",
            "/console/sign-in",
            303,
            "198.51.100.31",
        ),
    ]
    assert all(started <= _at(e) <= finished for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True), "newest first"


def test_refused_changes_leave_no_entry(host: Host, api: TestClient) -> None:
    before = _audit(api, limit=500)["items"]
    assert api.post("/api/v1/tenants", headers=ADMIN, json={"id": "Bad Id!"}).status_code == 422
    assert api.post("/api/v1/tenants", json={"id": "x", "name": "x"}).status_code == 401
    visitor = ConsoleVisitor(api.app)
    assert visitor.sign_in("nobody@example.com", "wrong passphrase!!").status_code == 401
    admin = signed_in_admin(api.app)
    assert admin.post("/console/tenants", {"id": "x", "name": "x"}).status_code == 403
    after = _audit(api, limit=500)["items"]
    assert [e for e in after if e not in before] == [after[0]]  # only the admin's sign-in
    assert after[0]["action"] == "signed in to the console with the admin token"


def test_the_audit_api_is_the_admins(host: Host, api: TestClient) -> None:
    _, tenant_key = host.tenants.create("globex", "Globex")
    assert api.get("/api/v1/audit").status_code == 401
    refused = api.get("/api/v1/audit", headers={"Authorization": f"Bearer {tenant_key}"})
    assert refused.status_code == 403
    assert "items" not in refused.json()


def test_the_audit_api_pages_back_with_before(host: Host, api: TestClient) -> None:
    for n in range(5):
        created = api.post("/api/v1/tenants", headers=ADMIN, json={"id": f"t{n}", "name": "T"})
        assert created.status_code == 201
    everything = _audit(api, limit=500)
    assert everything["nextBefore"] is None
    seen: list[int] = []
    page = _audit(api, limit=2)
    while True:
        assert len(page["items"]) <= 2
        seen += [e["id"] for e in page["items"]]
        if page["nextBefore"] is None:
            break
        assert page["nextBefore"] == page["items"][-1]["id"]
        page = _audit(api, limit=2, before=page["nextBefore"])
    assert seen == [e["id"] for e in everything["items"]]
    assert len(seen) >= 5

    mine = _audit(api, actor="admin token configured", limit=500)["items"]
    assert mine and all(e["actor"] == "admin token configured" for e in mine)
    assert len(mine) < len(everything["items"])  # the tenant's own change is left out


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ("limit=0", "query.limit"),
        ("limit=501", "query.limit"),
        ("limit=many", "query.limit"),
        ("before=0", "query.before"),
        ("before=newest", "query.before"),
        ("offset=10", "query.offset"),
        ("actor=" + "a" * 321, "query.actor"),
    ],
)
def test_bad_paging_of_the_audit_api_is_a_422_naming_the_parameter(
    api: TestClient, query: str, location: str
) -> None:
    answer = api.get(f"/api/v1/audit?{query}", headers=ADMIN)
    assert answer.status_code == 422, answer.text
    assert [p["location"] for p in answer.json()["problems"]] == [location]


def test_the_audit_page_pages_and_refuses_bad_paging(api: TestClient) -> None:
    admin = signed_in_admin(api.app)
    page = admin.http.get("/console/audit")
    assert page.status_code == 200 and "signed in to the console with the admin token" in page.text
    bad = admin.http.get("/console/audit?before=zero")
    assert bad.status_code == 422 and "query.before" in bad.text


# ------------------------------------------------------------------------------ accounts


def _users(host: Host) -> list[tuple[str, str]]:
    with host.db.transaction() as session:
        return [(u.email, u.password_hash) for u in session.scalars(select(ConsoleUser))]


def _create(admin: ConsoleVisitor, email: str, password: str, role: str = "integrator") -> Any:
    form = {"csrf_token": admin.csrf(), "email": email, "password": password, "role": role,
            "tenant": ""}  # fmt: skip
    return admin.post("/console/users", form)


def test_a_password_is_stored_only_as_an_argon2id_hash(
    tmp_path: Path,
) -> None:
    host = make_host(tmp_path / "host.db")
    try:
        admin = signed_in_admin(create_app(host))
        passphrase = "correct horse battery staple 7"
        assert _create(admin, "ivy@example.com", passphrase).status_code == 303
        ((email, stored),) = _users(host)
        assert email == "ivy@example.com" and stored.startswith("$argon2id$")
        checkpoint(tmp_path / "host.db")
        assert passphrase.encode() not in database_bytes(tmp_path / "host.db")
        ivy = ConsoleVisitor(admin.http.app)
        assert ivy.sign_in("ivy@example.com", passphrase).status_code == 303
    finally:
        host.close()


def test_a_short_password_is_refused_by_field_and_nothing_is_stored(
    host: Host, api: TestClient
) -> None:
    admin = signed_in_admin(api.app)
    before = table_dump(host)
    refused = _create(admin, "shorty@example.com", "elevenchars")
    assert refused.status_code == 422
    assert "must be at least 12 characters" in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert "elevenchars" not in refused.text, "the typed password is not sent back"
    assert table_dump(host) == before


def test_a_taken_email_is_refused_in_any_case(host: Host, api: TestClient) -> None:
    admin = signed_in_admin(api.app)
    assert _create(admin, "dup@example.com", PASSWORD).status_code == 303
    admin.csrf()  # the page after the redirect shows (and clears) the "created" message
    before = table_dump(host)
    again = _create(admin, "  DUP@Example.COM ", "another passphrase 99")
    assert again.status_code == 422
    assert "a user with email dup@example.com already exists" in again.text
    assert table_dump(host) == before
    assert [e for e, _ in _users(host)].count("dup@example.com") == 1
