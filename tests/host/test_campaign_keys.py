"""The attribution map lent to scripts (``crm.set_campaign_keys`` / ``crm.campaign_for_key``),
exercised by a sandboxed module through the real webhook endpoint: keys are kept in the host
table scoped to (tenant, module), survive across calls, are bounded per call and per module,
and bad arguments fail the call with a clear error and nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.api.app import create_app
from host.db.models import CampaignKey
from host.marketing import campaign_keys
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import (
    ADMIN_TOKEN,
    EMAIL_SCRIPT,
    SECRET_API_KEY,
    email_manifest,
    json_body,
    make_host,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

KEYS_FUNCTION = """\
def CRM_Marketing_ParseWebhookRequest(request):
    body = json.loads(request.body)
    if "set" in body:
        new = crm.set_campaign_keys(body["set"][0], body["set"][1])
        return {"response": {"body": {"new": new}}}
    return {"response": {"body": {"found": crm.campaign_for_key(body["get"])}}}
"""
KEYS_SCRIPT = "import json\n" + EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n",
    KEYS_FUNCTION,
)
assert KEYS_FUNCTION in KEYS_SCRIPT


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db", sandbox=pool)
    for module in ("sendmail", "othermail"):
        instance.registry.upload(
            from_json_body(
                json_body(email_manifest(id=module), KEYS_SCRIPT), max_script_bytes=64 * 1024
            )
        )
    for tenant in ("acme", "globex"):
        instance.tenants.create(tenant, tenant.title())
        for module in ("sendmail", "othermail"):
            instance.tenants.configure(tenant, module, settings={"api_key": SECRET_API_KEY})
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host), raise_server_exceptions=False) as test_client:
        yield test_client


def call(
    client: TestClient,
    host: Host,
    body: dict[str, Any],
    tenant: str = "acme",
    module: str = "sendmail",
) -> Any:
    url = host.tenants.enablement(tenant, module).webhook_url
    return client.post(url.removeprefix(host.settings.public_url), content=json.dumps(body))


def rows(host: Host) -> int:
    with host.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(CampaignKey)) or 0)


def test_keys_are_kept_across_calls_and_scoped_to_tenant_and_module(
    client: TestClient, host: Host
) -> None:
    first = call(client, host, {"set": ["cmp-1", ["msg-1", "msg-2", "msg-1"]]})
    assert first.status_code == 200, first.text
    assert first.json() == {"new": 2}
    assert call(client, host, {"get": "msg-2"}).json() == {"found": "cmp-1"}
    assert call(client, host, {"get": "msg-2"}, tenant="globex").json() == {"found": None}
    assert call(client, host, {"get": "msg-2"}, module="othermail").json() == {"found": None}
    # a key set again (the service reused an id) points at the newer campaign
    assert call(client, host, {"set": ["cmp-2", ["msg-2", "msg-3"]]}).json() == {"new": 1}
    assert call(client, host, {"get": "msg-2"}).json() == {"found": "cmp-2"}
    assert call(client, host, {"get": "msg-1"}).json() == {"found": "cmp-1"}
    assert rows(host) == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"set": ["", ["k"]]}, "campaignExternalId must be a non-empty string"),
        ({"set": ["cmp", "k"]}, "keys must be a list"),
        ({"set": ["cmp", ["ok", 5]]}, "a key must be a non-empty string"),
        ({"set": ["cmp", ["x" * 256]]}, "at most 255 chars"),
        ({"set": ["cmp", [f"k{i}" for i in range(5001)]]}, "at most 5000 keys per call"),
        ({"get": ["not", "a", "string"]}, "key must be a non-empty string"),
    ],
)
def test_bad_arguments_fail_the_call_and_store_nothing(
    client: TestClient, host: Host, body: dict[str, Any], message: str
) -> None:
    reply = call(client, host, body)
    assert reply.status_code == 500
    receipt = client.get("/api/v1/tenants/acme/webhooks/receipts?limit=1", headers=ADMIN)
    assert message in str(receipt.json()[0]["error"])
    assert rows(host) == 0
    assert call(client, host, {"get": "k"}).status_code == 200  # the host keeps serving


def test_a_module_keeps_a_bounded_number_of_keys(
    client: TestClient, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_keys, "MAX_KEYS_PER_MODULE", 3)
    assert call(client, host, {"set": ["cmp", ["a", "b"]]}).status_code == 200
    assert call(client, host, {"set": ["cmp", ["c", "d"]]}).status_code == 500
    receipt = client.get("/api/v1/tenants/acme/webhooks/receipts?limit=1", headers=ADMIN)
    assert "keeps at most 3 keys" in str(receipt.json()[0]["error"])
    assert rows(host) == 2
    assert call(client, host, {"set": ["cmp2", ["a", "b"]]}).status_code == 200  # re-pointing
    assert call(client, host, {"set": ["cmp", ["c"]]}, module="othermail").status_code == 200


def test_tenant_deletion_purges_its_keys(client: TestClient, host: Host) -> None:
    assert call(client, host, {"set": ["cmp", ["a"]]}).status_code == 200
    assert call(client, host, {"set": ["cmp", ["b"]]}, tenant="globex").status_code == 200
    host.tenant_deletion.tombstone("acme")
    host.tenant_deletion.purge("acme")
    with host.db.transaction() as session:
        left = session.scalars(select(CampaignKey.tenant_id)).all()
    assert left == ["globex"]
