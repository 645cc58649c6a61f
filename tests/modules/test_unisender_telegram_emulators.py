"""The Unisender and Telegram emulators follow the published request/response formats: the
envelopes, errors and webhook bodies a real service would produce (checked against the vendor
samples where one exists), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from emulators import telegram, unisender
from emulators.runner import serve
from tests.vendor_samples import VENDOR_SAMPLES

SAMPLES = VENDOR_SAMPLES


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver that records what it gets."""
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> PlainTextResponse:
        received.append({"headers": dict(request.headers), "body": await request.body()})
        return PlainTextResponse("OK")

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as server:
        yield f"{server.url}/hook", received


# --- Unisender ----------------------------------------------------------------------------


@pytest.fixture
def uni() -> Iterator[tuple[unisender.UnisenderState, str]]:
    state = unisender.UnisenderState(api_key="KEY-0123456789")
    with serve(unisender.create_app(state)) as server:
        yield state, f"{server.url}/en/api"


def test_unisender_envelopes_and_errors(uni: Any) -> None:
    state, base = uni
    ok = httpx.post(f"{base}/getLists", data={"format": "json", "api_key": state.api_key})
    assert ok.json() == {"result": [{"id": 1, "title": "Main list"}]}
    query = httpx.get(f"{base}/getLists?format=json&api_key={state.api_key}")
    assert query.json() == ok.json()
    bad_key = httpx.post(f"{base}/getLists", data={"api_key": "other"})
    assert (bad_key.status_code, bad_key.json()["code"]) == (200, "invalid_api_key")
    unknown = httpx.post(f"{base}/noSuchMethod", data={"api_key": state.api_key})
    assert unknown.json()["code"] == "unknown_method"
    state.fail_next("getLists", "retry_later", "try later")
    assert httpx.post(f"{base}/getLists", data={"api_key": state.api_key}).json() == {
        "error": "try later",
        "code": "retry_later",
    }


def test_unisender_import_reads_the_published_form(uni: Any) -> None:
    state, base = uni
    form = (SAMPLES / "unisender_api_importContacts_request.RECONSTRUCTED.form").read_text()
    form = form.strip().replace("TEST_API_KEY", state.api_key)
    reply = httpx.post(
        f"{base}/importContacts",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).json()["result"]
    expected = json.loads(
        (SAMPLES / "unisender_api_importContacts_response.RECONSTRUCTED.json").read_text()
    )["result"]
    assert set(reply) == set(expected) and reply["total"] == 2 and reply["inserted"] == 2
    assert state.contacts["alex@example.com"]["fields"] == {"Name": "Alex"}
    assert state.contacts["bobby@example.com"]["lists"] == {123}


def test_unisender_campaign_contacts_restrict_recipients(uni: Any) -> None:
    state, _ = uni
    for email in ("a@x.org", "b@x.org", "c@x.org"):
        state.contacts[email] = {"email": email, "lists": {1}, "fields": {}}
    key = {"api_key": state.api_key}
    message = state.call(
        "createEmailMessage",
        {
            **key,
            "sender_name": "A",
            "sender_email": "a@x.org",
            "subject": "S",
            "list_id": "1",
            "body": "<p>x</p>",
        },
    )
    created = state.call(
        "createCampaign",
        {**key, "message_id": str(message["message_id"]), "contacts": "B@x.org,c@x.org,zzz@x.org"},
    )
    assert (created["status"], created["count"]) == ("scheduled", 2)


def test_unisender_webhook_body_carries_a_valid_md5_auth(uni: Any, receiver: Any) -> None:
    state, _ = uni
    url, received = receiver
    state.hook = {"url": url}
    state.send_events([state.email_status("a@x.org", "ok_delivered", 7)])
    body = received[0]["body"]
    auth = json.loads(body)["auth"]
    assert hashlib.md5(body.replace(auth.encode(), state.api_key.encode())).hexdigest() == auth
    event = json.loads(body)["events_by_user"][0]["events"][0]
    captured = json.loads(
        (SAMPLES / "unisender_webhook_email_status_captured.ANONYMIZED.json").read_text()
    )["events_by_user"][0]["events"][0]
    assert set(captured["event_data"]) <= set(event["event_data"])
    assert set(event) == set(captured)


def test_unisender_signing_reproduces_the_published_go_vector() -> None:
    vector = json.loads((SAMPLES / "unisender_go_signed_vector.json").read_text())
    raw = (SAMPLES / "unisender_go_webhook_signed.raw").read_text()
    with_key = raw.replace(vector["auth"], vector["api_key"])
    assert unisender.sign(with_key, vector["api_key"]) == raw


# --- Telegram -----------------------------------------------------------------------------


@pytest.fixture
def tg() -> Iterator[tuple[telegram.TelegramState, str]]:
    state = telegram.TelegramState()
    with serve(telegram.create_app(state)) as server:
        yield state, f"{server.url}/bot{state.token}"


def test_telegram_envelopes_and_errors(tg: Any) -> None:
    state, base = tg
    me = httpx.get(f"{base}/getme").json()  # method names are case-insensitive
    assert me["ok"] and me["result"]["is_bot"] is True
    wrong = httpx.get(base.replace(state.token, "1:nope") + "/getMe")
    assert (wrong.status_code, wrong.json()) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert httpx.get(f"{base}/noSuchMethod").json()["error_code"] == 404
    lost = httpx.post(f"{base}/sendMessage", data={"chat_id": "99", "text": "hi"})
    assert (lost.status_code, lost.json()["description"]) == (400, "Bad Request: chat not found")
    bad = httpx.post(f"{base}/setWebhook", json={"url": "https://x.test/h", "secret_token": "a b"})
    assert bad.status_code == 400


def test_telegram_form_encoded_send_message(tg: Any) -> None:
    state, base = tg
    state.chat(1111111, first_name="Test Firstname")
    keyboard = json.dumps({"inline_keyboard": [[{"text": "Read", "url": "https://x.test"}]]})
    reply = httpx.post(
        f"{base}/sendMessage",
        data={"chat_id": "1111111", "text": "Hello", "reply_markup": keyboard},
    ).json()
    assert reply["result"]["chat"]["id"] == 1111111
    assert reply["result"]["reply_markup"] == json.loads(keyboard)


def test_telegram_updates_reach_the_webhook_with_the_secret(tg: Any, receiver: Any) -> None:
    state, base = tg
    url, received = receiver
    secret = "Crm_Test-Secret_0123456789"
    assert httpx.post(f"{base}/setWebhook", json={"url": url, "secret_token": secret}).json()["ok"]
    state.user_starts(1111111, "c_42")
    state.user_blocks(1111111)
    state.user_presses(1111111, "unsub:campaign-42")
    assert [r["headers"][telegram.SECRET_HEADER.lower()] for r in received] == [secret] * 3
    start, kicked, pressed = (json.loads(r["body"]) for r in received)
    assert start["message"]["text"] == "/start c_42"
    assert start["message"]["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]
    sample = json.loads((SAMPLES / "telegram_update_my_chat_member_kicked.json").read_text())
    assert set(kicked["my_chat_member"]) == set(sample["my_chat_member"])
    assert kicked["my_chat_member"]["new_chat_member"]["status"] == "kicked"
    assert pressed["callback_query"]["data"] == "unsub:campaign-42"
    assert start["update_id"] < kicked["update_id"] < pressed["update_id"]
    blocked = httpx.post(f"{base}/sendMessage", json={"chat_id": 1111111, "text": "hi"})
    assert blocked.status_code == 403
