"""``CRM_HOST_WEBHOOK_BASE_URL``: webhook URLs on an origin of their own, through the HTTP app.

On the webhook host only ``/hooks/...`` (and ``/healthz``) answer; the API, ``/docs`` and
``/openapi.json`` are 404 there, and ``/hooks/...`` is 404 on every other host, without the
module being called. Unset, everything stays on one origin (the rest of the suite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.api.app import create_app
from host.db.models import Invocation, WebhookReceipt
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli
from tests.e2e.server import free_port
from tests.host.conftest import ADMIN_TOKEN, SECRET_API_KEY, email_manifest, json_body, make_host
from tests.host.test_webhooks import WEBHOOK_SCRIPT

PUBLIC_URL = "https://crm.example.test"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RESULT = json.dumps({"response": {"status": 202, "body": "accepted"}})


def split_host(tmp_path: Path, pool: SandboxPool, webhook_base_url: str) -> Host:
    host = make_host(
        tmp_path / "host.db", sandbox=pool, public_url=PUBLIC_URL, webhook_base_url=webhook_base_url
    )
    host.registry.upload(
        from_json_body(json_body(email_manifest(), WEBHOOK_SCRIPT), max_script_bytes=64 * 1024)
    )
    host.tenants.create("acme", "Acme")
    return host


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = split_host(tmp_path, pool, "https://Hooks.Example.test/")
    yield instance
    instance.close()


def clients(host: Host, webhook_base: str) -> tuple[TestClient, TestClient]:
    """A client on the public origin and one on the webhook origin (same app)."""
    app = create_app(host)
    return (
        TestClient(app, base_url=PUBLIC_URL, raise_server_exceptions=False),
        TestClient(app, base_url=webhook_base, raise_server_exceptions=False),
    )


def enable(api: TestClient) -> str:
    answer = api.put(
        "/api/v1/tenants/acme/modules/sendmail",
        headers=ADMIN,
        json={"version": "1.0.0", "settings": {"api_key": SECRET_API_KEY}, "enabled": True},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["webhookUrl"])


def calls_and_receipts(host: Host) -> tuple[int, int]:
    with host.db.transaction() as session:
        invocations = session.scalar(select(func.count()).select_from(Invocation))
        receipts = session.scalar(select(func.count()).select_from(WebhookReceipt))
        return int(invocations or 0), int(receipts or 0)


def test_webhook_url_is_built_on_the_webhook_base_and_answers_only_there(host: Host) -> None:
    api, hooks = clients(host, "https://hooks.example.test")
    url = enable(api)
    assert url.startswith("https://Hooks.Example.test/hooks/acme/sendmail/")  # as configured
    path = urlsplit(url).path

    assert api.post(path, content=RESULT).status_code == 404
    assert calls_and_receipts(host) == (0, 0)  # refused before the module was called

    answer = hooks.post(path, content=RESULT)
    assert (answer.status_code, answer.text) == (202, "accepted")
    assert answer.headers["content-security-policy"] == "sandbox"
    assert calls_and_receipts(host) == (1, 1)
    assert host.tenants.enablement("acme", "sendmail").webhook_url == url


@pytest.mark.parametrize(
    "path", ["/docs", "/openapi.json", "/redoc", "/api/v1/modules", "/api/v1/tenants", "/console"]
)
def test_api_docs_and_console_are_404_on_the_webhook_host(host: Host, path: str) -> None:
    api, hooks = clients(host, "https://hooks.example.test")
    answer = hooks.get(path, headers=ADMIN)
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
    assert "crm-module-host" not in answer.text  # no API title, no schema
    if path != "/console":  # the console is another branch's route
        assert api.get(path, headers=ADMIN).status_code == 200


def test_an_admin_call_on_the_webhook_host_changes_nothing(host: Host) -> None:
    _, hooks = clients(host, "https://hooks.example.test")
    answer = hooks.post("/api/v1/tenants", headers=ADMIN, json={"id": "evil", "name": "Evil"})
    assert answer.status_code == 404
    assert [t.id for t in host.tenants.list()] == ["acme"]


def test_healthz_answers_on_both_hosts(host: Host) -> None:
    api, hooks = clients(host, "https://hooks.example.test")
    assert api.get("/healthz").json() == hooks.get("/healthz").json() == {"status": "ok"}


def test_same_host_name_on_another_port_is_another_origin(
    tmp_path: Path, pool: SandboxPool
) -> None:
    """``Host`` carries the port, so https://crm.example.test (default port 443) and
    https://crm.example.test:8443 are told apart; a Host without a port is the 443 one."""
    host = split_host(tmp_path, pool, "https://crm.example.test:8443")
    try:
        api, hooks = clients(host, "https://crm.example.test:8443")
        url = enable(api)
        assert url.startswith("https://crm.example.test:8443/hooks/")
        path = urlsplit(url).path
        assert hooks.get("/api/v1/modules", headers=ADMIN).status_code == 404
        assert api.post(path, content=RESULT).status_code == 404
        explicit_default = {"Host": "crm.example.test:443"}
        assert api.post(path, content=RESULT, headers=explicit_default).status_code == 404
        assert hooks.post(path, content=RESULT).status_code == 202
    finally:
        host.close()


def test_unset_keeps_one_origin(tmp_path: Path, pool: SandboxPool) -> None:
    host = make_host(tmp_path / "host.db", sandbox=pool, public_url=PUBLIC_URL)
    try:
        host.registry.upload(
            from_json_body(json_body(email_manifest(), WEBHOOK_SCRIPT), max_script_bytes=64 * 1024)
        )
        host.tenants.create("acme", "Acme")
        api, _ = clients(host, PUBLIC_URL)
        url = enable(api)
        assert url.startswith(f"{PUBLIC_URL}/hooks/acme/sendmail/")
        assert api.post(urlsplit(url).path, content=RESULT).status_code == 202
        assert api.get("/docs").status_code == 200
    finally:
        host.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CRM_HOST_WEBHOOK_BASE_URL": "ftp://hooks.example.test"},
            "CRM_HOST_WEBHOOK_BASE_URL: 'ftp://hooks.example.test' must start with http://",
        ),
        (
            {"CRM_HOST_WEBHOOK_BASE_URL": "https://hooks.example.test/?x=1"},
            "must not have a query or a fragment",
        ),
        (
            {
                "CRM_HOST_PUBLIC_URL": "https://crm.example.test",
                "CRM_HOST_WEBHOOK_BASE_URL": "https://CRM.example.test:443/hooks-base",
            },
            "must name another host or port than CRM_HOST_PUBLIC_URL",
        ),
        # serve's own address is the public URL when CRM_HOST_PUBLIC_URL is unset
        ({"CRM_HOST_WEBHOOK_BASE_URL": "http://127.0.0.1:{port}"}, "must name another host"),
    ],
    ids=["scheme", "query", "same-authority", "same-as-serve-address"],
)
def test_serve_refuses_a_bad_webhook_base_in_one_error(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    port = str(free_port())
    env = {name: value.replace("{port}", port) for name, value in env.items()}
    cli = Cli.in_dir(tmp_path, CRM_HOST_ADMIN_TOKEN="t" * 32, **env)
    result = cli.run("serve", "--host", "127.0.0.1", "--port", port)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "host.db").exists()  # refused before anything was created
