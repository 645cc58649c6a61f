"""The admin HTTP API: authentication and authorisation, tenant and enablement routes, and
the one error body shape ``{error, message, problems}``."""

from __future__ import annotations

import pytest

from host.settings_schema import SECRET_MARKER
from tests.host.conftest import (
    ADMIN_TOKEN,
    SECRET_API_KEY,
    email_manifest,
    json_body,
    table_dump,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def acme(client, admin) -> str:
    """Tenant ``acme`` created through the API; its API key."""
    response = client.post("/api/v1/tenants", headers=admin, json={"id": "acme", "name": "Acme"})
    assert response.status_code == 201, response.text
    return response.json()["apiKey"]


@pytest.fixture
def globex(client, admin) -> str:
    response = client.post("/api/v1/tenants", headers=admin, json={"id": "globex", "name": "G"})
    return response.json()["apiKey"]


@pytest.fixture
def module(client, admin) -> str:
    for version in ("1.0.0", "1.1.0"):
        response = client.post(
            "/api/v1/modules", headers=admin, json=json_body(email_manifest(version=version))
        )
        assert response.status_code == 201, response.text
    return "sendmail"


def enable(client, admin, **body):
    body.setdefault("settings", {"api_key": SECRET_API_KEY})
    return client.put("/api/v1/tenants/acme/modules/sendmail", headers=admin, json=body)


# ------------------------------------------------------------------------------------ auth


ADMIN_ROUTES = [
    ("GET", "/api/v1/modules"),
    ("POST", "/api/v1/modules"),
    ("GET", "/api/v1/modules/sendmail"),
    ("GET", "/api/v1/tenants"),
    ("POST", "/api/v1/tenants"),
    ("PUT", "/api/v1/tenants/acme/modules/sendmail"),
    ("POST", "/api/v1/tenants/acme/modules/sendmail/rollback"),
    ("GET", "/-/plugins"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_no_token_is_401_with_challenge(client, method, path) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        bearer("wrong"),
        bearer(ADMIN_TOKEN + "x"),
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Bearer "},
    ],
)
def test_wrong_token_is_401(client, headers) -> None:
    response = client.get("/api/v1/tenants", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_tenant_key_on_admin_route_is_403(client, acme, method, path) -> None:
    response = client.request(method, path, headers=bearer(acme), json={})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_tenant_key_on_another_tenant_is_403(client, acme, globex, module, admin) -> None:
    enable(client, admin)
    for path in (
        "/api/v1/tenants/acme",
        "/api/v1/tenants/acme/modules",
        "/api/v1/tenants/acme/modules/sendmail",
    ):
        response = client.get(path, headers=bearer(globex))
        assert response.status_code == 403, path
        assert "does not belong to tenant acme" in response.json()["message"]


def test_tenant_key_on_its_own_tenant_is_200(client, acme, module, admin) -> None:
    enable(client, admin)
    assert client.get("/api/v1/tenants/acme", headers=bearer(acme)).json()["id"] == "acme"
    listed = client.get("/api/v1/tenants/acme/modules", headers=bearer(acme))
    assert listed.status_code == 200
    assert listed.json()[0]["module"] == "sendmail"
    shown = client.get("/api/v1/tenants/acme/modules/sendmail", headers=bearer(acme))
    assert shown.status_code == 200


def test_admin_on_tenant_routes_is_200(client, acme, module, admin) -> None:
    enable(client, admin)
    for path in (
        "/api/v1/tenants/acme",
        "/api/v1/tenants/acme/modules",
        "/api/v1/tenants/acme/modules/sendmail",
    ):
        assert client.get(path, headers=admin).status_code == 200, path


def test_healthz_needs_no_token(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_plugins_listing(client, admin) -> None:
    plugins = {p["name"]: p["hooks"] for p in client.get("/-/plugins", headers=admin).json()}
    assert "crm_marketing_import_templates" in plugins["invocation_log"]
    assert "crm_marketing_import_templates" in plugins["contract"]


def test_admin_token_unset_means_no_admin(tmp_path) -> None:
    """With no admin token configured, no bearer token is the admin (not even empty)."""
    from fastapi.testclient import TestClient

    from host.api.app import create_app
    from tests.host.conftest import make_host

    host = make_host(tmp_path / "x.db", admin_token=None)
    try:
        with TestClient(create_app(host)) as client:
            assert client.get("/api/v1/tenants", headers=bearer("")).status_code == 401
            assert client.get("/api/v1/tenants", headers=bearer("None")).status_code == 401
    finally:
        host.close()


# --------------------------------------------------------------------------------- tenants


def test_create_tenant(client, admin, host) -> None:
    response = client.post("/api/v1/tenants", headers=admin, json={"id": "acme", "name": "Acme"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "apiKey"}
    # the key works, and is never shown again
    assert client.get("/api/v1/tenants/acme", headers=bearer(body["apiKey"])).status_code == 200
    assert body["apiKey"] not in client.get("/api/v1/tenants", headers=admin).text
    assert body["apiKey"] not in client.get("/api/v1/tenants/acme", headers=admin).text


def test_duplicate_tenant_is_409(client, admin, acme, host) -> None:
    before = table_dump(host)
    response = client.post("/api/v1/tenants", headers=admin, json={"id": "acme", "name": "X"})
    assert response.status_code == 409
    assert response.json()["problems"] == [{"location": "id", "message": "taken"}]
    assert table_dump(host) == before


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"id": "ACME", "name": "Acme"}, "id"),
        ({"id": "acme", "name": ""}, "name"),
        ({"id": "acme"}, "body.name"),
        ({"id": "acme", "name": "A", "extra": 1}, "body.extra"),
        ({"id": 5, "name": "A"}, "body.id"),
    ],
)
def test_invalid_tenant_is_422(client, admin, host, body, location) -> None:
    before = table_dump(host)
    response = client.post("/api/v1/tenants", headers=admin, json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_input"
    assert location in [p["location"] for p in payload["problems"]]
    assert table_dump(host) == before


def test_unknown_tenant_is_404(client, admin) -> None:
    response = client.get("/api/v1/tenants/nope", headers=admin)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "tenant nope does not exist",
        "problems": [],
    }


