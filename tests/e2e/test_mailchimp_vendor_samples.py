"""Mailchimp vendor samples, as their exact bytes, against the real webhook endpoint of a
tenant with the Mailchimp module enabled (the host's HTTP app; the module talks to the local
Mailchimp emulator through the admin allow-list). Where a sample names a campaign, a real
campaign is sent first — contacts exported, prepared and created through the host's campaign
job — and the emulator hands out the sample's campaign id, so delivery statuses have a
delivery to land on. INDEX.md §2 lists the expected effects; differences are explained at
the test that shows them (and in the module's README)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import select

from emulators.mailchimp import DEFAULT_LIST_ID, MailchimpState, create_app
from emulators.runner import serve
from host.api.app import create_app as host_app
from host.contract.types import Action
from host.db.models import Contact
from host.modules.packages import from_directory
from tests.e2e.campaign_api import created_in_service
from tests.host.conftest import ADMIN_TOKEN, make_host, table_dump
from tests.modules.emulated import declaring
from tests.vendor_samples import VENDOR_SAMPLES

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "mailchimp"
SAMPLES = VENDOR_SAMPLES
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API_KEY = "0123456789abcdef0123456789abcdef-us6"
SECRET = "a-webhook-secret-of-the-tests-42"
ACTIONS = TypeAdapter(list[Action])
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PAIRS = json.loads((SAMPLES / "mailchimp_webhooks_published_pairs.json").read_text())["samples"]
VECTORS = json.loads((SAMPLES / "mailchimp_subscriber_hash_vectors.DERIVED.json").read_text())[
    "vectors"
]


def sample(kind: str) -> bytes:
    return (SAMPLES / f"mailchimp_{kind}.form").read_bytes()


class World:
    def __init__(self, client: TestClient, host: Any, state: MailchimpState, server: Any):
        self.client, self.host, self.state, self.server = client, host, state, server
        self.hooks: dict[str, str] = {}

    def enable(self, tenant: str) -> str:
        self.client.post("/api/v1/tenants", json={"id": tenant, "name": tenant}, headers=ADMIN)
        settings = {
            "api_key": API_KEY,
            "list_id": DEFAULT_LIST_ID,
            "webhook_secret": SECRET,
            "api_base_url": self.server.url,
        }
        reply = self.client.put(
            f"/api/v1/tenants/{tenant}/modules/mailchimp",
            json={"settings": settings, "enabled": True},
            headers=ADMIN,
        )
        assert reply.status_code == 200, reply.text
        self.hooks[tenant] = reply.json()["webhookUrl"]
        return self.hooks[tenant]

    def url(self, tenant: str = "acme", secret: str | None = SECRET) -> str:
        return self.hooks[tenant] + (f"?secret={secret}" if secret is not None else "")

    def post(self, body: bytes, tenant: str = "acme", secret: str | None = SECRET) -> Any:
        return self.client.post(self.url(tenant, secret), content=body, headers=FORM)

    def add_contacts(self, tenant: str, contacts: list[dict[str, Any]]) -> None:
        reply = self.client.post(f"/api/v1/tenants/{tenant}/contacts", json=contacts, headers=ADMIN)
        assert reply.status_code in (200, 201), reply.text

    def deliveries(self, tenant: str, campaign: str) -> dict[str, str]:
        reply = self.client.get(
            f"/api/v1/tenants/{tenant}/campaigns/{campaign}/deliveries", headers=ADMIN
        )
        return {d["email"]: d["status"] for d in reply.json()["items"]}

    def contact(self, contact_id: str, tenant: str = "acme") -> dict[str, Any]:
        reply = self.client.get(f"/api/v1/tenants/{tenant}/contacts/{contact_id}", headers=ADMIN)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def contacts_by_email(self, tenant: str = "acme") -> dict[str, dict[str, Any]]:
        with self.host.db.transaction() as session:
            ids = session.scalars(select(Contact.id).where(Contact.tenant_id == tenant)).all()
        return {view["email"]: view for view in (self.contact(i, tenant) for i in ids)}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    state = MailchimpState(api_key=API_KEY)
    with serve(create_app(state)) as server:
        host = make_host(tmp_path / "host.db", egress_allow=[server.netloc])
        host.registry.upload(
            declaring(from_directory(MODULE_DIR, max_script_bytes=256 * 1024), server.netloc)
        )
        try:
            with TestClient(host_app(host)) as client:
                state.webhook_client = client
                world = World(client, host, state, server)
                world.enable("acme")
                yield world
        finally:
            host.close()


def send_campaign(
    world: World, emails: list[str], *, external_id: str | None = None, tenant: str = "acme"
) -> tuple[str, str]:
    """Contacts through the API, then a campaign through the host's job; returns (CRM id,
    Mailchimp campaign id). ``external_id`` is the id the emulator gives the campaign."""
    if external_id:
        world.state.campaign_ids.append(external_id)
    world.add_contacts(tenant, [{"name": e.split("@")[0], "email": e} for e in emails])
    ids = [c["id"] for e, c in world.contacts_by_email(tenant).items() if e in emails]
    draft = {
        "module": "mailchimp",
        "name": "Spring",
        "type": "Email",
        "subject": "Spring news",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hi *|FNAME|*</p>",
        "contactIds": ids,
    }
    return created_in_service(world.client, tenant, draft, ADMIN)


def register_hook(world: World) -> None:
    """As an admin does in Mailchimp: the emulator validates the URL with a GET first."""
    reply = httpx.post(
        f"{world.server.url}/3.0/lists/{DEFAULT_LIST_ID}/webhooks",
        json={"url": world.url(), "events": {"subscribe": True, "unsubscribe": True}},
        auth=("anystring", API_KEY),
    )
    assert reply.status_code == 200, reply.text


# --- the published samples -------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_encoded_samples_decode_to_the_published_pairs(kind: str) -> None:
    """The .form files are the published pairs URL-encoded: decoding gives them back."""
    decoded = parse_qsl(sample(kind).decode(), keep_blank_values=True, strict_parsing=True)
    assert [list(pair) for pair in decoded] == PAIRS[kind]


def test_subscribe_sample_creates_the_contact_subscribed(world: World) -> None:
    """INDEX: contact api@mailchimp.com exists, subscribed, named MailChimp API."""
    reply = world.post(sample("subscribe"))
    assert reply.status_code == 200, reply.text
    created = world.contacts_by_email()["api@mailchimp.com"]
    assert (created["name"], created["status"]) == ("MailChimp API", "Subscribed")
    assert world.post(sample("subscribe")).status_code == 200  # a retry: still one contact
    assert list(world.contacts_by_email()) == ["api@mailchimp.com"]


def test_subscribe_sample_resubscribes_an_unsubscribed_contact(world: World) -> None:
    """An unsubscribed contact who subscribes again in Mailchimp is Subscribed again (only
    the unsubscription is lifted; a category the contact left stays left)."""
    world.add_contacts("acme", [{"id": "c1", "name": "Old Name", "email": "API@mailchimp.com"}])
    unsub = {"type": "Unsubscribe", "email": "api@mailchimp.com"}
    applied = world.host.actions.apply(
        "acme",
        "mailchimp",
        _actions({**unsub, "externalId": {"all": True}}, {**unsub, "externalId": "news"}),
    )
    assert len(applied.applied) == 2
    assert world.post(sample("subscribe")).status_code == 200
    view = world.contact("c1")
    assert (view["status"], view["name"], view["email"]) == (
        "Subscribed",
        "MailChimp API",
        "API@mailchimp.com",
    )
    assert [c["category"] for c in view["unsubscribedCategories"]] == ["news"]


def test_unsubscribe_sample_unsubscribes_from_all_in_its_campaign(world: World) -> None:
    """INDEX: Unsubscribe api+unsub@mailchimp.com (the + arrives as %2B) from all, attributed
    to campaign cb398d21d2."""
    campaign, external = send_campaign(
        world, ["api+unsub@mailchimp.com", "other@example.com"], external_id="cb398d21d2"
    )
    assert external == "cb398d21d2"
    reply = world.post(sample("unsubscribe"))
    assert reply.status_code == 200, reply.text
    assert world.contacts_by_email()["api+unsub@mailchimp.com"]["status"] == "Unsubscribed"
    assert world.deliveries("acme", campaign) == {
        "api+unsub@mailchimp.com": "Unsubscribed",
        "other@example.com": "Sent",
    }


def test_unsubscribe_for_abuse_is_a_complaint(world: World) -> None:
    """The documented reason=abuse variant (a spam complaint): unsubscribed from all, the
    delivery Complained, and the host's suppression policy makes the contact Complained."""
    campaign, _ = send_campaign(world, ["api+unsub@mailchimp.com"], external_id="cb398d21d2")
    body = sample("unsubscribe").replace(b"reason%5D=manual", b"reason%5D=abuse")
    assert world.post(body).status_code == 200
    assert world.deliveries("acme", campaign) == {"api+unsub@mailchimp.com": "Complained"}
    assert world.contacts_by_email()["api+unsub@mailchimp.com"]["status"] == "Complained"


