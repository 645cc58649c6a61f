"""The in-memory account behind the SendGrid emulator, and the Event Webhook it sends.

:class:`SendGridState` holds what a SendGrid account holds (contacts, lists, import jobs,
single sends, transactional templates with versions, the event-webhook settings) plus every
event it has generated, from which the Marketing Campaigns stats are derived. The HTTP layer
(:mod:`emulators.sendgrid`) only translates requests into calls on this object, so a test
can drive the same account directly::

    state = SendGridState(api_keys={"SG.test"})
    state.configure_webhook(hook_url, signed=True)          # like the dashboard
    events = state.deliver(single_send_id, {"bob@x.test": "bounce"})

Events follow the published Event Webhook format: a JSON array of objects (keys sorted,
compact, events separated by ``\\r\\n``, the body ending in ``\\r\\n`` as real batches do),
signed with ECDSA P-256 / SHA-256 over ``timestamp + body`` in the headers
``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``. The key pair is generated per
state; :meth:`SendGridState.public_key` is what ``GET /v3/user/webhooks/event/settings/signed``
returns (base64 DER SubjectPublicKeyInfo).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

WEBHOOK_TOGGLES = (
    "processed",
    "delivered",
    "deferred",
    "bounce",
    "dropped",
    "open",
    "click",
    "spam_report",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
)
"""The per-event switches of the event-webhook settings (``spamreport`` is ``spam_report``)."""

OUTCOMES: Mapping[str, tuple[str, ...]] = {
    "delivered": ("processed", "delivered"),
    "open": ("processed", "delivered", "open"),
    "click": ("processed", "delivered", "open", "click"),
    "deferred": ("processed", "deferred", "delivered"),
    "bounce": ("processed", "bounce"),
    "blocked": ("processed", "blocked"),
    "dropped": ("dropped",),
    "spamreport": ("processed", "delivered", "open", "spamreport"),
    "unsubscribe": ("processed", "delivered", "open", "click", "unsubscribe"),
    "group_unsubscribe": ("processed", "delivered", "open", "click", "group_unsubscribe"),
}
"""What happens to one recipient of a simulated send, as the events SendGrid would post."""

USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
EVENT_FIELDS: Mapping[str, dict[str, Any]] = {
    "processed": {},
    "delivered": {"response": "250 OK", "ip": "149.72.0.1", "tls": 1},
    "deferred": {"response": "400 try again later", "attempt": "1", "ip": "149.72.0.1"},
    "bounce": {
        "type": "bounce",
        "status": "5.1.1",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist",
        "bounce_classification": "Invalid Address",
        "ip": "149.72.0.1",
    },
    "blocked": {
        "event": "bounce",
        "type": "blocked",
        "status": "5.7.1",
        "reason": "550 5.7.1 Message rejected by the recipient's policy",
        "bounce_classification": "Reputation",
        "ip": "149.72.0.1",
    },
    "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
    "open": {"useragent": USER_AGENT, "ip": "203.0.113.7", "sg_machine_open": False},
    "click": {
        "useragent": USER_AGENT,
        "ip": "203.0.113.7",
        "url": "https://example.com/spring",
        "url_offset": {"index": 0, "type": "html"},
    },
    "spamreport": {},
    "unsubscribe": {},
    "group_unsubscribe": {"useragent": USER_AGENT, "ip": "203.0.113.7"},
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def event_body(events: Iterable[Mapping[str, Any]]) -> bytes:
    """A batch as SendGrid sends it: compact sorted-key JSON, ``\\r\\n`` separated/ended."""
    parts = [json.dumps(e, separators=(",", ":"), sort_keys=True) for e in events]
    return ("[" + ",\r\n".join(parts) + "]\r\n").encode()


@dataclass
class RateLimit:
    """SendGrid's per-key request budget: ``requests`` per refresh period of ``period_s``
    seconds (a fixed window). SendGrid publishes no numbers (they vary by endpoint and
    plan), only the behaviour: every response carries ``X-RateLimit-Limit``,
    ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (the epoch second the period ends),
    and a request past the budget gets ``429`` with ``{"errors": [{"field": null,
    "message": "too many requests"}]}`` until then. The emulator counts every ``/v3`` call
    of the key against one budget (SendGrid keeps one per endpoint)."""

    requests: int
    period_s: float
    window_start: float = 0.0
    used: int = 0

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request at ``now``: whether it is allowed, and the headers to send."""
        if now >= self.window_start + self.period_s:
            self.window_start, self.used = now, 0
        allowed = self.used < self.requests
        if allowed:
            self.used += 1
        reset = math.ceil(self.window_start + self.period_s)
        return allowed, {
            "X-RateLimit-Limit": str(self.requests),
            "X-RateLimit-Remaining": str(max(self.requests - self.used, 0)),
            "X-RateLimit-Reset": str(reset),
        }