# ------------------------------------------------------------------------------ enablement


def test_enable_latest(client, admin, acme, module) -> None:
    response = enable(client, admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == "1.1.0"
    assert body["enabled"] is True
    assert body["settings"] == {"api_key": SECRET_MARKER}
    assert body["webhookUrl"].startswith("https://crm.example.test/hooks/acme/sendmail/")


def test_pin_missing_version_is_404_and_stores_nothing(client, admin, acme, module, host) -> None:
    before = table_dump(host)
    response = enable(client, admin, version="9.0.0")
    assert response.status_code == 404
    assert response.json()["problems"] == [
        {"location": "version", "message": "known versions: 1.0.0, 1.1.0"}
    ]
    assert table_dump(host) == before


def test_bad_settings_are_422_naming_the_field(client, admin, acme, module, host) -> None:
    before = table_dump(host)
    response = enable(client, admin, settings={"api_key": SECRET_API_KEY, "batch_size": -1})
    assert response.status_code == 422
    assert [p["location"] for p in response.json()["problems"]] == ["settings.batch_size"]
    assert table_dump(host) == before


def test_pin_rollback_disable(client, admin, acme, module) -> None:
    assert enable(client, admin, version="1.0.0").json()["version"] == "1.0.0"
    upgraded = enable(client, admin, version="1.1.0", settings=None).json()
    assert (upgraded["version"], upgraded["previousVersion"]) == ("1.1.0", "1.0.0")
    rolled = client.post("/api/v1/tenants/acme/modules/sendmail/rollback", headers=admin)
    assert rolled.status_code == 200
    assert rolled.json()["version"] == "1.0.0"
    disabled = enable(client, admin, enabled=False, settings=None).json()
    assert disabled["enabled"] is False
    assert disabled["version"] == "1.0.0"


def test_rollback_without_previous_is_409(client, admin, acme, module) -> None:
    enable(client, admin)
    response = client.post("/api/v1/tenants/acme/modules/sendmail/rollback", headers=admin)
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


def test_unknown_tenant_or_module_on_enablement_is_404(client, admin, acme, module) -> None:
    assert (
        client.put(
            "/api/v1/tenants/nope/modules/sendmail",
            headers=admin,
            json={"settings": {"api_key": SECRET_API_KEY}},
        ).status_code
        == 404
    )
    assert (
        client.put(
            "/api/v1/tenants/acme/modules/nope",
            headers=admin,
            json={"settings": {"api_key": SECRET_API_KEY}},
        ).status_code
        == 404
    )
    assert client.get("/api/v1/tenants/acme/modules/sendmail", headers=admin).status_code == 404
    assert (
        client.post("/api/v1/tenants/acme/modules/sendmail/rollback", headers=admin).status_code
        == 404
    )


def test_enablement_body_is_validated(client, admin, acme, module) -> None:
    response = client.put(
        "/api/v1/tenants/acme/modules/sendmail", headers=admin, json={"enabled": "maybe"}
    )
    assert response.status_code == 422
    assert response.json()["problems"][0]["location"] == "body.enabled"
    response = client.put(
        "/api/v1/tenants/acme/modules/sendmail", headers=admin, json={"settings": []}
    )
    assert response.status_code == 422


def test_tenant_key_cannot_configure_its_own_modules(client, admin, acme, module) -> None:
    response = client.put(
        "/api/v1/tenants/acme/modules/sendmail",
        headers=bearer(acme),
        json={"settings": {"api_key": SECRET_API_KEY}},
    )
    assert response.status_code == 403


def test_openapi_is_served(client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/tenants/{tenant_id}/modules/{module_id}" in spec["paths"]


def test_multipart_without_package_field_is_422(client, admin, host) -> None:
    before = table_dump(host)
    response = client.post(
        "/api/v1/modules", headers=admin, files={"other": ("m.zip", b"PK", "application/zip")}
    )
    assert response.status_code == 422
    assert response.json()["problems"] == [
        {"location": "package", "message": "a zip file field is required"}
    ]
    response = client.post("/api/v1/modules", headers=admin, data={"package": "text"})
    assert response.status_code == 422
    assert table_dump(host) == before


def test_oversize_json_upload_is_413(client, admin, host) -> None:
    cap = host.settings.max_archive_bytes
    body = json_body(script="#" * cap)
    response = client.post("/api/v1/modules", headers=admin, json=body)
    assert response.status_code == 413
    assert response.json()["problems"][0]["location"] == "body"


def test_json_upload_with_oversize_script_is_422(client, admin, host) -> None:
    body = json_body(script="#" * (host.settings.max_script_bytes + 1))
    response = client.post("/api/v1/modules", headers=admin, json=body)
    assert response.status_code == 422
    assert response.json()["problems"][0]["location"] == "body.script"


def test_multipart_with_too_many_files_gets_the_standard_error_body(client, admin) -> None:
    files = [("package", ("a.zip", b"x")), ("package", ("b.zip", b"y"))]
    response = client.post("/api/v1/modules", files=files, headers=admin)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["problems"][0]["location"] == "package"


def test_put_replaces_settings_and_patch_merges(client, admin, acme, module, host) -> None:
    url = "/api/v1/tenants/acme/modules/sendmail"
    first = enable(client, admin, settings={"api_key": SECRET_API_KEY, "batch_size": 10})
    assert first.json()["settings"] == {"api_key": SECRET_MARKER, "batch_size": 10}
    patched = client.patch(url, headers=admin, json={"settings": {"sender_email": "a@acme.test"}})
    assert patched.status_code == 200
    assert patched.json()["settings"] == {
        "api_key": SECRET_MARKER,
        "batch_size": 10,
        "sender_email": "a@acme.test",
    }
    replaced = client.put(url, headers=admin, json={"settings": {"batch_size": 20}})
    assert replaced.json()["settings"] == {"api_key": SECRET_MARKER, "batch_size": 20}
    assert host.tenants.runtime("acme", "sendmail").settings["api_key"] == SECRET_API_KEY
    bad_patch = client.patch(url, headers=admin, json={"settings": {"batch_size": -5}})
    assert bad_patch.status_code == 422
    assert client.get(url, headers=admin).json()["settings"]["batch_size"] == 20


def test_deeply_nested_json_bodies_are_422_not_500(client, admin, acme) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    for path in ("/api/v1/modules", "/api/v1/tenants/acme/contacts"):
        response = client.post(
            path, headers={**admin, "Content-Type": "application/json"}, content=nested
        )
        assert response.status_code == 422, (path, response.text)
        assert response.json()["problems"] == [
            {"location": "body", "message": "nested deeper than 64 levels"}
        ]
