"""Bad input through the HTTP API: lone surrogates, NUL characters, invalid UTF-8 and
nesting deeper than 64 levels are a 422 naming the field, nothing is stored, and the host
keeps serving (the enablement stays readable)."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from host.api.bodies import CheckedRoute
from sandbox.limits import MAX_NESTING_DEPTH
from tests.host.conftest import SECRET_API_KEY, json_body, package_zip, table_dump

ENABLEMENT = "/api/v1/tenants/acme/modules/sendmail"


@pytest.fixture
def enabled(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post(
        "/api/v1/tenants", headers=admin, json={"id": "acme", "name": "A"}
    ).is_success
    assert client.post("/api/v1/modules", headers=admin, json=json_body()).status_code == 201
    response = client.put(ENABLEMENT, headers=admin, json={"settings": {"api_key": SECRET_API_KEY}})
    assert response.status_code == 200, response.text


def raw_json(client: TestClient, method: str, url: str, admin: dict[str, str], body: bytes):
    headers = {**admin, "Content-Type": "application/json"}
    return client.request(method, url, headers=headers, content=body)


def nested(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        (rb'{"settings": {"sender_email": "\ud800"}}', "body.settings.sender_email", "surrogate"),
        (rb'{"settings": {"sender_email": "a\u0000b"}}', "body.settings.sender_email", "NUL"),
        (rb'{"settings": {"x\udfff": 1}}', "body.settings", "a key contains a lone surrogate"),
        (b'{"settings": {"sender_email": "\xff\xfe"}}', "body", "not UTF-8"),
        (b'{"settings": {"sender_email": "\xed\xa0\x80"}}', "body", "not UTF-8"),
    ],
    ids=["surrogate", "nul", "surrogate-key", "invalid-utf8", "utf8-encoded-surrogate"],
)
@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_bad_text_in_settings_is_422_and_nothing_stored(
    client, admin, host, enabled, method, body, location, message
) -> None:
    before = table_dump(host)
    response = raw_json(client, method, ENABLEMENT, admin, body)
    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    assert len(problems) == 1 and problems[0]["location"] == location, problems
    assert message in problems[0]["message"]
    assert table_dump(host) == before
    shown = client.get(ENABLEMENT, headers=admin)
    assert shown.status_code == 200 and shown.json()["enabled"] is True
    assert host.tenants.runtime("acme", "sendmail").settings["api_key"] == SECRET_API_KEY


def test_nesting_limit_is_64_levels(client, admin, host, enabled) -> None:
    # 64 levels (the body itself is one) are parsed and reach the schema, which names the
    # unknown field; one level more is refused before any validation, naming its path
    within = {"id": "deep", "name": "x", "extra": nested(MAX_NESTING_DEPTH - 1)}
    response = client.post("/api/v1/tenants", headers=admin, json=within)
    assert response.status_code == 422
    assert all("nested deeper" not in p["message"] for p in response.json()["problems"])

    before = table_dump(host)
    too_deep = {"settings": {"api_key": SECRET_API_KEY, "x": nested(MAX_NESTING_DEPTH)}}
    response = client.patch(ENABLEMENT, headers=admin, json=too_deep)
    assert response.status_code == 422, response.text
    (problem,) = response.json()["problems"]
    assert problem["message"] == f"nested deeper than {MAX_NESTING_DEPTH} levels"
    assert problem["location"].startswith("body.settings.x.a.a.a")
    assert "more" in problem["location"] and len(problem["location"]) < 120
    assert table_dump(host) == before


def test_settings_at_the_nesting_limit_reach_the_schema(client, admin, host, enabled) -> None:
    # body (1) > settings (2) > x (3) ... : 64 levels in all are parsed and validated
    deep = {"settings": {"api_key": SECRET_API_KEY, "x": nested(MAX_NESTING_DEPTH - 2)}}
    response = client.patch(ENABLEMENT, headers=admin, json=deep)
    assert response.status_code == 422
    (problem,) = response.json()["problems"]
    assert problem["location"] == "settings.x"  # the settings schema's verdict: unknown key
    assert "nested" not in problem["message"]


def test_bad_text_in_json_contacts_and_module_bodies(client, admin, host, enabled) -> None:
    before = table_dump(host)
    contacts = raw_json(
        client, "POST", "/api/v1/tenants/acme/contacts", admin, rb'[{"name": "A\u0000"}]'
    )
    assert contacts.status_code == 422
    assert contacts.json()["problems"] == [
        {"location": "body[0].name", "message": "contains a NUL character"}
    ]
    body = json.dumps(json_body()).replace('"SendMail"', '"Send\\ud800Mail"').encode()
    module = raw_json(client, "POST", "/api/v1/modules", admin, body)
    assert module.status_code == 422
    assert module.json()["problems"][0]["location"] == "body.manifest.name"
    assert table_dump(host) == before


def test_csv_contacts_with_invalid_utf8_or_nul_name_the_line(client, admin, host, enabled) -> None:
    before = table_dump(host)
    headers = {**admin, "Content-Type": "text/csv"}
    url = "/api/v1/tenants/acme/contacts"
    bad_utf8 = client.post(
        url, headers=headers, content=b"name,email\nAnn,a@x.test\nB\xffb,b@x.test\n"
    )
    assert bad_utf8.status_code == 422
    assert bad_utf8.json()["problems"] == [{"location": "line 3", "message": "is not UTF-8 text"}]
    nul = client.post(url, headers=headers, content=b"name,email\nAnn,a@x.test\nB\x00b,b@x.test\n")
    assert nul.status_code == 422
    assert nul.json()["problems"] == [
        {"location": "line 3: name", "message": "contains a NUL character"}
    ]
    assert table_dump(host) == before


def test_zip_module_with_nul_in_manifest_is_422(client, admin, host, enabled) -> None:
    before = table_dump(host)
    manifest = json.loads(json.dumps(json_body()["manifest"]))
    manifest["description"] = "bad\u0000description"
    manifest["version"] = "2.0.0"
    response = client.post(
        "/api/v1/modules",
        headers=admin,
        files={"package": ("m.zip", package_zip(manifest), "application/zip")},
    )
    assert response.status_code == 422, response.text
    assert any(
        p["location"].endswith("description") and "NUL" in p["message"]
        for p in response.json()["problems"]
    ), response.json()
    assert table_dump(host) == before


def test_nul_in_path_or_query_is_422(client, admin, enabled) -> None:
    response = client.get("/api/v1/tenants/ac%00me/modules", headers=admin)
    assert response.status_code == 422
    assert response.json()["problems"] == [
        {"location": "path.tenant_id", "message": "contains a NUL character"}
    ]
    response = client.get("/api/v1/tenants/acme/invocations?function=a%00", headers=admin)
    assert response.status_code == 422
    assert response.json()["problems"][0]["location"] == "query.function"


def api_routes(routes: list[object]) -> list[APIRoute]:
    """The API routes of an app, through included routers (``original_router``)."""
    found: list[APIRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found.extend(api_routes(included.routes))
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def test_every_api_route_checks_its_input(client) -> None:
    """A router added later without the check would let bad text reach the services."""
    routes = api_routes(client.app.routes)
    assert len(routes) > 20
    docs_pages = {"/docs", "/docs/oauth2-redirect", "/redoc"}  # static pages, no input
    unchecked = [r.path for r in routes if not isinstance(r, CheckedRoute)]
    assert set(unchecked) <= docs_pages, unchecked
