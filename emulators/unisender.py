"""A local emulator of the classic Unisender API (``api.unisender.com/<lang>/api/<method>``)
and of its webhooks, for the Unisender example module's tests and ``crm-host demo``.

Published formats it follows (API_NOTES §4; the alexeyco/unisender client):

* **Transport.** ``GET`` or ``POST`` ``/<lang>/api/<method>``; parameters from the query string
  and/or an ``application/x-www-form-urlencoded`` body (``format=json``, ``api_key``, and the
  method's own, with PHP-style arrays such as ``field_names[0]``, ``data[0][1]``). Replies
  are HTTP 200 with ``{"result": ...}`` or ``{"error": "<text>", "code": "<code>"}``
  (``invalid_api_key``, ``unknown_method``, ``invalid_arg``); :meth:`UnisenderState.fail_next`
  injects any error.
* **Methods.** ``importContacts``, ``createEmailMessage``, ``createCampaign`` (``contacts``
  restricts the recipients to those list members), ``getCampaigns`` (``limit``, ``offset``;
  each with its ``message_id``), ``getCampaignCommonStats``,
  ``getCampaignStatus``, ``getTemplates``, ``getTemplate``, ``createEmailTemplate``,
  ``updateEmailTemplate``, ``getLists``, ``setHook``.
* **Webhooks.** ``{"auth": md5, "events_by_user": [{"login", "events": [...]}]}`` POSTed as
  JSON to the URL registered with ``setHook``; ``auth`` is the MD5 of the body with the auth
  value replaced by the API key. :meth:`UnisenderState.deliver` plays a campaign's sending
  (recipients' ``email_status`` events), :meth:`~UnisenderState.send_events` posts any events.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEFAULT_API_KEY = "emulator-unisender-api-key-0123456789"
LOGIN = "crm-emulator"

# email_status values → which counter of getCampaignCommonStats they count in.
READ = {"ok_read", "ok_link_visited", "ok_unsubscribed", "ok_fbl"}
DELIVERED = {"ok_delivered", "ok_spam_folder", *READ}
BOUNCED = {"err_user_unknown", "err_mailbox_full", "err_delivery_failed", "err_spam_rejected"}
SENT = {"ok_sent", *DELIVERED, *BOUNCED}


class ApiError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def sign(body_with_key: str, api_key: str) -> str:
    """The webhook body as Unisender sends it: ``body_with_key`` carries the API key in place
    of the auth value; auth = md5(that text), then put in place of the key."""
    auth = hashlib.md5(body_with_key.encode()).hexdigest()
    return body_with_key.replace(api_key, auth, 1)


def nested(params: dict[str, str], name: str) -> dict[str, Any]:
    """PHP-style ``name[a][b]=v`` pairs as nested dicts: ``{"a": {"b": v}}``."""
    found: dict[str, Any] = {}
    for key, value in params.items():
        if not key.startswith(name + "["):
            continue
        parts = re.findall(r"\[([^\]]*)\]", key[len(name) :])
        node = found
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return found


@dataclass
class UnisenderState:
    """One account: API key, lists and contacts, templates, messages, campaigns, hook."""

    api_key: str = DEFAULT_API_KEY
    login: str = LOGIN
    lists: dict[int, str] = field(default_factory=lambda: {1: "Main list"})
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lower-case email
    templates: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    campaigns: dict[int, dict[str, Any]] = field(default_factory=dict)
    hook: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    webhook_client: httpx.Client | None = None
    _failures: list[tuple[str, str, str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(4321))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- test controls --------------------------------------------------------------------

    def fail_next(self, method: str, code: str, message: str) -> None:
        """The next call of ``method`` answers ``{"error": message, "code": code}``."""
        self._failures.append((method.lower(), code, message))

    def add_template(self, title: str, subject: str, body: str) -> int:
        template_id = next(self._ids)
        self.templates[template_id] = {
            "id": template_id,
            "sub_user_login": "",
            "title": title,
            "description": "",
            "lang_code": "en",
            "subject": subject,
            "attachments": [],
            "screenshot_url": "",
            "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "message_format": "raw_html",
            "type": "user",
            "body": body,
            "raw_body": "",
            "fullsize_screenshot_url": "",
        }
        return template_id

    # --- the API --------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, str]) -> Any:
        self.calls.append((method, params))
        if params.get("api_key") != self.api_key:
            raise ApiError("invalid_api_key", "invalid api key")
        for i, (name, code, message) in enumerate(self._failures):
            if name == method.lower():
                del self._failures[i]
                raise ApiError(code, message)
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            raise ApiError("unknown_method", f"unknown method {method}")
        with self._lock:
            return handler(params)

    def _m_getLists(self, p: dict[str, str]) -> list[dict[str, Any]]:
        return [{"id": i, "title": t} for i, t in self.lists.items()]

    def _m_importContacts(self, p: dict[str, str]) -> dict[str, Any]:
        names = nested(p, "field_names")
        columns = [names[k] for k in sorted(names, key=int)]
        if "email" not in columns:
            raise ApiError("invalid_arg", "field_names must contain email")
        rows = nested(p, "data")
        result: dict[str, Any] = {
            "total": 0,
            "inserted": 0,
            "updated": 0,
            "deleted": 0,
            "new_emails": 0,
            "invalid": 0,
            "log": [],
        }
        for index in sorted(rows, key=int):
            row = {columns[int(c)]: v for c, v in rows[index].items() if int(c) < len(columns)}
            result["total"] += 1
            email = row.get("email", "").strip().lower()
            if "@" not in email:
                result["invalid"] += 1
                result["log"].append(
                    {"index": int(index), "code": "invalid_email", "message": "invalid email"}
                )
                continue
            lists = {int(x) for x in row.get("email_list_ids", "").split(",") if x.strip()}
            if row.get("delete") == "1":
                result["deleted"] += int(self.contacts.pop(email, None) is not None)
                continue
            contact = self.contacts.get(email)
            if contact is None:
                result["inserted"] += 1
                result["new_emails"] += 1
                contact = self.contacts[email] = {"email": email, "lists": set(), "fields": {}}
            else:
                result["updated"] += 1
            contact["lists"] |= lists
            contact["status"] = row.get("email_status", contact.get("status", "active"))
            contact["fields"].update(
                {
                    k: v
                    for k, v in row.items()
                    if k not in ("email", "email_list_ids", "email_status")
                }
            )
        return result

    def _m_createEmailMessage(self, p: dict[str, str]) -> dict[str, Any]:
        for name in ("sender_name", "sender_email", "subject", "list_id"):
            if not p.get(name):
                raise ApiError("invalid_arg", f"{name} is required")
        if int(p["list_id"]) not in self.lists:
            raise ApiError("invalid_arg", f"list {p['list_id']} not found")
        body = p.get("body")
        if not body and p.get("template_id"):
            template = self.templates.get(int(p["template_id"]))
            if template is None:
                raise ApiError("invalid_arg", "template not found")
            body = template["body"]
        if not body:
            raise ApiError("invalid_arg", "body or template_id is required")
        message_id = next(self._ids)
        self.messages[message_id] = {**p, "body": body, "id": message_id}
        self.messages[message_id].pop("api_key", None)
        return {"message_id": message_id}

    def _m_createCampaign(self, p: dict[str, str]) -> dict[str, Any]:
        message = self.messages.get(int(p.get("message_id") or 0))
        if message is None:
            raise ApiError("invalid_arg", "message not found")
        list_id = int(message["list_id"])
        members = [
            e
            for e, c in self.contacts.items()
            if list_id in c["lists"] and c.get("status") != "unsubscribed"
        ]
        if p.get("contacts"):
            wanted = {e.strip().lower() for e in p["contacts"].split(",")}
            members = [e for e in members if e in wanted]
        campaign_id = next(self._ids)
        status = "scheduled"
        self.campaigns[campaign_id] = {
            "id": campaign_id,
            "message_id": message["id"],
            "status": status,
            "start_time": p.get("start_time"),
            "recipients": {e: "not_sent" for e in members},
        }
        return {"campaign_id": campaign_id, "status": status, "count": len(members)}

    def _m_getCampaigns(self, p: dict[str, str]) -> list[dict[str, Any]]:
        """The account's campaigns, oldest first (``limit`` at most 10000, ``offset``)."""
        limit, offset = int(p.get("limit") or 1000), int(p.get("offset") or 0)
        if not 1 <= limit <= 10000 or offset < 0:
            raise ApiError("invalid_arg", "limit must be 1..10000 and offset at least 0")
        rows = []
        for campaign in list(self.campaigns.values())[offset : offset + limit]:
            message = self.messages[campaign["message_id"]]
            rows.append(
                {
                    "id": campaign["id"],
                    "start_time": campaign["start_time"] or "",
                    "status": campaign["status"],
                    "message_id": campaign["message_id"],
                    "list_id": int(message["list_id"]),
                    "subject": message["subject"],
                    "sender_name": message["sender_name"],
                    "sender_email": message["sender_email"],
                }
            )
        return rows

    def _campaign(self, p: dict[str, str]) -> dict[str, Any]:
        campaign = self.campaigns.get(int(p.get("campaign_id") or 0))
        if campaign is None:
            raise ApiError("invalid_arg", "campaign not found")
        return campaign

    def _m_getCampaignStatus(self, p: dict[str, str]) -> dict[str, Any]:
        campaign = self._campaign(p)
        return {"status": campaign["status"], "creation_time": "", "start_time": ""}

    def _m_getCampaignCommonStats(self, p: dict[str, str]) -> dict[str, Any]:
        statuses = list(self._campaign(p)["recipients"].values())
        count = lambda group: sum(1 for s in statuses if s in group)  # noqa: E731
        return {
            "total": len(statuses),
            "sent": count(SENT),
            "delivered": count(DELIVERED),
            "read_unique": count(READ),
            "read_all": count(READ),
            "clicked_unique": count({"ok_link_visited"}),
            "clicked_all": count({"ok_link_visited"}),
            "unsubscribed": count({"ok_unsubscribed"}),
            "spam": count({"ok_fbl"}),
        }

    def _m_getTemplates(self, p: dict[str, str]) -> list[dict[str, Any]]:
        kind = p.get("type", "user")
        found = [t for _, t in sorted(self.templates.items()) if t["type"] == kind]
        offset, limit = int(p.get("offset") or 0), int(p.get("limit") or 50)
        if not 1 <= limit <= 100:
            raise ApiError("invalid_arg", "limit must be 1-100")
        return found[offset : offset + limit]

    def _m_getTemplate(self, p: dict[str, str]) -> dict[str, Any]:
        template = self.templates.get(int(p.get("template_id") or 0))
        if template is None:
            raise ApiError("invalid_arg", "template not found")
        return template

    def _m_createEmailTemplate(self, p: dict[str, str]) -> dict[str, Any]:
        if not p.get("title") or not p.get("body"):
            raise ApiError("invalid_arg", "title and body are required")
        template_id = self.add_template(p["title"], p.get("subject", ""), p["body"])
        return {"template_id": template_id}

    def _m_updateEmailTemplate(self, p: dict[str, str]) -> dict[str, Any]:
        template = self._m_getTemplate(p)
        for name, key in (("title", "title"), ("subject", "subject"), ("body", "body")):
            if name in p:
                template[key] = p[name]
        return {}

    def _m_setHook(self, p: dict[str, str]) -> dict[str, Any]:
        if not p.get("hook_url"):
            raise ApiError("invalid_arg", "hook_url is required")
        events = nested(p, "events")
        self.hook = {"url": p["hook_url"], "events": events, "format": p.get("event_format")}
        return {}

    # --- webhooks -------------------------------------------------------------------------

    def webhook_body(self, events: list[dict[str, Any]], api_key: str | None = None) -> bytes:
        """The exact bytes Unisender would POST for ``events``, signed with ``api_key``
        (default: the account's key — another key gives a body the module must refuse)."""
        key = api_key or self.api_key
        payload = {"auth": key, "events_by_user": [{"login": self.login, "events": events}]}
        return sign(json.dumps(payload, separators=(",", ":")), key).encode()

    def email_status(self, email: str, status: str, campaign_id: int | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "email": email,
            "status": status,
            "status_group": _group(status),
            "email_id": next(self._ids),
        }
        if campaign_id is not None:
            data["campaign_id"] = campaign_id
        return {"event_name": "email_status", "event_time": _now(), "event_data": data}

    def deliver(self, campaign_id: int, statuses: dict[str, str] | None = None) -> httpx.Response:
        """Play the campaign's sending: every recipient gets ``ok_delivered`` (or its status
        from ``statuses``), the campaign is ``completed``; one webhook with every event."""
        campaign = self.campaigns[campaign_id]
        events = []
        for email in campaign["recipients"]:
            status = (statuses or {}).get(email, "ok_delivered")
            campaign["recipients"][email] = status
            events.append(self.email_status(email, status, campaign_id))
        campaign["status"] = "completed"
        events.append(
            {
                "event_name": "campaign_status",
                "event_time": _now(),
                "event_data": {"campaign_id": campaign_id, "status": "completed"},
            }
        )
        return self.send_events(events)

    def send_events(
        self, events: list[dict[str, Any]], *, api_key: str | None = None
    ) -> httpx.Response:
        return self.post_raw(self.webhook_body(events, api_key))

    def post_raw(self, body: bytes) -> httpx.Response:
        if not self.hook.get("url"):
            raise RuntimeError("no webhook is registered (call setHook first)")
        client = self.webhook_client or httpx.Client(timeout=30)
        try:
            return client.post(
                self.hook["url"], content=body, headers={"Content-Type": "application/json"}
            )
        finally:
            if self.webhook_client is None:
                client.close()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _group(status: str) -> str:
    if status.startswith("err_"):
        return "error"
    return "success" if status != "not_sent" else "pending"


def create_app(state: UnisenderState) -> Starlette:
    """The API of ``state``'s account, plus ``/_emulator/*`` controls for the demo."""

    async def api(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        raw = await request.body()
        if raw:
            params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            return JSONResponse({"result": state.call(request.path_params["method"], params)})
        except ApiError as exc:
            return JSONResponse({"error": exc.message, "code": exc.code})
        except (ValueError, KeyError) as exc:
            return JSONResponse({"error": f"invalid argument: {exc}", "code": "invalid_arg"})

    async def deliver(request: Request) -> JSONResponse:
        data = await request.json()
        response = state.deliver(int(data["campaign_id"]), data.get("statuses"))
        return JSONResponse({"webhookStatus": response.status_code})

    async def show(request: Request) -> JSONResponse:
        campaigns = {str(k): v for k, v in state.campaigns.items()}
        return JSONResponse({"campaigns": campaigns, "hook": state.hook})

    return Starlette(
        routes=[
            Route("/{lang}/api/{method}", api, methods=["GET", "POST"]),
            Route("/_emulator/deliver", deliver, methods=["POST"]),
            Route("/_emulator/state", show, methods=["GET"]),
        ]
    )
