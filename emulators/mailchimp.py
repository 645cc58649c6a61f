"""A local Mailchimp: the Marketing API v3 calls the Mailchimp example module makes, and the
audience ("list") webhooks, for the module's tests and ``crm-host demo``.

What it follows from the published API (https://mailchimp.com/developer/marketing/api/;
``tests/fixtures/vendor/API_NOTES.md`` §2):

* Every ``/3.0`` call needs HTTP Basic auth, any user name, the API key as the password;
  otherwise 401. Errors are ``application/problem+json`` ``{type, title, status, detail,
  instance}``; unknown resources 404 ``Resource Not Found``.
* Collections page with ``count`` (default 10, at most 1000) and ``offset`` and carry
  ``total_items``: ``GET /templates`` (``type=user|base|gallery``; no HTML in the template
  object), ``POST /templates`` ``{name, html}``, ``PATCH /templates/{id}``.
* Members: ``PUT /lists/{list_id}/members/{subscriber_hash}`` upserts; the hash must be the
  MD5 of the lower-cased ``email_address`` (400 otherwise), ``status_if_new`` is required for
  a new member. ``POST /lists/{list_id}`` batch-subscribes up to 500 ``members``
  (``update_existing``).
* Static segments (Mailchimp shows them as tags): ``GET /lists/{id}/segments``, ``POST
  /lists/{id}/segments`` ``{name, static_segment}`` (400 for a name in use), ``POST
  /lists/{id}/segments/{segment_id}`` ``{members_to_add, members_to_remove}`` (at most 500
  each; addresses that are not list members are errors; a member is in a segment once).
* Campaigns: ``POST /campaigns`` (``status: save``), ``GET /campaigns`` (``list_id``,
  ``status``), ``GET /campaigns/{id}``, ``PUT
  …/content`` (``html`` or ``template.id``), ``POST …/actions/send`` → 204 (400 when the
  send checklist fails: no recipients, subject, from name, reply-to or content; or the
  campaign was already sent or scheduled), ``POST …/actions/schedule`` → 204
  (``schedule_time`` in the future, on a quarter hour).
* Reports: ``GET /reports/{campaign_id}``, counted from what :meth:`MailchimpState.deliver`
  played. Webhooks: ``POST /lists/{id}/webhooks`` first sends a GET to the URL (Mailchimp
  validates it) and refuses the hook unless it answers 200.

Emulator controls (not Mailchimp API): :meth:`MailchimpState.deliver` sends a campaign
(outcomes per recipient: ``sent``, ``open``, ``click``, ``hard``, ``unsub``, ``abuse``) and
posts the webhooks Mailchimp would (unsubscribe, cleaned, campaign) to the registered hook as
form-encoded bodies; ``POST /_emulator/campaigns/{id}/deliver`` does the same over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef-us6"
DEFAULT_LIST_ID = "a6b5da1054"
MAX_COUNT = 1000
MAX_BATCH = 500
ERRORS_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"
OUTCOMES = ("sent", "open", "click", "hard", "unsub", "abuse")


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str):
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def not_found(what: str) -> ApiError:
    return ApiError(
        404, "Resource Not Found", f"The requested resource could not be found ({what})."
    )


def invalid(detail: str) -> ApiError:
    return ApiError(400, "Invalid Resource", detail)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode()).hexdigest()


def webhook_body(kind: str, data: list[tuple[str, str]]) -> bytes:
    """A webhook body as Mailchimp posts it: ``type``, ``fired_at``, then ``data[...]`` pairs,
    URL-encoded like the published samples."""
    fired = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    pairs = [("type", kind), ("fired_at", fired), *((f"data[{k}]", v) for k, v in data)]
    return urlencode(pairs).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class MailchimpState:
    """One account: key, audiences with members and static segments, templates, campaigns,
    the registered webhook."""

    api_key: str = DEFAULT_API_KEY
    lists: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            DEFAULT_LIST_ID: {"name": "Test list", "members": {}, "segments": {}}
        }
    )
    templates: dict[int, dict[str, Any]] = field(default_factory=dict)
    campaigns: dict[str, dict[str, Any]] = field(default_factory=dict)
    hook_url: str = ""
    campaign_ids: list[str] = field(default_factory=list)  # ids the next campaigns get
    webhook_client: httpx.Client | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(2000094))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- test controls --------------------------------------------------------------------

    def add_template(self, name: str, html: str) -> int:
        template_id = next(self._ids)
        self.templates[template_id] = {
            "id": template_id,
            "type": "user",
            "name": name,
            "drag_and_drop": False,
            "responsive": True,
            "category": "",
            "date_created": _now(),
            "date_edited": _now(),
            "created_by": "crm_user",
            "edited_by": "crm_user",
            "active": True,
            "folder_id": "",
            "thumbnail": "",
            "share_url": "",
            "content_type": "html",
            "_html": html,
        }
        return template_id

    def members(self, list_id: str = DEFAULT_LIST_ID) -> dict[str, dict[str, Any]]:
        return dict(self._list(list_id)["members"])

    # --- the API --------------------------------------------------------------------------

    def _list(self, list_id: str) -> dict[str, Any]:
        if list_id not in self.lists:
            raise not_found(f"list {list_id}")
        return self.lists[list_id]

    def _campaign(self, campaign_id: str) -> dict[str, Any]:
        if campaign_id not in self.campaigns:
            raise not_found(f"campaign {campaign_id}")
        return self.campaigns[campaign_id]

    @staticmethod
    def _page(items: list[Any], query: dict[str, str]) -> tuple[list[Any], int]:
        try:
            count = int(query.get("count", "10"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            raise invalid("count and offset must be integers") from None
        if not 1 <= count <= MAX_COUNT or offset < 0:
            raise invalid(f"count must be 1..{MAX_COUNT} and offset at least 0")
        return items[offset : offset + count], len(items)

    def get_templates(self, query: dict[str, str]) -> dict[str, Any]:
        kind = query.get("type")
        chosen = [t for t in self.templates.values() if kind in (None, t["type"])]
        page, total = self._page(chosen, query)
        public = [{k: v for k, v in t.items() if not k.startswith("_")} for t in page]
        return {"templates": public, "total_items": total}

    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("name") or not isinstance(body.get("html"), str):
            raise invalid("name and html are required")
        template_id = self.add_template(str(body["name"])[:100], body["html"])
        return self._public_template(template_id)

    def edit_template(self, template_id: int, body: dict[str, Any]) -> dict[str, Any]:
        template = self.templates.get(template_id)
        if template is None:
            raise not_found(f"template {template_id}")
        if "name" in body:
            template["name"] = str(body["name"])[:100]
        if "html" in body:
            template["_html"] = str(body["html"])
        template["date_edited"] = _now()
        return self._public_template(template_id)

    def _public_template(self, template_id: int) -> dict[str, Any]:
        return {k: v for k, v in self.templates[template_id].items() if not k.startswith("_")}

    def upsert_member(self, list_id: str, member_hash: str, body: dict[str, Any]) -> dict[str, Any]:
        audience = self._list(list_id)
        email = body.get("email_address")
        if not isinstance(email, str) or "@" not in email:
            raise invalid("email_address: This value should be a valid email.")
        if subscriber_hash(email) != member_hash.lower():
            raise invalid("The subscriber hash in the path does not match email_address.")
        member = audience["members"].get(member_hash.lower())
        if member is None:
            status = body.get("status_if_new") or body.get("status")
            if status not in ("subscribed", "unsubscribed", "cleaned", "pending", "transactional"):
                raise invalid("status_if_new: required for a new member (subscribed, ...)")
            member = {
                "id": member_hash.lower(),
                "email_address": email,
                "unique_email_id": uuid.uuid4().hex[:10],
                "contact_id": uuid.uuid4().hex,
                "web_id": next(self._ids),
                "email_type": body.get("email_type", "html"),
                "status": status,
                "merge_fields": {},
                "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
                "ip_signup": "",
                "timestamp_signup": "",
                "ip_opt": "",
                "timestamp_opt": _now(),
                "member_rating": 2,
                "language": "",
                "vip": False,
                "email_client": "",
                "location": {
                    "latitude": 0,
                    "longitude": 0,
                    "gmtoff": 0,
                    "dstoff": 0,
                    "country_code": "",
                    "timezone": "",
                },
                "source": "API - Generic",
                "tags_count": 0,
                "tags": [],
                "list_id": list_id,
            }
            audience["members"][member["id"]] = member
        elif body.get("status"):
            member["status"] = body["status"]
        member["email_address"] = email
        member["merge_fields"].update(body.get("merge_fields") or {})
        names = [member["merge_fields"].get("FNAME", ""), member["merge_fields"].get("LNAME", "")]
        member["full_name"] = " ".join(n for n in names if n)
        member["last_changed"] = _now()
        return member

    def batch_subscribe(self, list_id: str, body: dict[str, Any]) -> dict[str, Any]:
        members = body.get("members")
        if not isinstance(members, list) or not 1 <= len(members) <= MAX_BATCH:
            raise invalid(f"members: 1 to {MAX_BATCH} members are required")
        audience = self._list(list_id)
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in members:
            email = str(item.get("email_address", "")) if isinstance(item, dict) else ""
            key = subscriber_hash(email)
            known = key in audience["members"]
            if known and not body.get("update_existing"):
                errors.append({"email_address": email, "error": "is already a list member"})
                continue
            try:
                member = self.upsert_member(
                    list_id, key, {"status_if_new": item.get("status"), **item}
                )
            except ApiError as exc:
                errors.append({"email_address": email, "error": exc.detail})
                continue
            (updated if known else created).append(member)
        return {
            "new_members": created,
            "updated_members": updated,
            "errors": errors,
            "total_created": len(created),
            "total_updated": len(updated),
            "error_count": len(errors),
        }

    def create_segment(self, list_id: str, body: dict[str, Any]) -> dict[str, Any]:
        audience = self._list(list_id)
        if not body.get("name") or not isinstance(body.get("static_segment"), list):
            raise invalid("name and static_segment are required for a static segment")
        if any(s["name"] == body["name"] for s in audience["segments"].values()):
            raise invalid(f"A segment named {body['name']!r} already exists.")
        segment_id = next(self._ids)
        audience["segments"][segment_id] = {"id": segment_id, "name": body["name"], "emails": []}
        self.update_segment(list_id, segment_id, {"members_to_add": body["static_segment"]})
        return self._segment_view(list_id, segment_id)

    def get_segments(self, list_id: str, query: dict[str, str]) -> dict[str, Any]:
        """``GET /lists/{id}/segments`` (``type=static|saved|fuzzy``; every one here is static)."""
        audience = self._list(list_id)
        kind = query.get("type")
        chosen = sorted(audience["segments"]) if kind in (None, "static") else []
        page, total = self._page(chosen, query)
        views = [self._segment_view(list_id, segment_id) for segment_id in page]
        return {"segments": views, "list_id": list_id, "total_items": total}

    def update_segment(self, list_id: str, segment_id: int, body: dict[str, Any]) -> dict[str, Any]:
        audience = self._list(list_id)
        segment = audience["segments"].get(segment_id)
        if segment is None:
            raise not_found(f"segment {segment_id}")
        add, remove = body.get("members_to_add") or [], body.get("members_to_remove") or []
        if len(add) > MAX_BATCH or len(remove) > MAX_BATCH:
            raise invalid(f"at most {MAX_BATCH} members_to_add and members_to_remove")
        added, errors = [], []
        for email in add:
            member = audience["members"].get(subscriber_hash(str(email)))
            if member is None:
                errors.append({"email_addresses": [email], "error": "not a list member"})
            elif member["id"] not in segment["emails"]:
                segment["emails"].append(member["id"])
                added.append(member)
        removed = [e for e in remove if subscriber_hash(str(e)) in segment["emails"]]
        segment["emails"] = [h for h in segment["emails"] if h not in map(subscriber_hash, remove)]
        return {
            "members_added": added,
            "members_removed": removed,
            "errors": errors,
            "total_added": len(added),
            "total_removed": len(removed),
            "error_count": len(errors),
        }

    def _segment_view(self, list_id: str, segment_id: int) -> dict[str, Any]:
        segment = self.lists[list_id]["segments"][segment_id]
        return {
            "id": segment_id,
            "name": segment["name"],
            "member_count": len(segment["emails"]),
            "type": "static",
            "list_id": list_id,
        }

    def create_campaign(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("type") not in ("regular", "plaintext", "absplit", "rss", "variate"):
            raise invalid("type: must be regular, plaintext, absplit, rss or variate")
        recipients = body.get("recipients") or {}
        list_id = str(recipients.get("list_id"))
        self._list(list_id)
        campaign_id = self.campaign_ids.pop(0) if self.campaign_ids else uuid.uuid4().hex[:10]
        settings = {"title": "", "from_name": "", "reply_to": "", "subject_line": ""}
        settings.update(body.get("settings") or {})
        self.campaigns[campaign_id] = {
            "id": campaign_id,
            "web_id": next(self._ids),
            "type": body["type"],
            "create_time": _now(),
            "archive_url": f"http://eepurl.com/{campaign_id[:6]}",
            "long_archive_url": f"https://us6.campaign-archive.com/?id={campaign_id}",
            "status": "save",
            "emails_sent": 0,
            "send_time": "",
            "content_type": "template",
            "needs_block_refresh": False,
            "resendable": False,
            "recipients": {
                "list_id": list_id,
                "segment_opts": recipients.get("segment_opts") or {},
                "recipient_count": len(self.recipients(list_id, recipients)),
            },
            "settings": settings,
            "tracking": {"opens": True, "html_clicks": True, "text_clicks": False},
            "_html": "",
            "_outcomes": {},
        }
        return self.campaign_view(campaign_id)

    def recipients(self, list_id: str, recipients: dict[str, Any]) -> list[str]:
        """The subscribed addresses a campaign's ``recipients`` reach: its saved segment's
        members, or the whole audience without one."""
        audience = self.lists[list_id]
        members = audience["members"]
        segment = (recipients.get("segment_opts") or {}).get("saved_segment_id")
        hashes = audience["segments"][segment]["emails"] if segment in audience["segments"] else []
        if segment is None:
            hashes = list(members)
        return [members[h]["email_address"] for h in hashes if members[h]["status"] == "subscribed"]

    def get_campaigns(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /campaigns`` filtered by ``list_id`` and ``status``, oldest first."""
        chosen = [
            campaign_id
            for campaign_id, c in self.campaigns.items()
            if query.get("list_id") in (None, c["recipients"]["list_id"])
            and query.get("status") in (None, c["status"])
        ]
        page, total = self._page(chosen, query)
        return {"campaigns": [self.campaign_view(i) for i in page], "total_items": total}

    def campaign_view(self, campaign_id: str) -> dict[str, Any]:
        campaign = self._campaign(campaign_id)
        return {k: v for k, v in campaign.items() if not k.startswith("_")}

    def set_content(self, campaign_id: str, body: dict[str, Any]) -> dict[str, Any]:
        campaign = self._campaign(campaign_id)
        if isinstance(body.get("html"), str):
            campaign["_html"] = body["html"]
        elif isinstance(body.get("template"), dict):
            template = self.templates.get(int(body["template"].get("id") or 0))
            if template is None:
                raise invalid("template.id: the template does not exist")
            campaign["_html"] = template["_html"]
        else:
            raise invalid("one of html, plain_text, url, template or archive is required")
        return {"html": campaign["_html"], "plain_text": "", "archive_html": campaign["_html"]}

    def _checklist(self, campaign: dict[str, Any]) -> None:
        missing = [
            k for k in ("subject_line", "from_name", "reply_to") if not campaign["settings"][k]
        ]
        if not campaign["_html"]:
            missing.append("content")
        list_id = campaign["recipients"]["list_id"]
        if not self.recipients(list_id, campaign["recipients"]):
            missing.append("recipients")
        if missing:
            raise ApiError(
                400, "Bad Request", f"Your Campaign is not ready to send: {', '.join(missing)}."
            )
        if campaign["status"] not in ("save", "paused", "schedule"):
            raise ApiError(400, "Bad Request", f"Campaign {campaign['id']} was already sent.")

    def _unsent(self, campaign_id: str) -> dict[str, Any]:
        """A campaign that may still be sent or scheduled (Mailchimp refuses the others)."""
        campaign = self._campaign(campaign_id)
        if campaign["status"] not in ("save", "paused"):
            raise invalid(f"Campaign {campaign_id} has already been sent or scheduled.")
        return campaign

    def send(self, campaign_id: str) -> None:
        campaign = self._unsent(campaign_id)
        self._checklist(campaign)
        campaign["status"] = "sending"
        campaign["send_time"] = _now()
        campaign["recipients"]["recipient_count"] = len(
            self.recipients(campaign["recipients"]["list_id"], campaign["recipients"])
        )

    def schedule(self, campaign_id: str, body: dict[str, Any]) -> None:
        campaign = self._unsent(campaign_id)
        try:
            when = datetime.fromisoformat(str(body.get("schedule_time", "")).replace("Z", "+00:00"))
        except ValueError:
            raise invalid("schedule_time: must be an ISO 8601 time") from None
        if when.tzinfo is None or when <= datetime.now(UTC):
            raise invalid("schedule_time: must be a time in the future, with a time zone")
        if when.minute % 15 or when.second or when.microsecond:
            raise invalid("schedule_time: campaigns may only be scheduled on the quarter-hour")
        self._checklist(campaign)
        campaign["status"] = "schedule"
        campaign["send_time"] = when.astimezone(UTC).isoformat()

    def report(self, campaign_id: str) -> dict[str, Any]:
        campaign = self._campaign(campaign_id)
        if campaign["status"] in ("save", "schedule"):
            raise not_found(f"report of campaign {campaign_id}")
        outcomes = list(campaign["_outcomes"].values())
        sent = campaign["emails_sent"]
        opened = sum(o in ("open", "click") for o in outcomes)
        clicked = sum(o == "click" for o in outcomes)
        rate = lambda n: round(n / sent, 4) if sent else 0  # noqa: E731
        return {
            "id": campaign_id,
            "campaign_title": campaign["settings"]["title"],
            "type": campaign["type"],
            "list_id": campaign["recipients"]["list_id"],
            "list_is_active": True,
            "list_name": self.lists[campaign["recipients"]["list_id"]]["name"],
            "subject_line": campaign["settings"]["subject_line"],
            "preview_text": campaign["settings"].get("preview_text", ""),
            "emails_sent": sent,
            "abuse_reports": sum(o == "abuse" for o in outcomes),
            "unsubscribed": sum(o in ("unsub", "abuse") for o in outcomes),
            "send_time": campaign["send_time"],
            "bounces": {
                "hard_bounces": sum(o == "hard" for o in outcomes),
                "soft_bounces": 0,
                "syntax_errors": 0,
            },
            "forwards": {"forwards_count": 0, "forwards_opens": 0},
            "opens": {
                "opens_total": opened,
                "unique_opens": opened,
                "open_rate": rate(opened),
                "last_open": "",
            },
            "clicks": {
                "clicks_total": clicked,
                "unique_clicks": clicked,
                "unique_subscriber_clicks": clicked,
                "click_rate": rate(clicked),
                "last_click": "",
            },
            "list_stats": {"sub_rate": 0, "unsub_rate": 0, "open_rate": 0, "click_rate": 0},
            "delivery_status": {"enabled": False},
        }

    def register_webhook(self, list_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._list(list_id)
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid("url: must be a URL")
        # Mailchimp checks the URL with a GET before it accepts the hook.
        answer = self._client().get(url)
        if answer.status_code != 200:
            raise invalid(
                f"The resource submitted could not be validated (GET {answer.status_code})."
            )
        self.hook_url = url
        return {
            "id": uuid.uuid4().hex[:10],
            "url": url,
            "list_id": list_id,
            "events": body.get("events") or {},
            "sources": body.get("sources") or {},
        }

    # --- sending and webhooks -------------------------------------------------------------

    def deliver(self, campaign_id: str, outcomes: dict[str, str] | None = None) -> list[int]:
        """Send a sending/scheduled campaign: every recipient gets ``sent`` or its outcome;
        unsubscribes, abuse reports and hard bounces change the members as Mailchimp does
        and are posted as webhooks, then a ``campaign`` webhook says it was sent. Returns
        the webhook replies' status codes (none without a registered webhook)."""
        with self._lock:
            campaign = self._campaign(campaign_id)
            if campaign["status"] not in ("sending", "schedule"):
                raise RuntimeError(f"campaign {campaign_id} is {campaign['status']}, not sending")
            list_id = campaign["recipients"]["list_id"]
            recipients = self.recipients(list_id, campaign["recipients"])
            bodies = []
            for email in recipients:
                outcome = (outcomes or {}).get(email, "sent")
                if outcome not in OUTCOMES:
                    raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
                campaign["_outcomes"][email] = outcome
                member = self.lists[list_id]["members"][subscriber_hash(email)]
                if outcome in ("unsub", "abuse"):
                    member["status"] = "unsubscribed"
                    reason = "abuse" if outcome == "abuse" else "manual"
                    bodies.append(
                        webhook_body(
                            "unsubscribe",
                            [
                                ("action", "unsub"),
                                ("reason", reason),
                                ("id", member["unique_email_id"]),
                                ("list_id", list_id),
                                ("email", email),
                                ("email_type", "html"),
                                ("campaign_id", campaign_id),
                            ],
                        )
                    )
                elif outcome == "hard":
                    member["status"] = "cleaned"
                    bodies.append(
                        webhook_body(
                            "cleaned",
                            [
                                ("list_id", list_id),
                                ("campaign_id", campaign_id),
                                ("reason", "hard"),
                                ("email", email),
                            ],
                        )
                    )
            campaign["emails_sent"] = len(recipients)
            campaign["status"] = "sent"
            bodies.append(
                webhook_body(
                    "campaign",
                    [
                        ("id", campaign_id),
                        ("subject", campaign["settings"]["subject_line"]),
                        ("status", "sent"),
                        ("reason", ""),
                        ("list_id", list_id),
                    ],
                )
            )
        if not self.hook_url:
            return []  # no webhook registered: Mailchimp posts nothing
        return [self.post_webhook(body).status_code for body in bodies]

    def post_webhook(self, body: bytes) -> httpx.Response:
        if not self.hook_url:
            raise RuntimeError("no webhook is registered (POST /lists/{id}/webhooks first)")
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "MailChimp.com WebHook Validator",
        }
        return self._client().post(self.hook_url, content=body, headers=headers)

    def _client(self) -> httpx.Client:
        return self.webhook_client or httpx.Client(timeout=30)


