"""A local Telegram Bot API emulator: ``/bot<token>/<method>`` and the bot's webhook.

It follows the published Bot API (https://core.telegram.org/bots/api) as far as the
Telegram example module needs it:

* **Transport.** ``GET`` or ``POST`` ``/bot<token>/<method>``; parameters from the query
  string, an ``application/x-www-form-urlencoded`` body or a JSON body (method names are
  case-insensitive). Every reply is ``{"ok": true, "result": ...}`` or
  ``{"ok": false, "error_code": N, "description": "..."[, "parameters": {...}]}`` with the
  HTTP status equal to ``error_code``.
* **Methods.** ``getMe``, ``sendMessage``, ``setWebhook`` (``url``, ``secret_token``,
  ``allowed_updates``, ...), ``getWebhookInfo``, ``deleteWebhook``, ``answerCallbackQuery``.
  A wrong token is ``401 Unauthorized``; an unknown method ``404 Not Found``; a chat that
  never talked to the bot ``400 Bad Request: chat not found``; a user who blocked the bot
  ``403 Forbidden: bot was blocked by the user``; :meth:`TelegramState.rate_limit` makes the
  next sendMessage calls answer ``429`` with ``parameters.retry_after``.
* **Webhook.** Updates are POSTed as JSON to the URL set with ``setWebhook``, with the header
  ``X-Telegram-Bot-Api-Secret-Token`` when a ``secret_token`` was set. The control methods
  play the user's side: :meth:`TelegramState.user_starts` (``/start <payload>``, a deep link),
  :meth:`~TelegramState.user_blocks` / :meth:`~TelegramState.user_unblocks`
  (``my_chat_member`` kicked / member), :meth:`~TelegramState.user_presses` (a
  ``callback_query``). The same actions are reachable over HTTP under ``/_emulator/`` for
  ``crm-host demo``.

State lives in a :class:`TelegramState` the test holds; ``create_app(state)`` serves it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_TOKEN = "123456789:AAEmulatorTokenForTests_0123456789ab"


@dataclass
class Chat:
    """A private chat with one user (chat id == user id, as in Telegram)."""

    id: int
    first_name: str = "Test"
    last_name: str = "User"
    username: str = ""
    blocked: bool = False  # the user blocked the bot

    def as_chat(self) -> dict[str, Any]:
        chat = {"id": self.id, "first_name": self.first_name, "last_name": self.last_name}
        if self.username:
            chat["username"] = self.username
        chat["type"] = "private"
        return chat

    def as_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        return user


class BotApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


@dataclass
class TelegramState:
    """One bot: its token and profile, the chats it knows, what it sent, its webhook."""

    token: str = DEFAULT_TOKEN
    bot_id: int = 123456789
    bot_name: str = "CRM Test Bot"
    bot_username: str = "crm_test_bot"
    chats: dict[int, Chat] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    webhook: dict[str, Any] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    webhook_client: httpx.Client | None = None
    _rate_limits: list[int] = field(default_factory=list)
    _message_ids: Any = field(default_factory=lambda: itertools.count(1367))
    _update_ids: Any = field(default_factory=lambda: itertools.count(10001))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the bot's view -------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def chat(self, chat_id: int, **profile: Any) -> Chat:
        """The chat with user ``chat_id`` (created on first use)."""
        with self._lock:
            if chat_id not in self.chats:
                self.chats[chat_id] = Chat(chat_id, **profile)
            return self.chats[chat_id]

    def rate_limit(self, retry_after: int, times: int = 1) -> None:
        """The next ``times`` sendMessage calls answer 429 with ``retry_after`` seconds."""
        self._rate_limits.extend([retry_after] * times)

    def messages_to(self, chat_id: int) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["chat"]["id"] == chat_id]

    # --- the API --------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run one Bot API method; raises BotApiError for an error reply."""
        self.calls.append((method, params))
        handler = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "deletewebhook": self._delete_webhook,
            "answercallbackquery": lambda p: True,
        }.get(method.lower())
        if handler is None:
            raise BotApiError(404, "Not Found")
        return handler(params)

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.me()

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get("text") or "")
        if "chat_id" not in params:
            raise BotApiError(400, "Bad Request: chat_id is empty")
        if not text.strip():
            raise BotApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise BotApiError(400, "Bad Request: message is too long")
        try:
            chat_id = int(params["chat_id"])
        except (TypeError, ValueError):
            raise BotApiError(400, "Bad Request: chat not found") from None
        if self._rate_limits:
            wait = self._rate_limits.pop(0)
            raise BotApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        chat = self.chats.get(chat_id)
        if chat is None:
            raise BotApiError(400, "Bad Request: chat not found")
        if chat.blocked:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": {
                k: v
                for k, v in self.me().items()
                if k in ("id", "is_bot", "first_name", "username")
            },
            "chat": chat.as_chat(),
            "date": int(time.time()),
            "text": text,
        }
        for key in ("parse_mode", "reply_markup", "link_preview_options"):
            if key in params:
                message[key] = params[key]
        self.sent.append(message)
        return message

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not _valid_secret(str(secret)):
            raise BotApiError(400, "Bad Request: secret token contains unallowed characters")
        if not url:
            self.webhook = {}
            return True
        if not url.startswith(("https://", "http://")):
            raise BotApiError(400, "Bad Request: bad webhook: invalid URL")
        allowed = params.get("allowed_updates")
        if isinstance(allowed, str):
            allowed = json.loads(allowed)
        self.webhook = {"url": url, "secret_token": secret, "allowed_updates": allowed}
        return True

    def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {"url": self.webhook.get("url", ""), "pending_update_count": 0}
        info["has_custom_certificate"] = False
        if self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {}
        return True

    # --- the user's side: updates sent to the webhook -------------------------------------

    def user_starts(
        self, chat_id: int, payload: str | None = None, **profile: Any
    ) -> httpx.Response:
        """The user opens ``t.me/<bot>?start=<payload>`` (or types /start): a message update."""
        chat = self.chat(chat_id, **profile)
        chat.blocked = False
        text = "/start" if not payload else f"/start {payload}"
        message = {
            "message_id": next(self._message_ids),
            "from": chat.as_user(),
            "chat": chat.as_chat(),
            "date": int(time.time()),
            "text": text,
            "entities": [{"offset": 0, "length": 6, "type": "bot_command"}],
        }
        return self.send_update({"message": message})

    def user_blocks(self, chat_id: int) -> httpx.Response:
        """The user blocks the bot: ``my_chat_member`` with the bot member → kicked."""
        chat = self.chat(chat_id)
        chat.blocked = True
        return self.send_update({"my_chat_member": self._member_change(chat, "member", "kicked")})

    def user_unblocks(self, chat_id: int) -> httpx.Response:
        chat = self.chat(chat_id)
        chat.blocked = False
        return self.send_update({"my_chat_member": self._member_change(chat, "kicked", "member")})

    def user_presses(
        self, chat_id: int, data: str, message_id: int | None = None
    ) -> httpx.Response:
        """The user presses an inline button carrying ``callback_data`` ``data``."""
        chat = self.chat(chat_id)
        query: dict[str, Any] = {
            "id": f"{chat_id}{next(self._update_ids)}",
            "from": chat.as_user(),
            "chat_instance": str(-chat_id),
            "data": data,
        }
        sent = [m for m in self.messages_to(chat_id) if m["message_id"] == message_id]
        if sent:
            query["message"] = sent[0]
        return self.send_update({"callback_query": query})

    def _member_change(self, chat: Chat, old: str, new: str) -> dict[str, Any]:
        bot = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_name,
            "username": self.bot_username,
        }
        new_member: dict[str, Any] = {"user": bot, "status": new}
        if new == "kicked":
            new_member["until_date"] = 0
        return {
            "chat": chat.as_chat(),
            "from": chat.as_user(),
            "date": int(time.time()),
            "old_chat_member": {"user": bot, "status": old},
            "new_chat_member": new_member,
        }

    def send_update(self, update: dict[str, Any], *, secret: str | None = None) -> httpx.Response:
        """POST one Update to the webhook as Telegram does (JSON, secret header). ``secret``
        overrides the header value (tests of a wrong secret)."""
        if not self.webhook.get("url"):
            raise RuntimeError("no webhook is set (call setWebhook first)")
        body = json.dumps({"update_id": next(self._update_ids), **update}).encode()
        return self.post_raw(body, secret=secret)

    def post_raw(self, body: bytes, *, secret: str | None = None) -> httpx.Response:
        """POST ``body`` unchanged to the webhook URL with Telegram's headers."""
        headers = {"Content-Type": "application/json"}
        token = secret if secret is not None else self.webhook.get("secret_token")
        if token:
            headers[SECRET_HEADER] = str(token)
        client = self.webhook_client or httpx.Client(timeout=30)
        try:
            response = client.post(self.webhook["url"], content=body, headers=headers)
        finally:
            if self.webhook_client is None:
                client.close()
        self.deliveries.append({"body": body, "status": response.status_code})
        return response


