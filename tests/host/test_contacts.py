"""Contacts: bulk upsert from JSON and CSV (matching by id, then case-insensitive email;
all-or-nothing with every bad row named; size caps), one contact with its subscriber state,
and ``crm.contacts(ids)`` as a real sandboxed script sees it (own tenant only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.db.models import Contact, ContactUnsubscription
from host.errors import InvalidInput, ModuleCallFailed
from host.marketing import contact_rows
from host.marketing.contact_rows import CsvContactReader, rows_from_csv, rows_from_json
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host, table_dump

PEEK_SCRIPT = '''\
import json


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    """Answers with what crm.contacts returns for the comma-separated ids."""
    if templateExternalId == "too-many":
        return json.dumps(crm.contacts(["c" + str(i) for i in range(1001)]))
    return json.dumps(crm.contacts(templateExternalId.split(",")))
'''


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    for tenant in ("acme", "globex"):
        instance.tenants.create(tenant, tenant.title())
    yield instance
    instance.close()


@pytest.fixture
def keys(host: Host) -> dict[str, str]:
    return {t: host.tenants.create(t, t.title())[1] for t in ("initech", "umbrella")}


def upsert(host: Host, tenant: str, rows: list[dict[str, Any]]) -> Any:
    return host.contacts.upsert(tenant, rows_from_json(rows))


def problems(error: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [str(p) for p in error.value.problems]


# --- upsert ----------------------------------------------------------------------------------


def test_create_then_match_by_id_and_by_email_case_insensitively(host: Host) -> None:
    first = upsert(
        host,
        "acme",
        [
            {"id": "c1", "name": "Ann", "email": "Ann@Example.com"},
            {"name": "Bob", "email": "bob@example.com", "phone": "+1 (555) 010-0000"},
        ],
    )
    assert (first.created, first.updated) == (2, 0)
    assert first.ids[0] == "c1"
    assert len(first.ids[1]) == 32  # uuid4 hex

    second = upsert(
        host,
        "acme",
        [
            {"name": "Bobby", "email": "BOB@EXAMPLE.COM"},
            {"id": "c1", "name": "Ann B", "email": "ann.b@example.com"},
            {"name": "Cy"},
        ],
    )
    assert second.ids[:2] == [first.ids[1], "c1"]
    assert (second.created, second.updated) == (1, 2)
    bob = host.contacts.get("acme", first.ids[1])
    assert (bob.name, bob.email, bob.phone) == ("Bobby", "BOB@EXAMPLE.COM", "+1 (555) 010-0000")
    ann = host.contacts.get("acme", "c1")
    assert (ann.name, ann.email, ann.status) == ("Ann B", "ann.b@example.com", "Subscribed")
    # Ann's old address is free again
    third = upsert(host, "acme", [{"name": "New Ann", "email": "ann@example.com"}])
    assert third.created == 1


def test_rows_of_one_request_apply_in_order(host: Host) -> None:
    result = upsert(
        host,
        "acme",
        [
            {"name": "A", "email": "same@example.com"},
            {"name": "A2", "email": "SAME@example.com"},
            {"id": "x", "name": "X"},
            {"id": "x", "name": "X2", "email": "x@example.com"},
        ],
    )
    assert result.ids[0] == result.ids[1]
    assert result.ids[2:] == ["x", "x"]
    assert (result.created, result.updated) == (2, 2)
    assert host.contacts.get("acme", "x").email == "x@example.com"


def test_an_email_moves_when_its_holder_releases_it_first(host: Host) -> None:
    upsert(
        host,
        "acme",
        [{"id": "a", "name": "A", "email": "a@x.io"}, {"id": "b", "name": "B", "email": "b@x.io"}],
    )
    upsert(
        host,
        "acme",
        [
            {"id": "b", "name": "B", "email": "new-b@x.io"},
            {"id": "a", "name": "A", "email": "b@x.io"},
        ],
    )
    assert host.contacts.get("acme", "a").email == "b@x.io"
    assert host.contacts.get("acme", "b").email == "new-b@x.io"


def test_a_bad_row_stores_nothing_and_every_bad_row_is_named(host: Host) -> None:
    upsert(host, "acme", [{"id": "taken", "name": "T", "email": "taken@example.com"}])
    before = table_dump(host)
    rows = [{"name": f"ok {i}", "email": f"ok{i}@example.com"} for i in range(20)]
    rows[3] = {"name": "bad", "email": "not-an-email"}
    rows[17] = {"name": "", "phone": "call me", "extra": 1}
    rows[18] = {"id": "other", "name": "dup", "email": "TAKEN@example.com"}
    with pytest.raises(InvalidInput) as error:
        upsert(host, "acme", rows[:18])
    assert problems(error) == [
        "rows[3].email: is not a valid email address",
        "rows[17].extra: is not a contact field (id, name, email, phone)",
        "rows[17].name: is required",
        "rows[17].phone: may contain only digits, spaces, ( ) . - and a leading +",
    ]
    with pytest.raises(InvalidInput) as conflict:
        upsert(host, "acme", rows[18:])
    assert problems(conflict) == ["rows[0].email: is the email of contact taken"]
    assert table_dump(host) == before


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"name": "x" * 301}, "rows[0].name: is longer than 300 characters"),
        ({"name": "n", "email": "a@" + "b" * 320 + ".io"}, "rows[0].email: is longer than 320"),
        ({"name": "n", "id": "has space"}, "rows[0].id: must start with a letter or digit"),
        ({"name": "n", "phone": "12"}, "rows[0].phone: may contain only digits"),
        ({"name": 5}, "rows[0].name: must be a string"),
        ("just a string", "rows[0]: must be an object"),
    ],
)
def test_field_rules(row: Any, problem: str) -> None:
    with pytest.raises(InvalidInput) as error:
        rows_from_json([row])
    assert problems(error)[0].startswith(problem)


def test_same_ids_in_two_tenants_are_two_contacts(host: Host) -> None:
    upsert(host, "acme", [{"id": "c1", "name": "Acme's", "email": "x@example.com"}])
    upsert(host, "globex", [{"id": "c1", "name": "Globex's", "email": "x@example.com"}])
    assert host.contacts.get("acme", "c1").name == "Acme's"
    assert host.contacts.get("globex", "c1").name == "Globex's"


def test_get_shows_status_and_unsubscribed_categories(host: Host) -> None:
    upsert(host, "acme", [{"id": "c1", "name": "Ann"}])
    with host.db.transaction() as session:
        session.get(Contact, ("acme", "c1")).status = "Unsubscribed"  # type: ignore[union-attr]
        session.add(ContactUnsubscription(tenant_id="acme", contact_id="c1", category="news"))
    view = host.contacts.get("acme", "c1")
    assert view.status == "Unsubscribed"
    assert [u.category for u in view.unsubscribed] == ["news"]


# --- CSV -------------------------------------------------------------------------------------


def test_csv_parses_as_it_streams_with_quoted_newlines() -> None:
    body = 'phone,Name,email,id\r\n"+1 555 0100","Doe, Jane",jane@example.com,j1\r\n\r\n'
    body += ',"Multi\nline",,\n,"Quote ""Q""",q@example.com,\n'
    reader = CsvContactReader()
    for i in range(len(body.encode())):  # one byte at a time: splits lines, quotes, UTF-8
        reader.feed(body.encode()[i : i + 1])
    rows = reader.close()
    assert [(r.where, r.id, r.name, r.email, r.phone) for r in rows] == [
        ("line 2", "j1", "Doe, Jane", "jane@example.com", "+1 555 0100"),
        ("line 4", None, "Multi\nline", None, None),
        ("line 6", None, 'Quote "Q"', "q@example.com", None),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ["line 1: the header row (id,name,email,phone) is missing"]),
        (b"email,phone\nx@y.io,1234\n", ["line 1: the header must name the columns"]),
        (b"name,email\nA,a@b.io,extra\n", ["line 2: has 3 fields, the header has 2"]),
        (b'name\n"never closed\n', ["line 2: a quoted field is never closed"]),
        (b"name\n\xff\xfe\n", ["line 2: is not UTF-8 text"]),
        (
            b"name,email\nA,ok@b.io\nB,bad\nC,also bad\n",
            ["line 3: email: is not a valid email address", "line 4: email: is not a valid"],
        ),
    ],
)
def test_csv_problems(body: bytes, expected: list[str]) -> None:
    with pytest.raises(InvalidInput) as error:
        rows_from_csv([body])
    found = problems(error)
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        assert got.startswith(want)


