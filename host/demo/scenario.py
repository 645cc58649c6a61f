"""What happens in ``crm-host demo``, step by step, over the host's HTTP API.

The scenario plays three people: the **platform admin** (uploads the example modules,
creates the tenant, enables the modules with their settings), the **CRM** (imports contacts
and templates, launches campaigns, reads deliveries and stats) and the **services' side**
(what an account owner does in SendGrid/Unisender/Mailchimp dashboards, and the emulators delivering
mail and posting their webhooks, Telegram users opening the bot's deep link).

Everything is deterministic: each recipient's fate is fixed by its position in the contact
list (``SENDGRID_OUTCOMES`` and friends), and waiting is polling with a deadline.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from host.api.schemas import (
    CampaignOut,
    CampaignQueued,
    CampaignStatsOut,
    ContactsUpserted,
    DeliveryPage,
    EnablementOut,
    MessengerBots,
    TemplateImportOut,
    TemplateOut,
    TenantCreated,
    VersionOut,
)
from host.demo.servers import (
    MAILCHIMP_API_KEY,
    SENDGRID_API_KEY,
    TELEGRAM_TOKEN,
    UNISENDER_API_KEY,
    DemoServers,
)

#: the example modules, installed with the host (``host.module_manifests``, see setup.py)
MODULES_DIR = Path(str(files("host.module_manifests")))
MODULES = ("sendgrid", "unisender", "telegram", "mailchimp")
TENANT = "acme"
SENDER_ID = 1001
SUPPRESSION_GROUP_ID = 42
TELEGRAM_SECRET = "demo-webhook-secret-0123456789"
MAILCHIMP_LIST_ID = "a6b5da1054"
MAILCHIMP_SECRET = "demo-mailchimp-url-secret-0123456789"
TELEGRAM_AUDIENCE = 30
T = TypeVar("T")
"""The Telegram campaign goes to the first contacts (the module sends ≤ 45 per campaign)."""

SENDGRID_OUTCOMES = (
    "click",
    "open",
    "delivered",
    "click",
    "open",
    "delivered",
    "open",
    "bounce",
    "blocked",
    "unsubscribe",
)
"""Contact i's fate in the SendGrid campaign: ``SENDGRID_OUTCOMES[i % 10]``."""

UNISENDER_STATUSES = (
    "ok_read",
    "ok_delivered",
    "ok_link_visited",
    "ok_delivered",
    "ok_read",
    "err_user_unknown",
    "ok_delivered",
    "ok_link_visited",
    "err_mailbox_full",
    "ok_read",
)
"""Contact i's fate in the Unisender campaign: ``UNISENDER_STATUSES[i % 10]``."""

MAILCHIMP_OUTCOMES = (
    "click",
    "open",
    "sent",
    "open",
    "hard",
    "sent",
    "click",
    "unsub",
    "abuse",
    "sent",
)
"""Contact i's fate in the Mailchimp campaign: ``MAILCHIMP_OUTCOMES[i % 10]`` (``sent``,
``open`` and ``click`` post no webhook; the campaign report counts them)."""

FINAL = ("Sent", "Failed", "Cancelled")
DELIVERY_ORDER = (
    "Pending",
    "Sent",
    "Delivered",
    "Opened",
    "Clicked",
    "SoftBounced",
    "Bounced",
    "Complained",
    "Unsubscribed",
    "Failed",
)


class DemoFailure(Exception):
    """A step did not do what it should; the message says what happened."""


@dataclass
class CampaignReport:
    name: str
    module: str
    status: str = ""
    external_id: str = ""
    error: str | None = None
    deliveries: Counter[str] = field(default_factory=Counter)
    stats: dict[str, int] = field(default_factory=dict)
    id: str = ""

    @property
    def recipients(self) -> int:
        return sum(self.deliveries.values())


@dataclass
class Step:
    title: str
    run: Callable[[], str]
    """Does the step and returns a one-line summary of what it did."""


