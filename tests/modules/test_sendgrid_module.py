"""The SendGrid example module against the SendGrid emulator, through a real host.

Two real HTTP servers on 127.0.0.1 (uvicorn threads): the emulator, and the host's app with
the module uploaded from ``module_manifests/sendgrid`` and enabled for a tenant whose
``api_base_url`` points at the emulator (opened by the platform admin's egress allow-list).
Every flow goes through the host's API: template import/preview/publish, a campaign send
(export → prepare → create + schedule), the emulator delivering it and POSTing its signed
Event Webhook to the tenant's webhook URL, delivery statuses, unsubscribes and stats.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from emulators.runner import RunningServer, serve
from emulators.sendgrid import SendGridState, create_app
from host.api.app import create_app as create_host_app
from host.db.models import WebhookReceipt
from host.modules.packages import from_directory
from host.platform import Host
from tests.host.conftest import ADMIN_TOKEN, make_host
from tests.modules.emulated import declaring

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
CRM_HOST = Path(__import__("sys").executable).with_name("crm-host")
API_KEY = "SG.emulated-key-for-tests-0123"
SENDER_ID = 4242
GROUP_ID = 77


@dataclass
class SendGridWorld:
    """An emulated SendGrid account and a served host with the module enabled for ``acme``."""

    state: SendGridState
    emulator: RunningServer
    host: Host
    server: RunningServer
    client: httpx.Client

    @property
    def hook_url(self) -> str:
        """The tenant's webhook URL, on the served host."""
        url = self.host.tenants.enablement("acme", "sendgrid").webhook_url
        return self.server.url + urlsplit(url).path

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"api_key": API_KEY, "api_base_url": self.emulator.url, **extra}

    def configure(self, **extra: Any) -> None:
        self.host.tenants.configure("acme", "sendgrid", settings=self.settings(**extra))


@contextmanager
def sendgrid_world(tmp_path: Path, **settings: Any) -> Iterator[SendGridWorld]:
    state = SendGridState(api_keys={API_KEY})
    with serve(create_app(state)) as emulator:
        host = make_host(tmp_path / "host.db", egress_allow=[emulator.netloc])
        try:
            package = from_directory(MODULE_DIR, max_script_bytes=512 * 1024)
            host.registry.upload(declaring(package, emulator.netloc))
            host.tenants.create("acme", "Acme")
            with serve(create_host_app(host)) as server:
                headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                    world = SendGridWorld(state, emulator, host, server, client)
                    world.configure(**settings)
                    yield world
        finally:
            host.close()


@pytest.fixture
def world(db_path: Path) -> Iterator[SendGridWorld]:
    with sendgrid_world(
        db_path.parent, sender_id=SENDER_ID, suppression_group_id=GROUP_ID
    ) as instance:
        yield instance


def receipts(host: Host) -> list[tuple[int, int, Any, Any]]:
    """The webhook receipts: (status, applied, skipped, error)."""
    with host.db.transaction() as session:
        rows = session.scalars(select(WebhookReceipt).order_by(WebhookReceipt.id))
        return [(r.status_code, r.applied, r.skipped, r.error) for r in rows]


