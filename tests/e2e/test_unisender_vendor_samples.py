"""Unisender vendor samples, as their exact bytes, against the real webhook endpoint of a
tenant with the Unisender module enabled (the host's HTTP app; the module talks to the local
Unisender emulator through the admin allow-list). A real campaign is sent first — contacts
exported, prepared and created through the host's campaign job — so delivery statuses have
deliveries to land on. INDEX.md §4 lists the expected effects; differences are explained at
the test that shows them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from emulators.runner import serve
from emulators.unisender import UnisenderState, create_app
from host.api.app import create_app as host_app
from host.modules.packages import from_directory
from tests.e2e.campaign_api import created_in_service
from tests.host.conftest import ADMIN_TOKEN, make_host, table_dump
from tests.modules.emulated import declaring
from tests.vendor_samples import VENDOR_SAMPLES

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "unisender"
SAMPLES = VENDOR_SAMPLES
VECTOR = json.loads((SAMPLES / "unisender_go_signed_vector.json").read_text())
GO_BODY = (SAMPLES / "unisender_go_webhook_signed.raw").read_bytes()
CAPTURED = (SAMPLES / "unisender_webhook_email_status_captured.ANONYMIZED.json").read_bytes()
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The account key is the one the Go vector is signed with, so the real signed sample verifies.
API_KEY = VECTOR["api_key"]


class World:
    def __init__(self, client: TestClient, host: Any, state: UnisenderState, server: Any):
        self.client, self.host, self.state, self.server = client, host, state, server
        self.hooks: dict[str, str] = {}

    def enable(self, tenant: str, api_key: str) -> str:
        self.client.post("/api/v1/tenants", json={"id": tenant, "name": tenant}, headers=ADMIN)
        settings = {"api_key": api_key, "api_base_url": f"{self.server.url}/ru/api", "list_id": 1}
        reply = self.client.put(
            f"/api/v1/tenants/{tenant}/modules/unisender",
            json={"settings": settings, "enabled": True},
            headers=ADMIN,
        )
        assert reply.status_code == 200, reply.text
        self.hooks[tenant] = reply.json()["webhookUrl"]
        return self.hooks[tenant]

    def post(self, tenant: str, body: bytes) -> Any:
        return self.client.post(
            self.hooks[tenant], content=body, headers={"Content-Type": "application/json"}
        )

    def deliveries(self, tenant: str, campaign: str) -> dict[str, str]:
        reply = self.client.get(
            f"/api/v1/tenants/{tenant}/campaigns/{campaign}/deliveries", headers=ADMIN
        )
        return {d["email"]: d["status"] for d in reply.json()["items"]}

    def contact(self, tenant: str, contact_id: str) -> dict[str, Any]:
        return self.client.get(
            f"/api/v1/tenants/{tenant}/contacts/{contact_id}", headers=ADMIN
        ).json()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    state = UnisenderState(api_key=API_KEY)
    with serve(create_app(state)) as server:
        host = make_host(tmp_path / "host.db", egress_allow=[server.netloc])
        host.registry.upload(
            declaring(from_directory(MODULE_DIR, max_script_bytes=256 * 1024), server.netloc)
        )
        try:
            with TestClient(host_app(host)) as client:
                state.webhook_client = client
                world = World(client, host, state, server)
                world.enable("acme", API_KEY)
                yield world
        finally:
            host.close()


def send_campaign(world: World, tenant: str, emails: list[str]) -> tuple[str, str]:
    """Contacts through the API, then a campaign through the host's job; returns (CRM id,
    Unisender campaign id)."""
    contacts = [{"id": f"c{i}", "name": e.split("@")[0], "email": e} for i, e in enumerate(emails)]
    assert world.client.post(
        f"/api/v1/tenants/{tenant}/contacts", json=contacts, headers=ADMIN
    ).status_code in (200, 201)
    draft = {
        "module": "unisender",
        "name": "Spring",
        "type": "Email",
        "subject": "Spring news",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hi</p>",
        "contactIds": "all",
    }
    return created_in_service(world.client, tenant, draft, ADMIN)


def test_campaign_round_trip_through_the_emulator(world: World) -> None:
    """Export → prepare → create reach the emulator; its email_status webhooks (correct md5
    auth) move the deliveries and the campaign, and stats come from getCampaignCommonStats."""
    campaign, external = send_campaign(world, "acme", ["a@example.com", "b@example.com"])
    remote = world.state.campaigns[int(external)]
    assert sorted(remote["recipients"]) == ["a@example.com", "b@example.com"]
    world.state.hook = {"url": world.hooks["acme"]}
    reply = world.state.deliver(int(external), {"b@example.com": "ok_unsubscribed"})
    assert reply.status_code == 200
    assert world.deliveries("acme", campaign) == {
        "a@example.com": "Delivered",
        "b@example.com": "Unsubscribed",
    }
    assert world.contact("acme", "c1")["status"] == "Unsubscribed"
    view = world.client.get(f"/api/v1/tenants/acme/campaigns/{campaign}", headers=ADMIN).json()
    assert view["status"] == "Sent"
    stats = world.client.get(
        f"/api/v1/tenants/acme/campaigns/{campaign}/stats?refresh=true", headers=ADMIN
    ).json()["values"]
    assert (stats["total"], stats["delivered"], stats["unsubscribed"]) == (2, 2, 1)


def test_captured_classic_event(world: World) -> None:
    """INDEX: Delivered for a.user@example.org — but its `auth` was made with an unknown key,
    so the exact bytes are REFUSED (401, nothing applied): accepting them would mean not
    checking auth at all. The same event signed with the tenant's key is then Delivered
    (the real capture has no campaign_id: the module finds the campaign the address was
    prepared for in the host's attribution map)."""
    campaign, _ = send_campaign(world, "acme", ["a.user@example.org"])
    before = table_dump(world.host)
    reply = world.post("acme", CAPTURED)
    assert reply.status_code == 401
    after = table_dump(world.host)
    kept = ("webhook_receipts", "webhook_requests", "invocations")  # kept for replay
    assert {k: v for k, v in after.items() if k not in kept} == {
        k: v for k, v in before.items() if k not in kept
    }
    assert world.deliveries("acme", campaign) == {"a.user@example.org": "Sent"}

    auth = json.loads(CAPTURED)["auth"]
    with_key = CAPTURED.replace(auth.encode(), API_KEY.encode())
    resigned = with_key.replace(API_KEY.encode(), hashlib.md5(with_key).hexdigest().encode())
    assert world.post("acme", resigned).status_code == 200
    assert world.deliveries("acme", campaign) == {"a.user@example.org": "Delivered"}


def campaign_to(world: World, contact_ids: list[str]) -> tuple[str, str]:
    draft = {
        "module": "unisender",
        "name": "Overlap",
        "type": "Email",
        "subject": "S",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hi</p>",
        "contactIds": contact_ids,
    }
    reply = world.client.post("/api/v1/tenants/acme/campaigns", json=draft, headers=ADMIN)
    assert reply.status_code == 202, reply.text
    path = f"/api/v1/tenants/acme/campaigns/{reply.json()['id']}"
    deadline = time.monotonic() + 60
    view = world.client.get(path, headers=ADMIN).json()
    while not view["externalId"] and view["status"] != "Failed" and time.monotonic() < deadline:
        time.sleep(0.1)
        view = world.client.get(path, headers=ADMIN).json()
    assert view["status"] == "Sending", view
    return view["id"], view["externalId"]


def test_events_without_a_campaign_id_reach_the_older_of_two_overlapping_campaigns(
    world: World,
) -> None:
    """Two campaigns overlap; classic events that carry no campaign id go to the campaign
    their address was prepared for — before, they went to the module's latest campaign and
    the older one's Delivered was lost as unknown_recipient."""
    people = [("old", "old@example.com"), ("new", "new@example.com"), ("both", "both@x.test")]
    contacts = [{"id": i, "name": i, "email": e} for i, e in people]
    assert world.client.post(
        "/api/v1/tenants/acme/contacts", json=contacts, headers=ADMIN
    ).is_success
    older, older_external = campaign_to(world, ["old", "both"])
    newer, _ = campaign_to(world, ["new", "both"])
    world.state.hook = {"url": world.hooks["acme"]}
    events = [
        world.state.email_status("old@example.com", "ok_delivered", None),
        world.state.email_status("new@example.com", "ok_read", None),
        world.state.email_status("both@x.test", "ok_delivered", int(older_external)),
    ]
    assert all("campaign_id" not in e["event_data"] for e in events[:2])
    reply = world.state.send_events(events)
    assert reply.status_code == 200, reply.text
    assert world.deliveries("acme", older) == {
        "old@example.com": "Delivered",
        "both@x.test": "Delivered",  # the echoed campaign id wins over the address map
    }
    assert world.deliveries("acme", newer) == {"new@example.com": "Opened", "both@x.test": "Sent"}
    # an address no campaign was prepared for is attributed to none (no guess): no change
    before = (world.deliveries("acme", older), world.deliveries("acme", newer))
    stray = world.state.send_events([world.state.email_status("z@x.test", "ok_delivered", None)])
    assert stray.status_code == 200
    assert (world.deliveries("acme", older), world.deliveries("acme", newer)) == before


def test_go_signed_sample_valid(world: World) -> None:
    """INDEX: with the published key → valid → Clicked (no campaign id in the event: the
    campaign the address was prepared for, from the host's attribution map)."""
    campaign, _ = send_campaign(world, "acme", ["unisendergo@anymail.dev"])
    reply = world.post("acme", GO_BODY)
    assert reply.status_code == 200 and reply.text == "OK"
    assert world.deliveries("acme", campaign) == {"unisendergo@anymail.dev": "Clicked"}


@pytest.mark.parametrize("case", [c["name"] for c in VECTOR["cases"] if not c["expect"]])
def test_go_signed_sample_invalid_cases(world: World, case: str) -> None:
    """Every negative case of the vector: 401, no delivery moved, no storage written."""
    spec = next(c for c in VECTOR["cases"] if c["name"] == case)
    campaign, _ = send_campaign(world, "acme", ["unisendergo@anymail.dev"])
    tenant, body = "acme", GO_BODY
    if spec["api_key"] != API_KEY:
        tenant = "other"
        world.enable(tenant, spec["api_key"])
    if case.startswith("reserialized"):
        body = json.dumps(json.loads(GO_BODY)).encode()
    storage_before = world.host.module_storage.load(tenant, "unisender")
    reply = world.post(tenant, body)
    assert reply.status_code == 401
    assert world.deliveries("acme", campaign) == {"unisendergo@anymail.dev": "Sent"}
    assert world.host.module_storage.load(tenant, "unisender") == storage_before


def test_api_samples_match_the_emulator_replies(world: World) -> None:
    """The emulator answers in the published (reconstructed) shapes the module parses."""
    state = world.state
    for name, method, _params in (
        ("unisender_api_getTemplates_response.RECONSTRUCTED.json", "getTemplates", {}),
        (
            "unisender_api_getCampaignCommonStats_response.RECONSTRUCTED.json",
            "getCampaignCommonStats",
            {},
        ),
    ):
        sample = json.loads((SAMPLES / name).read_text())
        if method == "getTemplates":
            state.add_template("Spring newsletter", "Spring news", "<p>Hello</p>")
            got = state.call(method, {"api_key": API_KEY})
            assert set(got[0]) == set(sample["result"][0])
        else:
            _, external = send_campaign(world, "acme", ["x@example.com"])
            got = state.call(method, {"api_key": API_KEY, "campaign_id": external})
            assert set(got) == set(sample["result"])
    error = json.loads(
        (SAMPLES / "unisender_api_error_invalid_api_key.RECONSTRUCTED.json").read_text()
    )
    wrong = httpx.post(
        f"{world.server.url}/ru/api/getLists", data={"api_key": "nope", "format": "json"}
    )
    assert wrong.json() == error