# --- HTTP ------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_http_json_and_csv_upsert(host: Host, client: TestClient, keys: dict[str, str]) -> None:
    me = bearer(keys["initech"])
    url = "/api/v1/tenants/initech/contacts"
    created = client.post(url, headers=me, json=[{"name": "Ann", "email": "ann@example.com"}])
    assert created.status_code == 200, created.text
    assert created.json()["created"] == 1
    ann = created.json()["ids"][0]

    csv_rows = "id,name,email,phone\n" + "".join(
        f",Person {i},p{i}@example.com,+1555{i:07d}\n" for i in range(3000)
    )
    csv_rows += ",Ann Updated,ANN@EXAMPLE.COM,\n"
    answer = client.post(url, headers=me | {"Content-Type": "text/csv"}, content=csv_rows.encode())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["created"], body["updated"], len(body["ids"])) == (3000, 1, 3001)
    assert body["ids"][-1] == ann

    shown = client.get(f"{url}/{ann}", headers=me)
    assert shown.status_code == 200
    assert shown.json()["name"] == "Ann Updated"
    assert shown.json()["unsubscribedCategories"] == []


def test_http_bad_rows_422_and_nothing_stored(
    host: Host, client: TestClient, keys: dict[str, str]
) -> None:
    me = bearer(keys["initech"])
    url = "/api/v1/tenants/initech/contacts"
    before = table_dump(host)
    answer = client.post(
        url,
        headers=me | {"Content-Type": "text/csv"},
        content=b"name,email\nGood,good@example.com\nBad,nope\n",
    )
    assert answer.status_code == 422
    assert answer.json()["problems"] == [
        {"location": "line 3: email", "message": "is not a valid email address"}
    ]
    not_json = client.post(url, headers=me | {"Content-Type": "application/json"}, content=b"{")
    assert not_json.status_code == 422
    wrong_type = client.post(url, headers=me | {"Content-Type": "application/xml"}, content=b"<a/>")
    assert wrong_type.status_code == 422
    assert table_dump(host) == before


