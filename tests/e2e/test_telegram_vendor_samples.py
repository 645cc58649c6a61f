"""Telegram vendor samples, as their exact bytes, against the real webhook endpoint of a
tenant with the Telegram module enabled (the host's HTTP app; the module calls the local Bot
API emulator through the admin allow-list, and the emulator posts its updates to the host).
INDEX.md §3 lists the expected effects."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from emulators.runner import serve
from emulators.telegram import SECRET_HEADER, TelegramState, create_app
from host.api.app import create_app as host_app
from host.modules.packages import from_directory
from tests.host.conftest import ADMIN_TOKEN, make_host, table_dump
from tests.modules.emulated import declaring
from tests.vendor_samples import VENDOR_SAMPLES

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "telegram"
SAMPLES = VENDOR_SAMPLES
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RAW_HTTP = (SAMPLES / "telegram_webhook_request.RECONSTRUCTED.http").read_bytes()
HEAD, _, RAW_BODY = RAW_HTTP.partition(b"\r\n\r\n")
SECRET = dict(line.split(": ", 1) for line in HEAD.decode().split("\r\n")[1:] if ": " in line)[
    SECRET_HEADER
]
CONTACTS = [
    {"id": "42", "name": "Test Firstname", "email": "test@example.com"},
    {"id": "7", "name": "FN LN", "email": "fn@example.com"},
    {"id": "8", "name": "Blocker", "email": "blocker@example.com"},
    {"id": "9", "name": "Never linked", "email": "nolink@example.com"},
]


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


class World:
    def __init__(self, client: TestClient, host: Any, bot: TelegramState, server: Any):
        self.client, self.host, self.bot, self.server = client, host, bot, server
        settings = {"bot_token": bot.token, "webhook_secret": SECRET, "api_base_url": server.url}
        path = "/api/v1/tenants/acme/modules/telegram"
        reply = client.put(path, json={"settings": settings}, headers=ADMIN)
        assert reply.status_code == 200, reply.text
        self.hook = reply.json()["webhookUrl"]
        settings["webhook_url"] = self.hook
        assert client.put(path, json={"settings": settings}, headers=ADMIN).status_code == 200

    def post(self, body: bytes, secret: str | None = SECRET) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        return self.client.post(self.hook, content=body, headers=headers)

    def storage(self) -> dict[str, Any]:
        return dict(self.host.module_storage.load("acme", "telegram"))

    def contact(self, contact_id: str) -> dict[str, Any]:
        return self.client.get(f"/api/v1/tenants/acme/contacts/{contact_id}", headers=ADMIN).json()

    def categories(self, contact_id: str) -> list[str]:
        return [u["category"] for u in self.contact(contact_id)["unsubscribedCategories"]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    bot = TelegramState()
    with serve(create_app(bot)) as server:
        host = make_host(tmp_path / "host.db", egress_allow=[server.netloc])
        host.registry.upload(
            declaring(from_directory(MODULE_DIR, max_script_bytes=256 * 1024), server.netloc)
        )
        try:
            with TestClient(host_app(host)) as client:
                bot.webhook_client = client
                client.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=ADMIN)
                reply = client.post("/api/v1/tenants/acme/contacts", json=CONTACTS, headers=ADMIN)
                assert reply.status_code in (200, 201), reply.text
                yield World(client, host, bot, server)
        finally:
            host.close()


def test_bots_endpoint_registers_the_webhook_with_its_secret(world: World) -> None:
    reply = world.client.get("/api/v1/tenants/acme/modules/telegram/messenger/bots", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    assert reply.json()["bots"][0]["id"] == "123456789"
    assert world.bot.webhook == {
        "url": world.hook,
        "secret_token": SECRET,
        "allowed_updates": ["message", "callback_query", "my_chat_member"],
    }
    types = world.client.get("/api/v1/tenants/acme/modules/telegram/messenger/types", headers=ADMIN)
    assert "Telegram" in json.dumps(types.json())


def test_start_message_records_the_chat(world: World) -> None:
    """INDEX: chat 1111111 recorded (plain /start has no payload to link a contact with)."""
    assert world.post(sample("telegram_update_message_start.json")).status_code == 200
    assert world.storage()["chat:1111111"] == {
        "contact": None,
        "blocked": False,
        "optedOut": False,
    }


def test_start_payload_and_raw_http_request_link_contact_42(world: World) -> None:
    """INDEX: chat 1111111 linked to contact c_42 (the .http sample carries the same body
    with the secret header: accepted because the header equals the configured secret)."""
    assert world.post(RAW_BODY).status_code == 200
    assert world.storage()["contact:42"] == 1111111
    body = sample("telegram_update_message_start_payload.RECONSTRUCTED.json")
    assert world.post(body).status_code == 200  # a replay changes nothing
    assert world.storage()["chat:1111111"]["contact"] == "42"


@pytest.mark.parametrize(
    ("secret", "status"),
    [(None, 401), ("", 401), ("Crm_Test-Secret_0123456780", 403), (SECRET[:-1], 403)],
)
def test_wrong_or_missing_secret_is_refused_and_nothing_applied(
    world: World, secret: str | None, status: int
) -> None:
    world.post(RAW_BODY)  # chat 1111111 ↔ contact 42
    before = table_dump(world.host)
    for name in (
        "telegram_update_callback_query_message.RECONSTRUCTED.json",
        "telegram_update_my_chat_member_kicked.json",
        "telegram_update_message_start.json",
    ):
        reply = world.post(sample(name), secret=secret)
        assert reply.status_code == status, (name, reply.text)
    after = table_dump(world.host)
    kept = (
        "webhook_receipts",
        "webhook_requests",
        "invocations",
    )  # a refused request is kept for replay
    assert {k: v for k, v in after.items() if k not in kept} == {
        k: v for k, v in before.items() if k not in kept
    }
    assert world.categories("42") == []


def test_edited_message_and_inline_callback_are_ignored(world: World) -> None:
    """INDEX: edited_message ignored (2xx); inline callback query (no message, stray "type"
    in from) parsed tolerantly (2xx, answered with answerCallbackQuery)."""
    before = table_dump(world.host)
    assert world.post(sample("telegram_update_edited_message.json")).status_code == 200
    reply = world.post(sample("telegram_update_callback_query_inline.json"))
    assert reply.status_code == 200
    assert reply.json() == {
        "method": "answerCallbackQuery",
        "callback_query_id": "4382bfdwdsb323b2d9",
    }
    after = table_dump(world.host)
    assert after["contacts"] == before["contacts"]
    assert after["contact_unsubscriptions"] == before["contact_unsubscriptions"]


def test_unsubscribe_button_unsubscribes_contact_42(world: World) -> None:
    """INDEX: unsubscribe chat 1111111 (contact 42) — from the "telegram" category (the CRM
    has no per-campaign unsubscribe; see the README)."""
    world.post(RAW_BODY)
    reply = world.post(sample("telegram_update_callback_query_message.RECONSTRUCTED.json"))
    assert reply.status_code == 200
    assert reply.json()["method"] == "answerCallbackQuery"
    assert world.categories("42") == ["telegram"]
    assert world.contact("42")["status"] == "Subscribed"  # e-mail is not affected


def test_my_chat_member_kicked_unsubscribes_the_linked_contact(world: World) -> None:
    """INDEX: the user blocked the bot → messenger subscription stopped for chat 0. The
    sample's chat 0 is first linked to contact 7 through the emulator (a /start c_7)."""
    world.bot.webhook = {"url": world.hook, "secret_token": SECRET}
    assert world.bot.user_starts(0, "c_7").status_code == 200
    assert world.post(sample("telegram_update_my_chat_member_kicked.json")).status_code == 200
    assert world.categories("7") == ["telegram"]
    assert world.storage()["chat:0"]["blocked"] is True