class EmulatorError(Exception):
    """A request SendGrid would refuse: ``status`` plus the ``errors`` envelope entries."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.errors = [{"field": field, "message": message}]


@dataclass
class SendGridState:
    """One emulated SendGrid account. Thread-safe: the app and a test share it."""

    api_keys: set[str] = field(default_factory=lambda: {"SG.emulator-api-key"})
    hold_imports: bool = False
    """Leave contact import jobs ``pending`` (call :meth:`finish_imports` to run them)."""
    clock: Callable[[], float] = time.time

    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lower-case email
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    single_sends: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    webhook: dict[str, Any] = field(
        default_factory=lambda: {
            "enabled": False,
            "url": "",
            **dict.fromkeys(WEBHOOK_TOGGLES, True),
        }
    )
    signed: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)
    """Every webhook POST made: url, status (or error), event count, body bytes."""
    requests: list[str] = field(default_factory=list)
    """Every API request received, as ``"METHOD /path?query"``."""
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    """Per API key: its request budget (see :meth:`limit_rate`); keys not here are not
    limited."""
    throttled: list[str] = field(default_factory=list)
    """Every request answered 429, as ``"METHOD /path?query"``."""

    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False
    )
    _serial: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    # --- auth and signing -----------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() in self.api_keys

    def limit_rate(self, api_key: str, requests: int | None, per_seconds: float = 1.0) -> None:
        """Allow ``api_key`` ``requests`` calls per ``per_seconds`` from now on; ``None``
        switches its limit off."""
        with self.lock:
            if requests is None:
                self.rate_limits.pop(api_key, None)
            elif requests < 0 or per_seconds <= 0:
                raise EmulatorError(400, "requests must be >= 0 and perSeconds > 0", "requests")
            else:
                self.rate_limits[api_key] = RateLimit(int(requests), float(per_seconds))

    def rate_check(self, header: str | None) -> tuple[bool, dict[str, str]]:
        """Count a request of the key in ``header`` against its budget: allowed or not, and
        the rate-limit headers of the answer (none for a key without a limit)."""
        token = (header or "").partition(" ")[2].strip()
        with self.lock:
            limit = self.rate_limits.get(token)
            return limit.take(self.clock()) if limit else (True, {})

    def public_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo, as the dashboard and the API show it."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, timestamp: str, body: bytes) -> str:
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    # --- contacts and lists ---------------------------------------------------------------

    def create_list(self, name: str) -> dict[str, Any]:
        with self.lock:
            if not name or len(name) > 100:
                raise EmulatorError(400, "name is required (1-100 characters)", "name")
            if any(item["name"] == name for item in self.lists.values()):
                raise EmulatorError(400, "list name already exists", "name")
            item = {"id": str(uuid.uuid4()), "name": name}
            self.lists[item["id"]] = item
            return item

    def list_contact_count(self, list_id: str) -> int:
        return sum(1 for c in self.contacts.values() if list_id in c["list_ids"])

    def upsert_contacts(self, contacts: Any, list_ids: Any) -> str:
        """``PUT /v3/marketing/contacts``: validate, queue a job, return its id."""
        if not isinstance(contacts, list) or not 1 <= len(contacts) <= 30000:
            raise EmulatorError(400, "contacts must be a list of 1 to 30000 contacts", "contacts")
        list_ids = list_ids or []
        with self.lock:
            for list_id in list_ids:
                if list_id not in self.lists:
                    raise EmulatorError(404, f"list {list_id} not found", "list_ids")
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = {
                "id": job_id,
                "status": "pending",
                "job_type": "upsert",
                "results": {"requested_count": len(contacts)},
                "started_at": now_iso(),
                "_work": (contacts, list(list_ids)),
            }
            if not self.hold_imports:
                self._run_job(job_id)
            return job_id

    def finish_imports(self) -> None:
        with self.lock:
            for job_id, job in self.jobs.items():
                if job["status"] == "pending":
                    self._run_job(job_id)

    def _run_job(self, job_id: str) -> None:
        job = self.jobs[job_id]
        contacts, list_ids = job.pop("_work")
        created = updated = errored = 0
        for given in contacts:
            email = str(given.get("email") or "").strip().lower() if isinstance(given, dict) else ""
            if "@" not in email:
                errored += 1
                continue
            contact = self.contacts.get(email)
            if contact is None:
                created += 1
                contact = {
                    "id": str(uuid.uuid4()),
                    "email": email,
                    "list_ids": [],
                    "custom_fields": {},
                    "created_at": now_iso(),
                }
                self.contacts[email] = contact
            else:
                updated += 1
            for key in ("first_name", "last_name", "phone_number", "city", "country"):
                if key in given:
                    contact[key] = given[key]
            contact["custom_fields"].update(given.get("custom_fields") or {})
            contact["list_ids"] += [i for i in list_ids if i not in contact["list_ids"]]
            contact["updated_at"] = now_iso()
        job["results"].update(
            created_count=created, updated_count=updated, deleted_count=0, errored_count=errored
        )
        job["status"] = "completed" if errored == 0 else "errored"
        job["finished_at"] = now_iso()

    # --- single sends -----------------------------------------------------------------------

    def create_single_send(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise EmulatorError(400, "name is required (1-100 characters)", "name")
        config = {
            "editor": "code",
            "generate_plain_content": True,
            "suppression_group_id": None,
            "custom_unsubscribe_url": None,
            "sender_id": None,
            "ip_pool": None,
            **(body.get("email_config") or {}),
        }
        if config.get("design_id") and (config.get("html_content") or config.get("subject")):
            raise EmulatorError(400, "design_id excludes subject/html_content", "email_config")
        now = now_iso()
        item: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "name": name,
            "status": "draft",
            "categories": list(body.get("categories") or []),
            "send_to": dict(body.get("send_to") or {}),
            "email_config": config,
            "send_at": None,
            "created_at": now,
            "updated_at": now,
            "warnings": [],
        }
        with self.lock:
            self.single_sends[item["id"]] = item
        return item

    def schedule(self, single_send_id: str, send_at: Any) -> dict[str, Any]:
        """``PUT /v3/marketing/singlesends/{id}/schedule``: refuse an incomplete send."""
        with self.lock:
            item = self.single_send(single_send_id)
            config, send_to = item["email_config"], item["send_to"]
            problems = []
            if not config.get("sender_id"):
                problems.append(("email_config.sender_id", "a verified sender_id is required"))
            if not (config.get("suppression_group_id") or config.get("custom_unsubscribe_url")):
                problems.append(
                    (
                        "email_config.suppression_group_id",
                        "a suppression group or custom unsubscribe URL is required",
                    )
                )
            if not config.get("design_id") and not (
                config.get("subject") and config.get("html_content")
            ):
                problems.append(("email_config", "subject and html_content are required"))
            lists = send_to.get("list_ids") or []
            if not (lists or send_to.get("segment_ids") or send_to.get("all")):
                problems.append(("send_to", "at least one list, segment or all is required"))
            problems += [
                ("send_to.list_ids", f"list {i} not found") for i in lists if i not in self.lists
            ]
            if not isinstance(send_at, str) or not send_at:
                problems.append(("send_at", "send_at must be 'now' or an ISO 8601 date-time"))
            if problems:
                error = EmulatorError(400, problems[0][1], problems[0][0])
                error.errors = [{"field": f, "message": m} for f, m in problems]
                raise error
            item["send_at"] = now_iso() if send_at == "now" else send_at
            item["status"] = "scheduled"
            item["updated_at"] = now_iso()
            return {"send_at": item["send_at"], "status": "scheduled"}

    def single_send(self, single_send_id: str) -> dict[str, Any]:
        item = self.single_sends.get(single_send_id)
        if item is None:
            raise EmulatorError(404, "resource not found", "id")
        return item

    def recipients(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        send_to = item["send_to"]
        if send_to.get("all"):
            return list(self.contacts.values())
        wanted = set(send_to.get("list_ids") or [])
        return [c for c in self.contacts.values() if wanted & set(c["list_ids"])]

    # --- delivery simulation and the Event Webhook ------------------------------------------

    def configure_webhook(self, url: str, *, signed: bool = True, **toggles: bool) -> None:
        """What an admin does in the dashboard: set the URL, enable signing."""
        with self.lock:
            self.webhook.update(enabled=True, url=url, **toggles)
            self.signed = signed

    def deliver(
        self,
        single_send_id: str,
        outcomes: Mapping[str, str] | None = None,
        *,
        default: str = "delivered",
        post: bool = True,
    ) -> list[dict[str, Any]]:
        """Send a scheduled single send: one event sequence per recipient (``outcomes`` maps
        an email to a key of OUTCOMES, others get ``default``), stored for the stats, and
        POSTed to the webhook when one is enabled. Returns the events."""
        with self.lock:
            item = self.single_send(single_send_id)
            if item["status"] not in ("scheduled", "triggered"):
                raise EmulatorError(400, f"single send is {item['status']}, not scheduled")
            item["status"] = "triggered"
            wanted = {k.lower(): v for k, v in (outcomes or {}).items()}
            events = []
            for contact in self.recipients(item):
                plan = OUTCOMES[wanted.get(contact["email"], default)]
                events += self._events_for(item, contact["email"], plan)
            self.events += events
        if post:
            self.post_events(events)
        return events

    def _events_for(
        self, item: Mapping[str, Any], email: str, plan: Iterable[str]
    ) -> list[dict[str, Any]]:
        serial = next(self._serial)
        message = b64url(f"{item['id']}:{email}")[:22]
        common: dict[str, Any] = {
            "email": email,
            "category": item["categories"],
            "singlesend_id": item["id"],
            "singlesend_name": item["name"],
            "mc_stats": "singlesend",
            "phase_id": "send",
            "send_at": int(self.clock()),
            "sg_message_id": f"{message}.filterdrecv-emulator-1-{serial:08X}-0.0",
            "smtp-id": f"<{message}@ismtpd0001p1emu.sendgrid.net>",
        }
        group = item["email_config"].get("suppression_group_id")
        if group:
            common["asm_group_id"] = int(group)
        events = []
        for index, step in enumerate(plan):
            event = {**common, "event": step, **EVENT_FIELDS[step]}
            event["timestamp"] = int(self.clock()) + index
            event["sg_event_id"] = b64url(f"{event['event']}-{serial}-{message}-{index}")
            events.append(event)
        return events

    def webhook_request(self, events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one webhook POST of ``events`` (signed when signing is on)."""
        body = event_body(events)
        headers = {"Content-Type": "application/json", "User-Agent": "SendGrid Event API"}
        if self.signed:
            stamp = str(int(self.clock()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = self.sign(stamp, body)
        return body, headers

    def post_events(self, events: list[dict[str, Any]], *, batch_size: int = 500) -> list[int]:
        """POST ``events`` to the webhook in batches, signed when signing is on; return the
        HTTP statuses (0 for a connection failure). Nothing is sent while it is disabled."""
        hook = dict(self.webhook)
        if not hook["enabled"] or not hook["url"]:
            return []
        chosen = [e for e in events if hook.get(toggle_of(e["event"]), True)]
        statuses = []
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start : start + batch_size]
            body, headers = self.webhook_request(batch)
            record: dict[str, Any] = {"url": hook["url"], "events": len(batch), "body": body}
            try:
                reply = httpx.post(hook["url"], content=body, headers=headers, timeout=30)
                record["status"] = reply.status_code
            except httpx.HTTPError as exc:
                record.update(status=0, error=str(exc))
            with self.lock:
                self.posts.append(record)
            statuses.append(record["status"])
        return statuses

    # --- stats --------------------------------------------------------------------------------

    def stats(self, single_send_id: str) -> dict[str, int]:
        """The Marketing Campaigns stats of a single send, counted from its events."""
        with self.lock:
            self.single_send(single_send_id)
            mine = [e for e in self.events if e.get("singlesend_id") == single_send_id]
        kinds = [e["event"] for e in mine]

        def unique(kind: str) -> int:
            return len({e["email"] for e in mine if e["event"] == kind})

        drops = [e for e in mine if e["event"] == "dropped"]

        def dropped(reason: str) -> int:
            return sum(1 for e in drops if e.get("reason") == reason)

        return {
            "requests": kinds.count("processed") + len(drops),
            "delivered": kinds.count("delivered"),
            "bounces": kinds.count("bounce"),
            "bounce_drops": dropped("Bounced Address"),
            "spam_report_drops": dropped("Spam Reporting Address"),
            "invalid_emails": dropped("Invalid"),
            "opens": kinds.count("open"),
            "unique_opens": unique("open"),
            "clicks": kinds.count("click"),
            "unique_clicks": unique("click"),
            "unsubscribes": kinds.count("unsubscribe") + kinds.count("group_unsubscribe"),
            "spam_reports": kinds.count("spamreport"),
        }


def toggle_of(event: str) -> str:
    return "spam_report" if event == "spamreport" else event
