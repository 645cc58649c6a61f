"""The Telegram example module, function by function, in the real sandbox against the local
Bot API emulator (``emulators.telegram``) on 127.0.0.1 (let through by the admin allow-list)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.runner import serve
from emulators.telegram import TelegramState, create_app
from host.contract.types import WebhookResult
from host.errors import ModuleCallFailed
from host.toolkit.local_run import load_module, plain
from sandbox.pool import SandboxPool
from tests.modules.module_runner import ModuleRunner
from tests.vendor_samples import VENDOR_SAMPLES

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "telegram"
SAMPLES = VENDOR_SAMPLES
SECRET = "Crm_Test-Secret_0123456789"
CONTACTS = {
    "42": {"id": "42", "name": "Test Firstname", "email": "test@example.com", "phone": None},
    "43": {"id": "43", "name": "Blocker", "email": "blocker@example.com", "phone": None},
    "44": {"id": "44", "name": "Unlinked", "email": "unlinked@example.com", "phone": None},
    "45": {"id": "45", "name": "No mail", "email": None, "phone": "+100"},
}


@pytest.fixture(scope="module")
def module() -> Any:
    return load_module(MODULE_DIR, max_script_bytes=256 * 1024)


@pytest.fixture
def bot() -> Iterator[tuple[TelegramState, Any]]:
    state = TelegramState()
    with serve(create_app(state)) as server:
        yield state, server


class Runner(ModuleRunner):
    def __init__(self, pool: SandboxPool, module: Any, state: TelegramState, server: Any):
        settings = {
            "bot_token": state.token,
            "webhook_secret": SECRET,
            "api_base_url": server.url,
        }
        known = lambda ids: [CONTACTS[i] for i in ids if i in CONTACTS]  # noqa: E731
        super().__init__(pool, module, server, settings, known)

    def hook(self, body: bytes | str, secret: str | None = SECRET) -> WebhookResult:
        headers = {"content-type": "application/json", "x-crm-host-body-encoding": "utf-8"}
        if secret is not None:
            headers["x-telegram-bot-api-secret-token"] = secret
        text = body.decode() if isinstance(body, bytes) else body
        request = {
            "method": "POST",
            "url": "https://crm.example/hooks/t/telegram/x",
            "headers": headers,
            "body": text,
            "query": {},
        }
        value = self.result("ParseWebhookRequest", request).value
        assert isinstance(value, WebhookResult)
        return value


@pytest.fixture
def run(pool: SandboxPool, module: Any, bot: tuple[TelegramState, Any]) -> Runner:
    return Runner(pool, module, *bot)


def start(chat_id: int, payload: str) -> str:
    return json.dumps(
        {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "chat": {"id": chat_id, "type": "private", "first_name": "T"},
                "from": {"id": chat_id, "first_name": "T"},
                "date": 1,
                "text": f"/start {payload}",
            },
        }
    )


def test_types_and_bots_register_the_webhook(run: Runner, bot: Any) -> None:
    state, _ = bot
    assert run("GetMessengerTypes") == ["Telegram"]
    assert run("GetMessengerBots") == [
        {
            "id": "123456789",
            "name": "CRM Test Bot",
            "type": "Telegram",
            "description": "@crm_test_bot; link a contact with https://t.me/crm_test_bot"
            "?start=c_<contact id>",
        }
    ]
    assert state.webhook == {}  # no webhook_url: nothing registered
    run.settings["webhook_url"] = "https://crm.example/hooks/t/telegram/x"
    run("GetMessengerBots")
    assert state.webhook == {
        "url": "https://crm.example/hooks/t/telegram/x",
        "secret_token": SECRET,
        "allowed_updates": ["message", "callback_query", "my_chat_member"],
    }


def test_wrong_token_fails_with_the_bot_api_description(run: Runner) -> None:
    run.settings["bot_token"] = "1:wrong"
    with pytest.raises(ModuleCallFailed) as failure:
        run("GetMessengerBots")
    assert "401 Unauthorized" in failure.value.message


def test_start_payload_links_chat_and_contact(run: Runner) -> None:
    body = (SAMPLES / "telegram_update_message_start_payload.RECONSTRUCTED.json").read_bytes()
    result = run.hook(body)
    assert (result.response.status, result.actions) == (200, [])  # type: ignore[union-attr]
    assert run.storage["contact:42"] == 1111111
    assert run.storage["chat:1111111"] == {"contact": "42", "blocked": False, "optedOut": False}
    run.hook(start(1111111, "c_43"))  # the chat now belongs to 43: 42 is unlinked
    assert "contact:42" not in run.storage and run.storage["contact:43"] == 1111111
    run.hook(start(777, "c_nobody"))  # unknown contact: known chat, no link
    assert run.storage["chat:777"]["contact"] is None and "contact:nobody" not in run.storage


def test_welcome_text_is_answered_in_the_webhook_reply(run: Runner) -> None:
    run.settings["welcome_text"] = "Subscribed!"
    result = run.hook(start(5, "c_42"))
    assert result.response.body == {  # type: ignore[union-attr]
        "method": "sendMessage",
        "chat_id": 5,
        "text": "Subscribed!",
    }


@pytest.mark.parametrize(
    ("secret", "status"),
    [(None, 401), ("", 401), ("wrong", 403), (SECRET + "x", 403), (SECRET.lower(), 403)],
)
def test_bad_secret_is_refused_and_nothing_changes(run: Runner, secret: Any, status: int) -> None:
    run.storage["reports"] = [{"type": "Unsubscribe", "email": "a@b.c", "externalId": "telegram"}]
    result = run.hook(start(1111111, "c_42"), secret=secret)
    assert (result.response.status, result.actions) == (status, [])  # type: ignore[union-attr]
    assert "contact:42" not in run.storage and len(run.storage["reports"]) == 1


def test_block_unblock_and_stop(run: Runner) -> None:
    run.hook(start(0, "c_42"))
    kicked = (SAMPLES / "telegram_update_my_chat_member_kicked.json").read_bytes()
    unsubscribe = {"type": "Unsubscribe", "email": "test@example.com", "externalId": "telegram"}
    assert plain(run.hook(kicked))["actions"] == [unsubscribe]
    assert run.storage["chat:0"]["blocked"] is True
    assert run.hook(kicked).actions == []  # a repeated update unsubscribes once
    unblocked = kicked.replace(b'"status":"kicked","until_date":0', b'"status":"member"')
    run.hook(unblocked)
    assert run.storage["chat:0"]["blocked"] is False
    stop = start(0, "").replace("/start ", "/stop")
    assert plain(run.hook(stop))["actions"] == [unsubscribe]


def test_unsubscribe_button_answers_the_callback(run: Runner) -> None:
    run.hook(start(1111111, "c_42"))
    body = (SAMPLES / "telegram_update_callback_query_message.RECONSTRUCTED.json").read_bytes()
    result = plain(run.hook(body))
    assert result["actions"] == [
        {"type": "Unsubscribe", "email": "test@example.com", "externalId": "telegram"}
    ]
    assert result["response"]["body"]["method"] == "answerCallbackQuery"


def campaign(run: Runner, ids: list[str], **extra: Any) -> Any:
    run("PrepareCampaign", "cmp42", "Messenger", ids)
    request = {
        "campaignId": "cmp42",
        "name": "Spring",
        "campaignType": "Telegram",
        "botId": "123456789",
        "text": "Spring news!",
        **extra,
    }
    return run("CreateMessengerCampaign", request)


def test_a_batch_prepared_again_sends_each_contact_once(run: Runner, bot: Any) -> None:
    """A batch may come again after a crash (its storage write committed, the host's record
    of the batch not): each contact gets the message once. CreateMessengerCampaign itself
    sends as it goes, so the manifest does not declare it idempotent."""
    state, _ = bot
    assert not run.module.manifest.declares_idempotent("CRM_Marketing_CreateMessengerCampaign")
    for chat_id, contact in ((1111111, "c_42"), (3333, "c_45")):
        state.chat(chat_id)
        run.hook(start(chat_id, contact))
    run("PrepareCampaign", "cmp42", "Messenger", ["42", "45"])
    created = campaign(run, ["42", "45"])  # the same batch again, then the create call
    assert created["status"] == "Sent"
    assert sorted(m["chat"]["id"] for m in state.sent) == [3333, 1111111]


def test_campaign_sends_reports_blocked_and_unlinked(run: Runner, bot: Any) -> None:
    state, _ = bot
    run.settings["unsubscribe_button"] = "Unsubscribe"
    for chat_id, contact in ((1111111, "c_42"), (2222, "c_43"), (3333, "c_45")):
        state.chat(chat_id)
        run.hook(start(chat_id, contact))
    state.chats[2222].blocked = True
    created = campaign(run, ["42", "43", "44", "45"])
    assert created == {"externalId": "tg-cmp42", "status": "Sent"}
    assert [(m["chat"]["id"], m["text"]) for m in state.sent] == [
        (1111111, "Spring news!"),
        (3333, "Spring news!"),
    ]
    assert state.sent[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "unsub:cmp42"
    assert run("GetCampaignStats", "tg-cmp42") == {
        "total": 4,
        "sent": 2,
        "delivered": 2,
        "opened": 0,
        "clicked": 0,
        "bounced": 0,
        "unsubscribed": 1,
        "complained": 0,
        "failed": 2,
    }
    assert run.storage["chat:2222"]["blocked"] is True
    # The next update (any) carries the failures to the CRM.
    actions = plain(run.hook(start(9, "")))["actions"]
    assert actions == [
        {
            "type": "UpdateDeliveryStatus",
            "email": "unlinked@example.com",
            "externalId": "tg-cmp42",
            "status": "Failed",
        },
        {
            "type": "UpdateDeliveryStatus",
            "email": "blocker@example.com",
            "externalId": "tg-cmp42",
            "status": "Failed",
        },
        {"type": "Unsubscribe", "email": "blocker@example.com", "externalId": "telegram"},
    ]
    assert "reports" not in run.storage


def test_rate_limit_waits_retry_after_within_the_budget(run: Runner, bot: Any) -> None:
    state, _ = bot
    state.chat(1111111)
    run.hook(start(1111111, "c_42"))
    state.rate_limit(1)
    began = time.monotonic()
    assert campaign(run, ["42"])["status"] == "Sent"
    assert time.monotonic() - began >= 1.0
    assert len(state.sent) == 1


def test_rate_limit_beyond_the_budget_fails_the_rest(run: Runner, bot: Any) -> None:
    state, _ = bot
    for chat_id, contact in ((1111111, "c_42"), (2222, "c_43")):
        state.chat(chat_id)
        run.hook(start(chat_id, contact))
    sample = json.loads(
        (SAMPLES / "telegram_error_too_many_requests_429.RECONSTRUCTED.json").read_text()
    )
    state.rate_limit(sample["parameters"]["retry_after"])  # 7 s: more than the module waits
    began = time.monotonic()
    assert campaign(run, ["42", "43"]) == {"externalId": "tg-cmp42", "status": "Failed"}
    assert time.monotonic() - began < 3 and state.sent == []
    assert run("GetCampaignStats", "tg-cmp42")["failed"] == 2


def test_campaign_checks_bot_and_schedule(run: Runner) -> None:
    with pytest.raises(ModuleCallFailed, match="not the bot"):
        campaign(run, ["42"], botId="999")
    with pytest.raises(ModuleCallFailed, match="cannot schedule"):
        campaign(run, ["42"], scheduledAt="2030-01-01T00:00:00Z")
    with pytest.raises(ModuleCallFailed, match="no campaign"):
        run("GetCampaignStats", "tg-unknown")
