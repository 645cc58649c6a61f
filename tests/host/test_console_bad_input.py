"""Bad text sent to the console is refused the way the API refuses it: a NUL in a path, a
query or a form field is an error page naming the field, and nothing reaches a service
(PostgreSQL cannot even store a NUL). A form cannot carry a lone surrogate: its bytes are
decoded with replacement characters."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.host.conftest import ADMIN_TOKEN

HIDDEN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def signed_in_as_admin(client: TestClient) -> str:
    """Sign in with the admin token through the form; the session's CSRF token. The test
    host's public URL is https, so the console's cookies are ``Secure``: use https too."""
    client.base_url = client.base_url.copy_with(scheme="https")
    page = client.get("/console/sign-in")
    sign_in_token = HIDDEN_TOKEN.search(page.text)
    assert sign_in_token, page.text
    done = client.post(
        "/console/sign-in/admin-token",
        data={"csrf_token": sign_in_token.group(1), "next": "/console", "token": ADMIN_TOKEN},
        follow_redirects=False,
    )
    assert done.status_code in (302, 303), done.text
    session_token = HIDDEN_TOKEN.search(client.get("/console/tenants").text)
    assert session_token
    return session_token.group(1)


def test_a_nul_in_a_console_form_field_is_refused_and_nothing_is_stored(
    client: TestClient,
) -> None:
    csrf = signed_in_as_admin(client)
    for bad in ("ac\x00me", "ac%00me"):  # raw and percent-encoded
        reply = client.post(
            "/console/tenants",
            content=f"csrf_token={csrf}&id=acme&name={bad}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert reply.status_code == 422, reply.text
        assert "text/html" in reply.headers["content-type"]
        assert "form.name" in reply.text
    listed = client.get("/api/v1/tenants", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert listed.json() == []
    assert client.get("/console/tenants").status_code == 200  # still serving


def test_a_nul_in_a_console_path_or_query_is_an_error_page(client: TestClient) -> None:
    signed_in_as_admin(client)
    for url in ("/console/tenants/ac%00me", "/console/audit?actor=%00"):
        reply = client.get(url)
        assert reply.status_code == 422, (url, reply.text)
        assert "text/html" in reply.headers["content-type"]
