"""Messenger types and bots through a real messenger module in the sandbox: the validated
lists, 501 when the module does not implement a function, 502 with the kind when it returns
something invalid, and tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host

MESSENGER_SCRIPT = """\
def CRM_Marketing_GetMessengerTypes():
    return [AccountType.Telegram, "WhatsApp"]


def CRM_Marketing_GetMessengerBots():
    if settings.get("broken"):
        return [{"id": "b9", "name": "Fax", "type": "Fax"}]
    return [
        CRM_Marketing_MessengerBot(id="b1", name="Support", type=AccountType.Telegram),
        {"id": "b2", "name": "Sales", "type": "WhatsApp", "description": "EU line"},
    ]
"""

TYPES_ONLY_SCRIPT = """\
def CRM_Marketing_GetMessengerTypes():
    return ["Viber"]


def CRM_Marketing_GetMessengerBots():
    raise NotImplementedError
"""

SETTINGS = {
    "type": "object",
    "properties": {"token": {"type": "string", "writeOnly": True}, "broken": {"type": "boolean"}},
}


def messenger_manifest(module_id: str) -> dict[str, Any]:
    return email_manifest(id=module_id, name=module_id.title(), kind="messenger", settings=SETTINGS)


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    for module_id, script in (("tgbot", MESSENGER_SCRIPT), ("viberish", TYPES_ONLY_SCRIPT)):
        package = {"manifest": messenger_manifest(module_id), "script": script}
        instance.registry.upload(from_json_body(package, max_script_bytes=64 * 1024))
    yield instance
    instance.close()


@pytest.fixture
def key(host: Host) -> str:
    _, api_key = host.tenants.create("acme", "Acme")
    host.tenants.create("globex", "Globex")
    for module_id in ("tgbot", "viberish"):
        host.tenants.configure("acme", module_id, settings={"token": "t-123"})
    return api_key


def url(module_id: str, what: str, tenant: str = "acme") -> str:
    return f"/api/v1/tenants/{tenant}/modules/{module_id}/messenger/{what}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_types_and_bots(client: TestClient, key: str) -> None:
    types = client.get(url("tgbot", "types"), headers=bearer(key))
    assert types.status_code == 200, types.text
    assert types.json() == {"types": ["Telegram", "WhatsApp"]}
    bots = client.get(url("tgbot", "bots"), headers=bearer(key))
    assert bots.status_code == 200, bots.text
    assert bots.json() == {
        "bots": [
            {"id": "b1", "name": "Support", "type": "Telegram", "description": None},
            {"id": "b2", "name": "Sales", "type": "WhatsApp", "description": "EU line"},
        ]
    }


def test_not_implemented_is_501(client: TestClient, key: str) -> None:
    assert client.get(url("viberish", "types"), headers=bearer(key)).json() == {"types": ["Viber"]}
    bots = client.get(url("viberish", "bots"), headers=bearer(key))
    assert bots.status_code == 501
    assert bots.json()["error"] == "not_implemented"
    assert "does not implement CRM_Marketing_GetMessengerBots" in bots.json()["message"]


def test_an_invalid_answer_is_502(host: Host, client: TestClient, key: str) -> None:
    host.tenants.update_settings("acme", "tgbot", {"broken": True})
    bots = client.get(url("tgbot", "bots"), headers=bearer(key))
    assert bots.status_code == 502
    assert bots.json()["error"] == "invalid_return"
    assert "type" in bots.json()["message"]


def test_email_modules_have_no_messenger_functions(
    host: Host, client: TestClient, key: str
) -> None:
    package = {
        "manifest": email_manifest(),
        "script": "def CRM_Marketing_GetTemplateHTML(x):\n    return ''\n",
    }
    host.registry.upload(from_json_body(package, max_script_bytes=64 * 1024))
    host.tenants.configure("acme", "sendmail", settings={"api_key": "k-12345678"})
    answer = client.get(url("sendmail", "types"), headers=bearer(key))
    assert answer.status_code == 404


def test_other_tenants_and_modules_not_enabled(client: TestClient, key: str) -> None:
    assert client.get(url("tgbot", "bots", "globex"), headers=bearer(key)).status_code == 403
    admin = bearer(ADMIN_TOKEN)
    assert client.get(url("tgbot", "bots", "globex"), headers=admin).status_code == 404
    assert client.get(url("nosuch", "types"), headers=bearer(key)).status_code == 404
