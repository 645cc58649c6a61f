"""Fair shares through the HTTP app: a tenant whose sandbox share is full gets 503 +
Retry-After on its webhook and 429 on its API (and nothing runs, is stored or logged), while
other tenants and the admin share carry on; the optional per-URL rate limit answers 429.
The share is held through the host's own Python API (``host.shares.slot``), exactly as a
long-running call of that tenant holds it, so no test depends on timing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.api.app import create_app
from host.db.models import Invocation, Template, WebhookReceipt
from host.errors import ServiceBusy
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, EMAIL_SCRIPT, email_manifest, json_body, make_host

SCRIPT = EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n",
    'def CRM_Marketing_ParseWebhookRequest(request):\n    return {"actions": []}\n',
)
assert SCRIPT != EMAIL_SCRIPT
KEYS: dict[str, str] = {}


def build_host(tmp_path: Path, pool: SandboxPool, **overrides: Any) -> Host:
    host = make_host(tmp_path / "host.db", sandbox=pool, sandbox_wait_s=0, **overrides)
    host.registry.upload(
        from_json_body(json_body(email_manifest(), SCRIPT), max_script_bytes=10**5)
    )
    for tenant in ("acme", "globex"):
        _, KEYS[tenant] = host.tenants.create(tenant, tenant.title())
        host.tenants.configure(tenant, "sendmail", settings={"api_key": "k" * 12})
    return host


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = build_host(tmp_path, pool)
    yield instance
    instance.close()


def client_of(host: Host) -> TestClient:
    return TestClient(create_app(host), raise_server_exceptions=False)


def hook(host: Host, tenant: str) -> str:
    url = host.tenants.enablement(tenant, "sendmail").webhook_url
    return url.removeprefix(host.settings.public_url)


def count(host: Host, model: Any, tenant: str) -> int:
    with host.db.transaction() as session:
        return int(
            session.scalar(select(func.count()).select_from(model).where(model.tenant_id == tenant))
            or 0
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_full_share_is_503_on_the_webhook_and_429_on_the_api_others_carry_on(host: Host) -> None:
    with client_of(host) as client, host.shares.slot("acme", "sendmail"):
        refused = client.post(hook(host, "acme"), json=[])
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "busy"

        api = client.post(
            "/api/v1/tenants/acme/modules/sendmail/templates/import", headers=bearer(KEYS["acme"])
        )
        assert api.status_code == 429, api.text
        assert int(api.headers["retry-after"]) >= 1
        assert api.json()["error"] == "busy"

        # nothing ran for acme: no invocation, no receipt, no template
        assert count(host, Invocation, "acme") == 0
        assert count(host, WebhookReceipt, "acme") == 0
        assert count(host, Template, "acme") == 0

        # another tenant, the admin API and /healthz are served meanwhile
        assert client.post(hook(host, "globex"), json=[]).status_code == 200
        other = client.post(
            "/api/v1/tenants/globex/modules/sendmail/templates/import",
            headers=bearer(KEYS["globex"]),
        )
        assert other.status_code == 200 and other.json()["imported"] == 3
        assert client.get("/api/v1/tenants", headers=bearer(ADMIN_TOKEN)).status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}

    with client_of(host) as client:  # the slot released, acme is served again
        assert client.post(hook(host, "acme"), json=[]).status_code == 200
    assert count(host, Invocation, "acme") == 1


def test_admin_work_has_its_own_capped_share(tmp_path: Path, pool: SandboxPool) -> None:
    host = build_host(tmp_path, pool, sandbox_workers=4, sandbox_tenant_max_concurrent=1)
    stats = "CRM_Marketing_GetCampaignStats"
    try:
        with host.shares.slot("acme", "sendmail"):
            with pytest.raises(ServiceBusy):
                host.invoker.call("acme", "sendmail", stats, campaignExternalId="x")
            with host.shares.admin_work():
                value = host.invoker.call("acme", "sendmail", stats, campaignExternalId="x")
                assert value.total == 3
                # holding the admin share's one slot, the next admin call is refused
                # although two of the four slots are free: that is the admin cap
                with host.shares.slot("globex", "sendmail"), pytest.raises(ServiceBusy):
                    host.invoker.call("acme", "sendmail", stats, campaignExternalId="x")
            # and it never took from the tenants' share
            value = host.invoker.call("globex", "sendmail", stats, campaignExternalId="x")
            assert value.total == 3
    finally:
        host.close()


def test_webhook_rate_limit_per_url(tmp_path: Path, pool: SandboxPool) -> None:
    host = build_host(tmp_path, pool, webhook_rate_per_s=0.001, webhook_rate_burst=2)
    try:
        with client_of(host) as client:
            url = hook(host, "acme")
            assert [client.post(url, json=[]).status_code for _ in range(2)] == [200, 200]
            limited = client.post(url, json=[])
            assert limited.status_code == 429, limited.text
            assert limited.json()["error"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            assert count(host, WebhookReceipt, "acme") == 2  # the module was not called
            # other URLs have their own bucket; a wrong token is not a URL at all
            assert client.post(hook(host, "globex"), json=[]).status_code == 200
            wrong = url.rsplit("/", 1)[0] + "/not-the-token"
            assert client.post(wrong, json=[]).status_code == 404
    finally:
        host.close()


def test_rate_limit_is_off_by_default(host: Host) -> None:
    with client_of(host) as client:
        url = hook(host, "acme")
        assert {client.post(url, json=[]).status_code for _ in range(12)} == {200}