Handler = Callable[[Request, dict[str, Any]], Any]


def create_app(state: MailchimpState) -> Starlette:
    """The API of ``state``'s account under ``/3.0``, plus ``/_emulator/*`` controls."""

    def authorized(request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, key = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return key == state.api_key

    def problem(error: ApiError) -> JSONResponse:
        body = {
            "type": ERRORS_DOC,
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "instance": str(uuid.uuid4()),
        }
        return JSONResponse(body, status_code=error.status, media_type="application/problem+json")

    def endpoint(handler: Handler, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            state.calls.append((request.method, request.url.path))
            if not authorized(request):
                return problem(ApiError(401, "API Key Invalid", "Your API key may be invalid."))
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return problem(ApiError(400, "JSON Parse Error", "the body is not valid JSON"))
            try:
                with state._lock:
                    result = handler(request, body if isinstance(body, dict) else {})
            except ApiError as exc:
                return problem(exc)
            except (KeyError, TypeError, ValueError) as exc:
                return problem(invalid(f"invalid value: {exc}"))
            if status == 204:
                return Response(status_code=204)
            return JSONResponse(result, status_code=status)

        return run

    def p(request: Request, name: str) -> str:
        return str(request.path_params[name])

    routes = [
        Route(
            "/3.0/templates",
            endpoint(lambda r, b: state.get_templates(dict(r.query_params))),
            methods=["GET"],
        ),
        Route("/3.0/templates", endpoint(lambda r, b: state.create_template(b)), methods=["POST"]),
        Route(
            "/3.0/templates/{id:int}",
            endpoint(lambda r, b: state.edit_template(r.path_params["id"], b)),
            methods=["PATCH"],
        ),
        Route(
            "/3.0/lists/{list_id}",
            endpoint(lambda r, b: state.batch_subscribe(p(r, "list_id"), b)),
            methods=["POST"],
        ),
        Route(
            "/3.0/lists/{list_id}/members/{hash}",
            endpoint(lambda r, b: state.upsert_member(p(r, "list_id"), p(r, "hash"), b)),
            methods=["PUT"],
        ),
        Route(
            "/3.0/lists/{list_id}/segments",
            endpoint(lambda r, b: state.create_segment(p(r, "list_id"), b)),
            methods=["POST"],
        ),
        Route(
            "/3.0/lists/{list_id}/segments",
            endpoint(lambda r, b: state.get_segments(p(r, "list_id"), dict(r.query_params))),
            methods=["GET"],
        ),
        Route(
            "/3.0/lists/{list_id}/segments/{id:int}",
            endpoint(lambda r, b: state.update_segment(p(r, "list_id"), r.path_params["id"], b)),
            methods=["POST"],
        ),
        Route(
            "/3.0/lists/{list_id}/webhooks",
            endpoint(lambda r, b: state.register_webhook(p(r, "list_id"), b)),
            methods=["POST"],
        ),
        Route("/3.0/campaigns", endpoint(lambda r, b: state.create_campaign(b)), methods=["POST"]),
        Route(
            "/3.0/campaigns",
            endpoint(lambda r, b: state.get_campaigns(dict(r.query_params))),
            methods=["GET"],
        ),
        Route(
            "/3.0/campaigns/{id}",
            endpoint(lambda r, b: state.campaign_view(p(r, "id"))),
            methods=["GET"],
        ),
        Route(
            "/3.0/campaigns/{id}/content",
            endpoint(lambda r, b: state.set_content(p(r, "id"), b)),
            methods=["PUT"],
        ),
        Route(
            "/3.0/campaigns/{id}/actions/send",
            endpoint(lambda r, b: state.send(p(r, "id")), 204),
            methods=["POST"],
        ),
        Route(
            "/3.0/campaigns/{id}/actions/schedule",
            endpoint(lambda r, b: state.schedule(p(r, "id"), b), 204),
            methods=["POST"],
        ),
        Route(
            "/3.0/reports/{id}", endpoint(lambda r, b: state.report(p(r, "id"))), methods=["GET"]
        ),
    ]

    async def deliver(request: Request) -> JSONResponse:
        data = await request.json()
        codes = state.deliver(p(request, "id"), data.get("outcomes"))
        return JSONResponse({"webhookStatuses": codes})

    routes.append(Route("/_emulator/campaigns/{id}/deliver", deliver, methods=["POST"]))
    return Starlette(routes=routes)