def test_cleaned_sample_bounces_its_delivery(world: World) -> None:
    """INDEX: delivery Bounced (hard) for campaign 4fjk2ma9xd; the host's suppression policy
    flags the contact Bounced, and Mailchimp's subscribe event for the address lifts it."""
    campaign, _ = send_campaign(world, ["api+cleaned@mailchimp.com"], external_id="4fjk2ma9xd")
    assert world.post(sample("cleaned")).status_code == 200
    assert world.deliveries("acme", campaign) == {"api+cleaned@mailchimp.com": "Bounced"}
    assert world.contacts_by_email()["api+cleaned@mailchimp.com"]["status"] == "Bounced"
    subscribe = sample("subscribe").replace(
        b"api%40mailchimp.com", b"api%2Bcleaned%40mailchimp.com"
    )
    assert subscribe != sample("subscribe")
    assert world.post(subscribe).status_code == 200
    assert world.contacts_by_email()["api+cleaned@mailchimp.com"]["status"] == "Subscribed"


def test_subscribe_keeps_a_bounce_when_the_policy_says_so(world: World) -> None:
    reply = world.client.put(
        "/api/v1/tenants/acme/suppression-policy",
        json={"providerSubscribeLifts": False},
        headers=ADMIN,
    )
    assert reply.status_code == 200, reply.text
    send_campaign(world, ["api+cleaned@mailchimp.com"], external_id="4fjk2ma9xd")
    assert world.post(sample("cleaned")).status_code == 200
    subscribe = sample("subscribe").replace(
        b"api%40mailchimp.com", b"api%2Bcleaned%40mailchimp.com"
    )
    assert world.post(subscribe).status_code == 200
    assert world.contacts_by_email()["api+cleaned@mailchimp.com"]["status"] == "Bounced"