def _valid_secret(secret: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    return 1 <= len(secret) <= 256 and set(secret) <= allowed


DESCRIPTIONS = {"setwebhook": "Webhook was set", "deletewebhook": "Webhook was deleted"}


def _reply(result: Any = None, error: BotApiError | None = None, method: str = "") -> JSONResponse:
    body: dict[str, Any]
    if error is None:
        body = {"ok": True, "result": result}
        if method.lower() in DESCRIPTIONS:
            body["description"] = DESCRIPTIONS[method.lower()]
        return JSONResponse(body)
    body = {"ok": False, "error_code": error.code, "description": error.description}
    if error.parameters:
        body["parameters"] = error.parameters
    return JSONResponse(body, status_code=error.code)


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if raw and kind == "application/json":
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise BotApiError(400, "Bad Request: parameters must be a JSON object")
        params.update(data)
    elif raw:
        params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        for key in ("reply_markup", "link_preview_options", "allowed_updates"):
            if isinstance(params.get(key), str) and params[key][:1] in "[{":
                params[key] = json.loads(params[key])
    return params


def create_app(state: TelegramState) -> Starlette:
    """The Bot API of ``state``'s bot, plus ``/_emulator/*`` controls for the demo."""

    async def bot_method(request: Request) -> JSONResponse:
        if request.path_params["token"] != state.token:
            return _reply(error=BotApiError(401, "Unauthorized"))
        try:
            params = await _params(request)
            method = request.path_params["method"]
            return _reply(state.call(method, params), method=method)
        except BotApiError as exc:
            return _reply(error=exc)
        except (ValueError, UnicodeDecodeError):
            return _reply(error=BotApiError(400, "Bad Request: can't parse parameters"))

    async def control(request: Request) -> JSONResponse:
        data = await request.json()
        action = request.path_params["action"]
        chat_id = int(data["chat_id"])
        if action == "start":
            response = state.user_starts(chat_id, data.get("payload"))
        elif action == "block":
            response = state.user_blocks(chat_id)
        elif action == "unblock":
            response = state.user_unblocks(chat_id)
        elif action == "press":
            response = state.user_presses(chat_id, str(data["data"]))
        else:
            return JSONResponse({"error": f"unknown action {action}"}, status_code=404)
        return JSONResponse({"webhookStatus": response.status_code})

    async def sent(request: Request) -> JSONResponse:
        return JSONResponse({"sent": state.sent, "webhook": state.webhook})

    return Starlette(
        routes=[
            Route("/bot{token}/{method}", bot_method, methods=["GET", "POST"]),
            Route("/_emulator/sent", sent, methods=["GET"]),
            Route("/_emulator/{action}", control, methods=["POST"]),
        ]
    )