def test_http_oversize_body_and_too_many_rows(
    host: Host, client: TestClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contact_rows, "MAX_ROWS", 5)
    monkeypatch.setattr("host.api.routes.contacts.MAX_BODY_BYTES", 200)
    me = bearer(keys["initech"])
    url = "/api/v1/tenants/initech/contacts"
    big = json.dumps([{"name": "x" * 50} for _ in range(4)]).encode()
    assert client.post(url, headers=me, content=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while streaming
        yield b"name\n"
        for _ in range(100):
            yield b"someone\n"

    streamed = client.post(url, headers=me | {"Content-Type": "text/csv"}, content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "too_large"

    rows = client.post(url, headers=me, json=[{"name": "n"}] * 6)
    assert rows.status_code == 413
    csv_rows = client.post(
        url, headers=me | {"Content-Type": "text/csv"}, content=b"name\n" + b"n\n" * 6
    )
    assert csv_rows.status_code == 413


def test_http_cross_tenant_access_is_forbidden(
    host: Host, client: TestClient, keys: dict[str, str]
) -> None:
    upsert(host, "initech", [{"id": "c1", "name": "Secret"}])
    other = bearer(keys["umbrella"])
    assert client.get("/api/v1/tenants/initech/contacts/c1", headers=other).status_code == 403
    posted = client.post("/api/v1/tenants/initech/contacts", headers=other, json=[{"name": "x"}])
    assert posted.status_code == 403
    assert client.get("/api/v1/tenants/umbrella/contacts/c1", headers=other).status_code == 404
    missing = client.post(
        "/api/v1/tenants/nobody/contacts", headers=bearer(ADMIN_TOKEN), json=[{"name": "x"}]
    )
    assert missing.status_code == 404


# --- crm.contacts ----------------------------------------------------------------------------


@pytest.fixture
def peek(host: Host) -> Any:
    host.registry.upload(
        from_json_body(
            {"manifest": email_manifest(id="peek"), "script": PEEK_SCRIPT},
            max_script_bytes=64 * 1024,
        )
    )
    for tenant in ("acme", "globex"):
        host.tenants.configure(tenant, "peek", settings={"api_key": "k-12345678"})

    def _peek(tenant: str, ids: str) -> Any:
        html = host.invoker.call(
            tenant, "peek", "CRM_Marketing_GetTemplateHTML", templateExternalId=ids
        )
        return json.loads(html)

    return _peek


def test_crm_contacts_sees_only_its_own_tenant(host: Host, peek: Any) -> None:
    upsert(host, "acme", [{"id": "a1", "name": "Ann", "email": "ann@acme.io", "phone": "+100"}])
    upsert(host, "acme", [{"id": "same", "name": "Acme's"}])
    upsert(host, "globex", [{"id": "g1", "name": "Gus"}, {"id": "same", "name": "Globex's"}])

    assert peek("acme", "g1,missing,same,a1,a1") == [
        {"id": "same", "name": "Acme's", "email": None, "phone": None, "status": "Subscribed"},
        {
            "id": "a1",
            "name": "Ann",
            "email": "ann@acme.io",
            "phone": "+100",
            "status": "Subscribed",
        },
    ]
    assert peek("globex", "a1") == []
    assert [c["name"] for c in peek("globex", "same,g1")] == ["Globex's", "Gus"]


def test_crm_contacts_caps_the_ids_per_call(host: Host, peek: Any) -> None:
    with pytest.raises(ModuleCallFailed) as failure:
        peek("acme", "too-many")
    assert failure.value.kind == "limit_exceeded"
    assert "at most 1000 ids" in failure.value.message