def test_profile_sample_updates_the_name_only(world: World) -> None:
    """INDEX: name fields updated; no status change (an unsubscribed contact stays so)."""
    world.add_contacts("acme", [{"id": "c1", "name": "Someone", "email": "api@mailchimp.com"}])
    world.host.actions.apply(
        "acme",
        "mailchimp",
        _actions(
            {"type": "Unsubscribe", "email": "api@mailchimp.com", "externalId": {"all": True}}
        ),
    )
    assert world.post(sample("profile")).status_code == 200
    view = world.contact("c1")
    assert (view["name"], view["status"]) == ("MailChimp API", "Unsubscribed")


def test_upemail_sample_moves_the_contact(world: World) -> None:
    """INDEX: the contact's email changes old → new, no duplicate contact."""
    world.add_contacts("acme", [{"id": "c1", "name": "Api", "email": "api+old@mailchimp.com"}])
    assert world.post(sample("upemail")).status_code == 200
    assert world.contact("c1")["email"] == "api+new@mailchimp.com"
    assert list(world.contacts_by_email()) == ["api+new@mailchimp.com"]
    assert world.post(sample("upemail")).status_code == 200  # a retry changes nothing
    assert list(world.contacts_by_email()) == ["api+new@mailchimp.com"]


def test_campaign_sample_marks_the_campaign_sent(world: World) -> None:
    """INDEX: campaign 5aa2102003 → Sent (the empty data[reason] is kept, not an error)."""
    campaign, _ = send_campaign(world, ["ann@example.com"], external_id="5aa2102003")
    assert world.post(sample("campaign")).status_code == 200
    view = world.client.get(f"/api/v1/tenants/acme/campaigns/{campaign}", headers=ADMIN).json()
    assert (view["status"], view["error"]) == ("Sent", None)