class DemoScenario:
    """The demo's steps against running :class:`DemoServers`; :meth:`steps` lists them in
    order, and :attr:`campaigns` holds the results once they ran."""

    def __init__(self, servers: DemoServers, contacts: int, *, timeout: float = 30.0):
        if contacts < 1:
            raise DemoFailure("--contacts must be at least 1")
        self.servers = servers
        self.count = contacts
        self.timeout = timeout
        self.client = httpx.Client(
            base_url=servers.url,
            headers={"Authorization": f"Bearer {servers.admin_token}"},
            timeout=timeout,
        )
        self.emulator = {n: s.url for n, s in servers.emulators.items()}
        self.tenant_key = ""
        self.hooks: dict[str, str] = {}
        self.contact_ids: list[str] = []
        self.emails: list[str] = []
        self.bot_id = ""
        self.campaigns: dict[str, CampaignReport] = {}

    def close(self) -> None:
        self.client.close()

    def steps(self) -> list[Step]:
        return [
            Step("upload the example modules", self.upload_modules),
            Step("create tenant acme", self.create_tenant),
            Step("enable SendGrid (signed Event Webhook)", self.enable_sendgrid),
            Step("enable Unisender (md5-signed webhook)", self.enable_unisender),
            Step("enable Telegram (bot webhook)", self.enable_telegram),
            Step("enable Mailchimp (secret in the webhook URL)", self.enable_mailchimp),
            Step("import contacts", self.import_contacts),
            Step("Telegram users open the bot's deep link", self.link_telegram_users),
            Step("import templates", self.import_templates),
            Step("send the SendGrid email campaign", self.send_sendgrid_campaign),
            Step("SendGrid delivers it and posts its events", self.sendgrid_delivers),
            Step("send the Unisender email campaign", self.send_unisender_campaign),
            Step("Unisender delivers it and posts its events", self.unisender_delivers),
            Step("send the Telegram campaign", self.send_telegram_campaign),
            Step("a Telegram user blocks the bot", self.telegram_user_blocks),
            Step("send the Mailchimp email campaign", self.send_mailchimp_campaign),
            Step("Mailchimp sends it and posts its webhooks", self.mailchimp_delivers),
            Step("collect statuses, deliveries and stats", self.collect),
        ]

    # --- HTTP helpers ----------------------------------------------------------------------

    def call(self, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        try:
            reply = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DemoFailure(f"{method} {path}: {exc}") from None
        if reply.status_code != expect:
            raise DemoFailure(f"{method} {path} answered {reply.status_code}: {describe(reply)}")
        return reply.json() if reply.content else None

    def read(
        self, shape: type[T], method: str, path: str, *, expect: int = 200, **kwargs: Any
    ) -> T:
        """``call``, its answer parsed into the API's own model: the demo reads the answers
        as the server declares them, so a drift between the two fails here, by field."""
        try:
            return TypeAdapter(shape).validate_python(
                self.call(method, path, expect=expect, **kwargs)
            )
        except ValidationError as exc:
            raise DemoFailure(f"{method} {path} answered an unexpected shape: {exc}") from None

    def emulator_call(self, service: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = httpx.post(self.emulator[service] + path, timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise DemoFailure(f"{service} emulator {path}: {exc}") from None
        if reply.status_code >= 300:
            raise DemoFailure(f"{service} emulator {path}: {reply.status_code} {reply.text}")
        return reply.json()

    def enable(self, module: str, settings: dict[str, Any]) -> str:
        body = {"settings": settings, "enabled": True}
        path = f"/api/v1/tenants/{TENANT}/modules/{module}"
        reply = self.read(EnablementOut, "PUT", path, json=body)
        self.hooks[module] = reply.webhook_url
        return reply.webhook_url

    def wait_campaign(self, campaign_id: str, done: Callable[[CampaignOut], bool]) -> CampaignOut:
        deadline = time.monotonic() + self.timeout
        while True:
            view = self.read(
                CampaignOut, "GET", f"/api/v1/tenants/{TENANT}/campaigns/{campaign_id}"
            )
            if view.status == "Failed":
                raise DemoFailure(f"campaign {view.name!r} failed: {view.error}")
            if done(view):
                return view
            if time.monotonic() > deadline:
                raise DemoFailure(
                    f"campaign {view.name!r} is still {view.status} "
                    f"({view.progress.model_dump(by_alias=True)}) after {self.timeout:.0f} s"
                )
            time.sleep(0.05)

    # --- the admin -------------------------------------------------------------------------

    def upload_modules(self) -> str:
        uploaded = []
        for name in MODULES:
            folder = MODULES_DIR / name
            if not (folder / "manifest.json").is_file():
                raise DemoFailure(f"{folder} not found: the installation is incomplete")
            manifest = json.loads((folder / "manifest.json").read_text())
            script = (folder / manifest.get("script", "module.py")).read_text()
            # The demo's copy also declares its emulator: the admin's allow-list only waives
            # the loopback refusal for destinations a manifest declares (SPEC §4).
            emulator = self.servers.emulators[name].netloc
            manifest["egress"] = [*manifest.get("egress", []), emulator]
            body = {"manifest": manifest, "script": script}
            info = self.read(VersionOut, "POST", "/api/v1/modules", json=body, expect=201)
            uploaded.append(f"{info.id}@{info.version} ({len(info.functions)} functions)")
        return ", ".join(uploaded)

    def create_tenant(self) -> str:
        body = {"id": TENANT, "name": "Acme Corp"}
        created = self.read(TenantCreated, "POST", "/api/v1/tenants", json=body, expect=201)
        self.tenant_key = created.api_key
        return "Acme Corp, API key issued"

    def enable_sendgrid(self) -> str:
        base = self.emulator["sendgrid"]
        account = {"Authorization": f"Bearer {SENDGRID_API_KEY}"}
        # In SendGrid: Mail Settings → Signed Event Webhook → the verification key.
        signed = httpx.patch(
            f"{base}/v3/user/webhooks/event/settings/signed",
            json={"enabled": True},
            headers=account,
            timeout=self.timeout,
        ).json()
        hook = self.enable(
            "sendgrid",
            {
                "api_key": SENDGRID_API_KEY,
                "api_base_url": base,
                "sender_id": SENDER_ID,
                "suppression_group_id": SUPPRESSION_GROUP_ID,
                "webhook_public_key": signed["public_key"],
            },
        )
        # Mail Settings → Event Webhook → Post URL = the module's webhook URL.
        httpx.patch(
            f"{base}/v3/user/webhooks/event/settings",
            json={"enabled": True, "url": hook},
            headers=account,
            timeout=self.timeout,
        ).raise_for_status()
        return "event webhook → " + short(hook)

    def enable_unisender(self) -> str:
        api = self.emulator["unisender"] + "/en/api"
        hook = self.enable(
            "unisender",
            {
                "api_key": UNISENDER_API_KEY,
                "api_base_url": api,
                "list_id": 1,
                "sender_name": "Acme",
                "sender_email": "news@acme.test",
            },
        )
        answer = httpx.post(
            f"{api}/setHook",
            data={
                "format": "json",
                "api_key": UNISENDER_API_KEY,
                "hook_url": hook,
                "event_format": "json_post",
                "events[email_status]": "*",
                "events[campaign_status]": "*",
                "events[unsubscribe]": "*",
            },
            timeout=self.timeout,
        ).json()
        if "error" in answer:
            raise DemoFailure(f"Unisender setHook: {answer['error']}")
        return "setHook → " + short(hook)

    def enable_telegram(self) -> str:
        settings = {
            "bot_token": TELEGRAM_TOKEN,
            "webhook_secret": TELEGRAM_SECRET,
            "api_base_url": self.emulator["telegram"],
            "welcome_text": "You will get Acme news here.",
        }
        hook = self.enable("telegram", settings)
        path = f"/api/v1/tenants/{TENANT}/modules/telegram"
        self.call("PATCH", path, json={"settings": {"webhook_url": hook}})
        # GetMessengerBots registers the webhook with setWebhook (webhook_url is set).
        bots = self.read(MessengerBots, "GET", f"{path}/messenger/bots").bots
        if not bots:
            raise DemoFailure("the Telegram module lists no bot")
        self.bot_id = bots[0].id
        return f"bot {bots[0].name} ({self.bot_id}), setWebhook → {short(hook)}"

    def enable_mailchimp(self) -> str:
        base = self.emulator["mailchimp"]
        hook = self.enable(
            "mailchimp",
            {
                "api_key": MAILCHIMP_API_KEY,
                "list_id": MAILCHIMP_LIST_ID,
                "webhook_secret": MAILCHIMP_SECRET,
                "api_base_url": base,
            },
        )
        # Audience → Settings → Webhooks: the URL with the secret; Mailchimp GETs it first.
        reply = httpx.post(
            f"{base}/3.0/lists/{MAILCHIMP_LIST_ID}/webhooks",
            json={
                "url": f"{hook}?secret={MAILCHIMP_SECRET}",
                "events": {
                    "subscribe": True,
                    "unsubscribe": True,
                    "cleaned": True,
                    "profile": True,
                    "upemail": True,
                    "campaign": True,
                },
                "sources": {"user": True, "admin": True, "api": False},
            },
            auth=("anystring", MAILCHIMP_API_KEY),
            timeout=self.timeout,
        )
        if reply.status_code != 200:
            raise DemoFailure(f"Mailchimp refused the webhook: {reply.text}")
        return "audience webhook (validated by GET) → " + short(hook)

    # --- the CRM ---------------------------------------------------------------------------

    def import_contacts(self) -> str:
        rows = [
            {"name": f"Demo Person {i + 1:03d}", "email": f"person{i + 1:03d}@acme-demo.test"}
            for i in range(self.count)
        ]
        reply = self.read(ContactsUpserted, "POST", f"/api/v1/tenants/{TENANT}/contacts", json=rows)
        self.contact_ids = reply.ids
        self.emails = [r["email"] for r in rows]
        if len(self.contact_ids) != self.count:
            raise DemoFailure(f"{self.count} contacts sent, {len(self.contact_ids)} ids back")
        return f"{reply.created} created"

    def telegram_audience(self) -> list[int]:
        return list(range(min(self.count, TELEGRAM_AUDIENCE)))

    @staticmethod
    def links_telegram(index: int) -> bool:
        return index % 6 != 5  # every sixth contact of the audience never opened the link

    def link_telegram_users(self) -> str:
        linked = 0
        for index in self.telegram_audience():
            if not self.links_telegram(index):
                continue
            payload = {"chat_id": 700000 + index, "payload": f"c_{self.contact_ids[index]}"}
            answer = self.emulator_call("telegram", "/_emulator/start", json=payload)
            if answer["webhookStatus"] != 200:
                raise DemoFailure(f"the bot's webhook answered {answer['webhookStatus']}")
            linked += 1
        return f"{linked} chats linked to contacts (/start c_<contact id>)"

    def import_templates(self) -> str:
        base = self.emulator["sendgrid"]
        account = {"Authorization": f"Bearer {SENDGRID_API_KEY}"}
        unisender = self.emulator["unisender"] + "/en/api"
        # What the accounts already hold: two templates each, made through their APIs.
        for name in ("Spring sale", "Welcome"):
            html = template_html(name)
            created = httpx.post(
                f"{base}/v3/templates",
                json={"name": name, "generation": "dynamic"},
                headers=account,
                timeout=self.timeout,
            ).json()
            httpx.post(
                f"{base}/v3/templates/{created['id']}/versions",
                json={"name": "v1", "subject": name, "html_content": html, "active": 1},
                headers=account,
                timeout=self.timeout,
            ).raise_for_status()
            httpx.post(
                f"{self.emulator['mailchimp']}/3.0/templates",
                json={"name": name, "html": html},
                auth=("anystring", MAILCHIMP_API_KEY),
                timeout=self.timeout,
            ).raise_for_status()
            httpx.post(
                f"{unisender}/createEmailTemplate",
                data={"format": "json", "api_key": UNISENDER_API_KEY, "title": name, "body": html},
                timeout=self.timeout,
            ).raise_for_status()
        counts = []
        for module in ("sendgrid", "unisender", "mailchimp"):
            path = f"/api/v1/tenants/{TENANT}/modules/{module}/templates/import"
            report = self.read(TemplateImportOut, "POST", path)
            counts.append(f"{module} {report.imported}")
        return "imported: " + ", ".join(counts)

    def template_id(self, module: str, name: str) -> str:
        listed = self.read(
            list[TemplateOut],
            "GET",
            f"/api/v1/tenants/{TENANT}/templates",
            params={"module": module},
        )
        for template in listed:
            if template.name == name:
                return template.id
        raise DemoFailure(f"template {name!r} of {module} was not imported")

    def launch(self, name: str, module: str, draft: dict[str, Any]) -> CampaignReport:
        body = {"module": module, "name": name, **draft}
        path = f"/api/v1/tenants/{TENANT}/campaigns"
        created = self.read(CampaignQueued, "POST", path, json=body, expect=202)
        report = CampaignReport(name=name, module=module, id=created.id)
        self.campaigns[module] = report
        view = self.wait_campaign(report.id, lambda v: bool(v.external_id))
        report.external_id, report.status = view.external_id or "", view.status
        return report

    def email_draft(self, module: str) -> dict[str, Any]:
        return {
            "type": "Email",
            "subject": "Spring sale: 20% off everything",
            "senderName": "Acme",
            "senderEmail": "news@acme.test",
            "contactIds": "all",
            "templateId": self.template_id(module, "Spring sale"),
        }

    def send_sendgrid_campaign(self) -> str:
        report = self.launch("Spring sale", "sendgrid", self.email_draft("sendgrid"))
        return f"{report.status}, single send {report.external_id}"

    def sendgrid_delivers(self) -> str:
        report = self.campaigns["sendgrid"]
        outcomes = {
            email: SENDGRID_OUTCOMES[i % len(SENDGRID_OUTCOMES)]
            for i, email in enumerate(self.emails)
        }
        answer = self.emulator_call(
            "sendgrid",
            f"/_emulator/singlesends/{report.external_id}/deliver",
            json={"outcomes": outcomes},
        )
        if any(status != 200 for status in answer["posts"]):
            raise DemoFailure(f"the host answered the signed Event Webhook {answer['posts']}")
        return f"{answer['events']} events in {len(answer['posts'])} signed batch(es), all 200"

    def send_unisender_campaign(self) -> str:
        report = self.launch("Spring news", "unisender", self.email_draft("unisender"))
        return f"{report.status}, campaign {report.external_id}"

    def unisender_delivers(self) -> str:
        report = self.campaigns["unisender"]
        statuses = {
            email: UNISENDER_STATUSES[i % len(UNISENDER_STATUSES)]
            for i, email in enumerate(self.emails)
        }
        body = {"campaign_id": int(report.external_id), "statuses": statuses}
        answer = self.emulator_call("unisender", "/_emulator/deliver", json=body)
        if answer["webhookStatus"] != 200:
            raise DemoFailure(f"the host answered Unisender's webhook {answer['webhookStatus']}")
        return "email_status + campaign_status events, webhook 200"

    def send_telegram_campaign(self) -> str:
        audience = [self.contact_ids[i] for i in self.telegram_audience()]
        draft = {
            "type": "Messenger",
            "campaignType": "Telegram",
            "botId": self.bot_id,
            "text": "Spring sale: 20% off everything until Sunday!",
            "contactIds": audience,
        }
        report = self.launch("Spring flash", "telegram", draft)
        messages = len(self.servers.telegram.sent)
        view = self.read(CampaignOut, "GET", f"/api/v1/tenants/{TENANT}/campaigns/{report.id}")
        skipped = view.progress.skipped
        recipients = len(audience) - skipped
        left_out = sorted((r, n) for r, n in view.progress.skipped_by.items() if n)
        why = ", ".join(f"{n} {reason}" for reason, n in left_out)
        # One line that adds up: chosen = left out (suppressed earlier, with the reasons) +
        # recipients, and recipients = messages (contacts with a linked chat) + those without.
        return (
            f"{report.status}: {len(audience)} contacts chosen, {skipped} left out ({why}), "
            f"{recipients} recipients: {messages} messages sent, "
            f"{recipients - messages} without a chat"
        )

    def telegram_user_blocks(self) -> str:
        # Any update carries the module's queued reports (contacts without a chat → Failed).
        answer = self.emulator_call("telegram", "/_emulator/block", json={"chat_id": 700000})
        if answer["webhookStatus"] != 200:
            raise DemoFailure(f"the bot's webhook answered {answer['webhookStatus']}")
        return "my_chat_member kicked → unsubscribed from category telegram"

    def send_mailchimp_campaign(self) -> str:
        report = self.launch("Spring letter", "mailchimp", self.email_draft("mailchimp"))
        return f"{report.status}, campaign {report.external_id}"

    def mailchimp_delivers(self) -> str:
        report = self.campaigns["mailchimp"]
        outcomes = {
            email: MAILCHIMP_OUTCOMES[i % len(MAILCHIMP_OUTCOMES)]
            for i, email in enumerate(self.emails)
        }
        answer = self.emulator_call(
            "mailchimp",
            f"/_emulator/campaigns/{report.external_id}/deliver",
            json={"outcomes": outcomes},
        )
        codes = answer["webhookStatuses"]
        if any(code != 200 for code in codes):
            raise DemoFailure(f"the host answered Mailchimp's webhooks {codes}")
        return f"unsubscribe, cleaned and campaign events: {len(codes)} form posts, all 200"

    # --- results ---------------------------------------------------------------------------

    def collect(self) -> str:
        for report in self.campaigns.values():
            view = self.wait_campaign(report.id, lambda v: v.status in FINAL)
            report.status, report.error = view.status, view.error
            report.external_id = view.external_id or ""
            report.deliveries = self.delivery_counts(report.id)
            path = f"/api/v1/tenants/{TENANT}/campaigns/{report.id}/stats"
            stats = self.read(CampaignStatsOut, "GET", path, params={"refresh": "true"})
            report.stats = dict(stats.values or {})
        return ", ".join(f"{r.module} {r.status}" for r in self.campaigns.values())

    def delivery_counts(self, campaign_id: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if after:
                params["after"] = after
            path = f"/api/v1/tenants/{TENANT}/campaigns/{campaign_id}/deliveries"
            page = self.read(DeliveryPage, "GET", path, params=params)
            counts.update(item.status for item in page.items)
            after = page.next
            if not after:
                return counts


def template_html(name: str) -> str:
    return (
        f"<html><body><h1>{name}</h1><p>Hello {{{{first_name}}}},</p>"
        '<p><a href="https://acme.test/spring">See the offers</a></p></body></html>'
    )


def short(url: str) -> str:
    """A webhook URL without most of its secret token (the demo prints, not leaks)."""
    head, _, token = url.rpartition("/")
    return f"{head}/{token[:6]}…" if len(token) > 8 else url


def describe(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:300]
    if isinstance(body, dict) and "message" in body:
        problems = "; ".join(
            f"{p.get('location')}: {p.get('message')}" for p in body.get("problems") or []
        )
        return f"{body['message']}" + (f" ({problems})" if problems else "")
    return json.dumps(body)[:300]