def wait_for_campaign(world: World, campaign_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = world.client.get(f"/api/v1/tenants/acme/campaigns/{campaign_id}", headers=ADMIN)
        if view.json()["status"] in ("Sent", "Failed"):
            return view.json()
        time.sleep(0.1)
    raise AssertionError("the campaign did not finish")


def test_messenger_campaign_through_the_host(world: World) -> None:
    """Linked chats get sendMessage (the RECONSTRUCTED sendMessage reply shape), a chat that
    blocked the bot answers 403 (the OBSERVED reply) and is reported Failed + unsubscribed
    by the next update; a contact without a chat is reported Failed."""
    world.bot.webhook = {"url": world.hook, "secret_token": SECRET}
    world.bot.user_starts(1111111, "c_42")
    world.bot.user_starts(2222, "c_8")
    world.bot.chats[2222].blocked = True  # blocked without the CRM hearing of it
    draft = {
        "module": "telegram",
        "name": "Spring",
        "type": "Messenger",
        "campaignType": "Telegram",
        "botId": "123456789",
        "text": "Our spring newsletter is out!",
        "contactIds": ["42", "8", "9"],
    }
    created = world.client.post("/api/v1/tenants/acme/campaigns", json=draft, headers=ADMIN)
    assert created.status_code == 202, created.text
    view = wait_for_campaign(world, created.json()["id"])
    assert (view["status"], view["externalId"]) == ("Sent", f"tg-{created.json()['id']}")
    sent = world.bot.messages_to(1111111)
    assert [m["text"] for m in sent] == ["Our spring newsletter is out!"]
    shape = json.loads(sample("telegram_sendMessage_response.RECONSTRUCTED.json"))["result"]
    assert {"message_id", "from", "chat", "date", "text"} <= set(sent[0]) <= set(shape)
    assert world.bot.messages_to(2222) == []

    world.bot.user_starts(3333)  # any update carries the queued reports
    path = f"/api/v1/tenants/acme/campaigns/{created.json()['id']}/deliveries"
    items = world.client.get(path, headers=ADMIN).json()["items"]
    assert {d["contactId"]: d["status"] for d in items} == {
        "42": "Sent",
        "8": "Failed",
        "9": "Failed",
    }
    assert world.categories("8") == ["telegram"]
    stats = world.client.get(
        f"/api/v1/tenants/acme/campaigns/{created.json()['id']}/stats", headers=ADMIN
    ).json()["values"]
    assert (stats["total"], stats["sent"], stats["failed"], stats["unsubscribed"]) == (3, 1, 2, 1)


def test_api_reply_samples_match_the_emulator(world: World) -> None:
    base = f"{world.server.url}/bot{world.bot.token}"
    me = httpx.post(f"{base}/getMe").json()
    assert set(me["result"]) == set(json.loads(sample("telegram_getMe_response.json"))["result"])
    hook = httpx.post(f"{base}/setWebhook", json={"url": world.hook, "secret_token": SECRET})
    assert hook.json() == json.loads(sample("telegram_setWebhook_response.json"))
    world.bot.chat(5).blocked = True
    blocked = httpx.post(f"{base}/sendMessage", json={"chat_id": 5, "text": "hi"})
    assert blocked.status_code == 403
    assert blocked.json() == json.loads(sample("telegram_error_bot_blocked_403.json"))
    world.bot.rate_limit(7)
    limited = httpx.post(f"{base}/sendMessage", json={"chat_id": 5, "text": "hi"})
    expected = json.loads(sample("telegram_error_too_many_requests_429.RECONSTRUCTED.json"))
    assert (limited.status_code, limited.json()) == (429, expected)
    request = json.loads(sample("telegram_sendMessage_request.RECONSTRUCTED.json"))
    world.bot.chat(1111111)
    reply = httpx.post(f"{base}/sendMessage", json=request).json()
    assert reply["ok"] and reply["result"]["reply_markup"] == request["reply_markup"]