@pytest.mark.parametrize("secret", [None, "", "a-webhook-secret-of-the-tests-43", SECRET + "x"])
def test_a_sample_without_the_right_secret_is_refused(world: World, secret: str | None) -> None:
    """Mailchimp signs nothing: the secret in the URL is the proof. Without it 401, wrong 403,
    nothing stored beyond the receipt and the invocation; the host keeps serving."""
    world.add_contacts("acme", [{"id": "c1", "name": "Api", "email": "api+unsub@mailchimp.com"}])
    before = table_dump(world.host)
    reply = world.post(sample("unsubscribe"), secret=secret)
    assert reply.status_code == (401 if not secret else 403)
    assert SECRET not in reply.text
    after = table_dump(world.host)
    kept = (
        "webhook_receipts",
        "webhook_requests",
        "invocations",
    )  # a refused request is kept for replay
    assert {k: v for k, v in after.items() if k not in kept} == {
        k: v for k, v in before.items() if k not in kept
    }
    assert world.contact("c1")["status"] == "Subscribed"
    assert world.client.get("/healthz").status_code == 200


def test_validation_get_is_answered_200_only_with_the_secret(world: World) -> None:
    assert world.client.get(world.url()).status_code == 200
    assert world.client.get(world.url(secret=None)).status_code == 401
    assert world.client.put(world.url(), content=b"x").status_code == 405
    assert world.post(b"fired_at=now").status_code == 400  # no type: not a Mailchimp webhook


def test_a_webhook_of_another_audience_changes_nothing(world: World) -> None:
    body = sample("subscribe").replace(b"a6b5da1054", b"ffff000000")
    assert world.post(body).status_code == 200
    assert world.contacts_by_email() == {}


# --- the API, through the emulator ------------------------------------------------------------


def test_campaign_round_trip_through_the_emulator(world: World) -> None:
    """Export (members by subscriber hash) → prepare (a static segment) → create + send reach
    the emulator; the webhook URL passes Mailchimp's GET validation; the sending's webhooks
    (unsubscribe, cleaned, campaign) move deliveries, the contact and the campaign; stats
    come from the report."""
    emails = ["API@MailChimp.com", "alex@example.com", "Urist.McVankab@freddiesjokes.com"]
    campaign, external = send_campaign(world, emails)
    members = world.state.members()
    assert {VECTORS[e] for e in emails} <= set(members)  # the DERIVED hash vectors
    remote = world.state.campaigns[external]
    assert remote["status"] == "sending" and remote["recipients"]["recipient_count"] == 3
    assert remote["settings"]["reply_to"] == "news@acme.test"
    register_hook(world)
    codes = world.state.deliver(
        external, {"alex@example.com": "unsub", "Urist.McVankab@freddiesjokes.com": "hard"}
    )
    assert codes == [200, 200, 200]
    assert world.deliveries("acme", campaign) == {
        "api@mailchimp.com": "Sent",  # deliveries are keyed by the lower-cased address
        "alex@example.com": "Unsubscribed",
        "urist.mcvankab@freddiesjokes.com": "Bounced",
    }
    assert world.contacts_by_email()["alex@example.com"]["status"] == "Unsubscribed"
    view = world.client.get(f"/api/v1/tenants/acme/campaigns/{campaign}", headers=ADMIN).json()
    assert view["status"] == "Sent"
    stats = world.client.get(
        f"/api/v1/tenants/acme/campaigns/{campaign}/stats?refresh=true", headers=ADMIN
    ).json()["values"]
    assert (stats["sent"], stats["bounced"], stats["unsubscribed"]) == (3, 1, 1)


def test_a_scheduled_campaign_goes_on_a_quarter_hour(world: World) -> None:
    world.add_contacts("acme", [{"id": "c1", "name": "Ann", "email": "ann@example.com"}])
    draft = {
        "module": "mailchimp",
        "name": "Later",
        "type": "Email",
        "subject": "Later news",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Later</p>",
        "contactIds": ["c1"],
        "scheduledAt": "2031-04-01T09:07:00+00:00",
    }
    reply = world.client.post("/api/v1/tenants/acme/campaigns", json=draft, headers=ADMIN)
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 60
    view: dict[str, Any] = {}
    while time.monotonic() < deadline and not view.get("externalId"):
        view = world.client.get(
            f"/api/v1/tenants/acme/campaigns/{reply.json()['id']}", headers=ADMIN
        ).json()
        time.sleep(0.1)
    assert view["status"] == "Scheduled", view
    remote = world.state.campaigns[view["externalId"]]
    assert (remote["status"], remote["send_time"]) == ("schedule", "2031-04-01T09:15:00+00:00")