def wait_for(client: httpx.Client, path: str, done: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def make_template(world: SendGridWorld, name: str, html: str) -> str:
    """A dynamic template with one active version, made through the emulator's API."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=world.emulator.url) as c:
        tid = c.post("/v3/templates", json={"name": name, "generation": "dynamic"}, headers=headers)
        template_id = tid.json()["id"]
        c.post(
            f"/v3/templates/{template_id}/versions",
            json={"name": "v1", "subject": f"{name} subject", "html_content": html, "active": 1},
            headers=headers,
        )
    return str(template_id)


def test_the_module_validates_and_passes_its_own_cases() -> None:
    validate = subprocess.run(
        [str(CRM_HOST), "module", "validate", str(MODULE_DIR)], capture_output=True, text=True
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "0 errors, 0 warnings" in validate.stdout
    cases = subprocess.run(
        [str(CRM_HOST), "module", "test", str(MODULE_DIR)], capture_output=True, text=True
    )
    assert cases.returncode == 0, cases.stdout + cases.stderr
    assert " failed" not in cases.stdout and "passed" in cases.stdout


def test_templates_import_in_token_pages_preview_and_publish(world: SendGridWorld) -> None:
    ids = [make_template(world, f"T{i}", f"<p>body {i}</p>") for i in range(5)]
    legacy = world.state.templates[ids[4]]
    legacy["generation"] = "legacy"  # not imported: only dynamic templates are
    world.state.requests.clear()

    report = world.client.post(
        "/api/v1/tenants/acme/modules/sendgrid/templates/import", params={"pageSize": 2}
    )
    assert report.status_code == 200, report.text
    assert report.json()["imported"] == 4 and report.json()["pages"] == 3
    pages = [r for r in world.state.requests if r.startswith("GET /v3/templates")]
    # page 2 continued with the stored page_token; SendGrid said page 2 was the last, so the
    # host's third call (offset 4) was answered from storage without a request
    assert len(pages) == 2, pages
    assert "page_token" not in pages[0] and all("page_token=" in p for p in pages[1:])

    listed = world.client.get("/api/v1/tenants/acme/templates").json()
    assert sorted(t["externalId"] for t in listed) == sorted(ids[:4])
    first = next(t for t in listed if t["externalId"] == ids[0])
    assert first["name"] == "T0" and first["subject"] == "T0 subject"
    preview = world.client.get(f"/api/v1/tenants/acme/templates/{first['id']}/html")
    assert preview.json()["html"] == "<p>body 0</p>"

    local = world.client.post(
        "/api/v1/tenants/acme/templates",
        json={"module": "sendgrid", "name": "Spring", "html": "<p>Spring</p>"},
    ).json()
    published = world.client.post(f"/api/v1/tenants/acme/templates/{local['id']}/publish")
    assert published.status_code == 200, published.text
    external = published.json()["externalId"]
    template = world.state.templates[external]
    assert external.startswith("d-") and template["generation"] == "dynamic"
    assert [(v["active"], v["html_content"]) for v in template["versions"]] == [
        (1, "<p>Spring</p>")
    ]
    again = world.client.post(
        f"/api/v1/tenants/acme/templates/{local['id']}/publish", json={"html": "<p>v2</p>"}
    )
    assert again.json()["externalId"] == external
    assert [v["html_content"] for v in template["versions"]] == ["<p>v2</p>"]  # edited in place


def test_a_campaign_is_sent_and_its_webhook_and_stats_reach_the_crm(world: SendGridWorld) -> None:
    people = [
        {"name": "Ann Lee", "email": "ann@example.test"},
        {"name": "Bob", "email": "bob@example.test"},
        {"name": "Cy Young Jr", "email": "cy@example.test"},
        {"name": "Di", "email": "di@example.test"},
        {"name": "Ed", "email": "ed@example.test"},
    ]
    ids = world.client.post("/api/v1/tenants/acme/contacts", json=people).json()["ids"]
    world.state.configure_webhook(
        world.hook_url, signed=False
    )  # signing: test_sendgrid_vendor_samples
    created = world.client.post(
        "/api/v1/tenants/acme/campaigns",
        json={
            "module": "sendgrid",
            "name": "Spring",
            "type": "Email",
            "subject": "Spring news",
            "senderName": "Acme",
            "senderEmail": "news@acme.test",
            "contactIds": "all",
            "html": "<html><body><p>Hello</p></body></html>",
            "categoryExternalId": "10",
        },
    )
    assert created.status_code == 202, created.text
    path = f"/api/v1/tenants/acme/campaigns/{created.json()['id']}"
    campaign = wait_for(world.client, path, lambda c: c["externalId"] or c["status"] == "Failed")
    assert campaign["status"] == "Sending", campaign
    single = world.state.single_sends[campaign["externalId"]]
    assert single["status"] == "scheduled"
    config = single["email_config"]
    assert config["sender_id"] == SENDER_ID and config["suppression_group_id"] == 10
    assert "{{{unsubscribe}}}" in config["html_content"] and config["subject"] == "Spring news"
    (list_id,) = single["send_to"]["list_ids"]
    assert world.state.list_contact_count(list_id) == 5
    cy = world.state.contacts["cy@example.test"]
    assert (cy["first_name"], cy["last_name"]) == ("Cy", "Young Jr")

    outcomes = {
        "ann@example.test": "click",
        "bob@example.test": "bounce",
        "cy@example.test": "unsubscribe",
        "di@example.test": "group_unsubscribe",
        "ed@example.test": "blocked",
    }
    events = world.state.deliver(campaign["externalId"], outcomes)
    assert [p["status"] for p in world.state.posts] == [200], receipts(world.host)
    assert len(events) == 4 + 2 + 5 + 5 + 2

    items = world.client.get(f"{path}/deliveries").json()["items"]
    by_contact = {i["contactId"]: i["status"] for i in items}
    assert [by_contact[i] for i in ids] == [
        "Clicked",
        "Bounced",
        "Unsubscribed",
        "Unsubscribed",
        "SoftBounced",
    ]
    cy_contact = world.client.get(f"/api/v1/tenants/acme/contacts/{ids[2]}").json()
    di_contact = world.client.get(f"/api/v1/tenants/acme/contacts/{ids[3]}").json()
    assert cy_contact["status"] == "Unsubscribed"
    assert di_contact["status"] == "Subscribed"
    assert [c["category"] for c in di_contact["unsubscribedCategories"]] == ["10"]

    stats = world.client.get(f"{path}/stats", params={"refresh": "true"}).json()
    assert stats["values"] == {
        "total": 5,
        "sent": 5,
        "delivered": 3,
        "opened": 3,
        "clicked": 3,
        "bounced": 2,
        "unsubscribed": 2,
        "complained": 0,
        "failed": 0,
    }


def test_a_bad_api_key_fails_the_import_with_sendgrids_message(world: SendGridWorld) -> None:
    world.state.api_keys.clear()
    answer = world.client.post("/api/v1/tenants/acme/modules/sendgrid/templates/import")
    assert answer.status_code == 502
    assert "HTTP 401: The provided authorization grant is invalid" in answer.text


def test_a_campaign_without_a_sender_fails_with_the_reason(tmp_path: Path) -> None:
    with sendgrid_world(tmp_path) as world:
        world.client.post(
            "/api/v1/tenants/acme/contacts", json=[{"name": "A", "email": "a@x.test"}]
        )
        created = world.client.post(
            "/api/v1/tenants/acme/campaigns",
            json={
                "module": "sendgrid",
                "name": "S",
                "type": "Email",
                "subject": "S",
                "senderName": "A",
                "senderEmail": "a@acme.test",
                "contactIds": "all",
                "html": "<p>x</p>",
            },
        ).json()
        path = f"/api/v1/tenants/acme/campaigns/{created['id']}"
        campaign = wait_for(world.client, path, lambda c: c["status"] == "Failed")
        assert campaign["status"] == "Failed" and campaign["externalId"] is None
        assert "sender_id" in campaign["error"]
        assert world.state.single_sends == {}