def test_api_samples_match_the_emulator_replies(world: World) -> None:
    """The emulator answers in the published (reconstructed) shapes the module parses."""
    auth = ("anystring", API_KEY)
    base = f"{world.server.url}/3.0"

    def shape(name: str) -> set[str]:
        return set(json.loads((SAMPLES / f"mailchimp_api_{name}.RECONSTRUCTED.json").read_text()))

    world.state.add_template("Spring newsletter", "<p>Spring</p>")
    templates = httpx.get(f"{base}/templates", params={"count": 10}, auth=auth).json()
    sample_templates = json.loads(
        (SAMPLES / "mailchimp_api_templates_get_200.RECONSTRUCTED.json").read_text()
    )
    assert set(templates) == set(sample_templates)
    assert set(templates["templates"][0]) == set(sample_templates["templates"][0])
    member_body = json.loads(
        (SAMPLES / "mailchimp_api_member_put_request.RECONSTRUCTED.json").read_text()
    )
    member = httpx.put(
        f"{base}/lists/{DEFAULT_LIST_ID}/members/{VECTORS['api@mailchimp.com']}",
        json=member_body,
        auth=auth,
    ).json()
    assert set(member) == shape("member_put_200")
    assert member["id"] == VECTORS["api@mailchimp.com"]
    world.state.upsert_member(
        DEFAULT_LIST_ID,
        VECTORS["alex@example.com"],
        {"email_address": "alex@example.com", "status_if_new": "subscribed"},
    )
    campaign_body = json.loads(
        (SAMPLES / "mailchimp_api_campaign_post_request.RECONSTRUCTED.json").read_text()
    )
    created = httpx.post(f"{base}/campaigns", json=campaign_body, auth=auth).json()
    assert set(created) == shape("campaign_post_200")
    assert created["status"] == "save"
    content = json.loads(
        (SAMPLES / "mailchimp_api_campaign_content_put_request.RECONSTRUCTED.json").read_text()
    )
    assert content["template"]["id"] == templates["templates"][0]["id"]  # the same template
    put = httpx.put(f"{base}/campaigns/{created['id']}/content", json=content, auth=auth)
    assert put.status_code == 200 and put.json()["html"] == "<p>Spring</p>"
    schedule = json.loads(
        (SAMPLES / "mailchimp_api_campaign_schedule_request.RECONSTRUCTED.json").read_text()
    )
    scheduled = httpx.post(
        f"{base}/campaigns/{created['id']}/actions/schedule", json=schedule, auth=auth
    )
    assert scheduled.status_code == 204, scheduled.text
    world.state.deliver(created["id"])  # no webhook registered: nothing is posted
    report = httpx.get(f"{base}/reports/{created['id']}", auth=auth).json()
    assert set(report) == shape("report_get_200")
    missing = httpx.get(f"{base}/reports/nope", auth=auth)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert set(missing.json()) == shape("error_404")
    wrong_hash = httpx.put(
        f"{base}/lists/{DEFAULT_LIST_ID}/members/{VECTORS['alex@example.com']}",
        json=member_body,
        auth=auth,
    )
    assert wrong_hash.status_code == 400
    assert httpx.get(f"{base}/templates", auth=("anystring", "wrong-us6")).status_code == 401


def _actions(*actions: dict[str, Any]) -> Any:
    """Actions applied as another webhook would have (to set up a contact's state)."""
    return ACTIONS.validate_python(list(actions))


@pytest.mark.parametrize("count", [3, 45])
def test_an_export_never_resubscribes_a_member(world: World, count: int) -> None:
    """Up to 40 contacts go one PUT by subscriber hash each, more through batch subscribe:
    either way new members are added and a member who unsubscribed in Mailchimp stays
    unsubscribed (and is not mailed), whatever the CRM thinks."""
    gone = "gone@example.com"
    new = {"email_address": gone, "status_if_new": "unsubscribed"}
    world.state.upsert_member(DEFAULT_LIST_ID, _hash(gone), new)
    emails = [gone] + [f"p{i:02d}@example.com" for i in range(count - 1)]
    _, external = send_campaign(world, emails)
    members = world.state.members()
    assert {_hash(e) for e in emails} <= set(members)
    assert members[_hash(gone)]["status"] == "unsubscribed"
    assert world.state.campaigns[external]["recipients"]["recipient_count"] == count - 1


def _hash(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()
