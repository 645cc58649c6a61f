"""A marketer's campaign in a real browser, against a real ``crm-host serve`` and the
SendGrid emulator: contacts imported, a bad *New campaign* form refused at its field with
nothing stored, then a campaign through SendGrid (the *Email service* field) whose progress
the page shows live until it is Sent — the emulator's Event Webhook, posted to the tenant's
webhook URL, moves it there — with no reload; then its stats chart and its deliveries
(status filter, the contact's link back). A marketer of another tenant gets 403 by URL,
and a cancel posted without its CSRF token is refused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.runner import RunningServer, serve
from emulators.sendgrid import SendGridState, create_app
from tests.console.conftest import Console, label
from tests.e2e.server import RunningHost, free_port, running_host

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
API_KEY = "SG.console-journey-key-0123456789"
ANN, BOB = "ann@example.com", "bob@example.com"


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[SendGridState, RunningServer]]:
    state = SendGridState(api_keys={API_KEY})
    with serve(create_app(state)) as server:
        yield state, server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, emulator: tuple[SendGridState, RunningServer]
) -> Iterator[RunningHost]:
    """This module's host may reach the emulator (``CRM_HOST_EGRESS_ALLOW``) and runs
    campaign jobs promptly."""
    workdir = tmp_path_factory.mktemp("console-campaigns")
    with running_host(
        workdir,
        port=free_port(),
        CRM_HOST_SANDBOX_WORKERS="1",
        CRM_HOST_EGRESS_ALLOW=emulator[1].netloc,
        CRM_HOST_CAMPAIGN_POLL_SECONDS="0.5",
    ) as host:
        yield host


@pytest.fixture(scope="module")
def tenant(served: RunningHost, emulator: tuple[SendGridState, RunningServer]) -> str:
    """What an admin did before: the SendGrid module (its copy also declares the emulator),
    tenants acme and globex, SendGrid enabled for acme and its Event Webhook pointed at the
    module's webhook URL (as the account owner does in SendGrid)."""
    _, server = emulator
    manifest = json.loads((MODULE_DIR / "manifest.json").read_text())
    manifest["egress"] = [*manifest["egress"], server.netloc]
    script = (MODULE_DIR / "module.py").read_text()
    with served.client() as api:
        uploaded = api.post("/api/v1/modules", json={"manifest": manifest, "script": script})
        assert uploaded.status_code == 201, uploaded.text
        for tenant_id in ("acme", "globex"):
            assert api.post("/api/v1/tenants", json={"id": tenant_id, "name": tenant_id.title()})
        settings = {
            "api_key": API_KEY,
            "api_base_url": server.url,
            "sender_id": 1001,
            "suppression_group_id": 42,
        }
        enabled = api.put("/api/v1/tenants/acme/modules/sendgrid", json={"settings": settings})
        assert enabled.status_code == 200, enabled.text
        hook = enabled.json()["webhookUrl"]
    httpx.patch(
        f"{server.url}/v3/user/webhooks/event/settings",
        json={"enabled": True, "url": hook},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).raise_for_status()
    return "acme"


def _as_marketer(console: Console, email: str, tenant: str) -> Console:
    console.sign_in_with_admin_token()
    console.go("/console/users")
    if console.page.get_by_role("row").filter(has_text=email).count() == 0:
        console.create_user(email, "marketer", tenant=tenant)
    console.sign_out()
    console.sign_in(email)
    return console


@pytest.fixture
def marketer(console: Console, tenant: str) -> Console:
    return _as_marketer(console, "mia@example.com", tenant)


def _campaigns(served: RunningHost) -> list[dict[str, Any]]:
    with served.client() as api:
        listed = api.get("/api/v1/tenants/acme/campaigns")
        assert listed.status_code == 200, listed.text
        return list(listed.json())


def _status(page: Any, text: str) -> None:
    page.locator('[data-field="status"]').filter(has_text=text).wait_for(timeout=60_000)


def test_marketer_sends_a_sendgrid_campaign_and_watches_it(
    marketer: Console,
    served: RunningHost,
    emulator: tuple[SendGridState, RunningServer],
    tmp_path: Path,
) -> None:
    page = marketer.page
    people = tmp_path / "people.csv"
    people.write_text(f"id,name,email\nc1,Ann,{ANN}\nc2,Bob,{BOB}\n")
    marketer.go("/console/tenants/acme/contacts")
    page.get_by_label("CSV or JSON file").set_input_files(str(people))
    page.get_by_role("button", name="Import").click()
    # the upload goes through the progress script: the page it opens still shows the flash
    page.get_by_role("status").filter(has_text="Imported: 2 created, 0 updated").wait_for()
    page.get_by_role("row").filter(has_text=BOB).wait_for()

    page.get_by_role("navigation", name="Tenant").get_by_role("link", name="Campaigns").click()
    page.wait_for_url(re.compile(r"/campaigns$"))
    assert page.get_by_text("No campaigns yet").is_visible()
    assert marketer.unlabelled_fields() == []
    assert page.get_by_label(label("Email service")).locator("option").all_inner_texts() == [
        "sendgrid"
    ]
    # a bad form (the browser's own checks pass, the service's do not): refused at its
    # fields, nothing stored
    page.get_by_label(label("Name")).fill("   ")
    page.get_by_label(label("Sender name")).fill("Acme")
    page.get_by_label(label("Sender email")).fill("news@acme")
    page.get_by_role("button", name="Create campaign").click()
    page.get_by_role("alert").wait_for()
    name = page.get_by_label(label("Name"))
    assert name.get_attribute("aria-invalid") == "true"
    assert page.locator("#f-name-error").inner_text() == "must be 1-500 characters"
    assert "not an email address" in page.locator("#f-senderEmail-error").inner_text()
    assert page.get_by_label(label("Sender name")).input_value() == "Acme"
    assert _campaigns(served) == []

    name.fill("Spring sale")
    page.get_by_label(label("Email service")).select_option("sendgrid")
    page.get_by_label(label("Subject")).fill("20% off")
    page.get_by_label(label("Sender email")).fill("news@acme.test")
    page.get_by_label(label("HTML")).fill("<h1>Spring sale</h1>")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url(re.compile(r"/campaigns/[0-9a-f]{32}$"))
    campaign_url = page.url
    page.get_by_role("status").filter(has_text="Campaign Spring sale created").wait_for()
    page.evaluate("() => { window.notReloaded = true; }")
    # export, prepare and create run in the background; the page follows without a reload
    _status(page, "Sending")
    assert page.locator('[data-field="stage"]').inner_text() == "done"
    assert page.locator('[data-field="prepared"]').inner_text() == "2"
    external_id = page.locator('[data-field="externalId"]').inner_text()
    assert external_id == _campaigns(served)[0]["externalId"]

    _, server = emulator
    delivered = httpx.post(
        f"{server.url}/_emulator/singlesends/{external_id}/deliver",
        json={"outcomes": {ANN: "open", BOB: "bounce"}},
        timeout=30,
    )
    assert delivered.status_code == 200, delivered.text
    assert all(status == 200 for status in delivered.json()["posts"])
    _status(page, "Sent")
    assert page.evaluate("() => window.notReloaded") is True
    assert page.get_by_text("Finished: reload the page").is_visible()

    page.reload()
    chart = page.get_by_role("img", name="Campaign stats of Spring sale")
    assert chart.is_visible()
    stats = page.locator("table.stats")
    headers = stats.locator("th").all_inner_texts()
    values = dict(zip(headers, stats.locator("td").all_inner_texts(), strict=True))
    assert values["total"] == "2" and values["opened"] == "1" and values["bounced"] == "1"
    assert page.get_by_text("Fetched at").is_visible()
    rows = page.locator("#deliveries ~ .table-wrap tbody tr")
    assert rows.filter(has_text=ANN).filter(has_text="Opened").count() == 1
    assert rows.filter(has_text=BOB).filter(has_text="Bounced").count() == 1
    assert marketer.unlabelled_fields() == []
    assert not marketer.scrolls_sideways()
    marketer.screenshot("campaign")

    page.get_by_label("Status").select_option("Bounced")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"status=Bounced"))
    assert rows.count() == 1 and BOB in rows.inner_text()

    # the contact's deliveries lead back here
    page.get_by_role("link", name="c2").click()
    page.get_by_role("link", name="Spring sale").click()
    assert page.url == campaign_url

    page.get_by_role("navigation", name="Tenant").get_by_role("link", name="Campaigns").click()
    listed = page.get_by_role("row").filter(has_text="Spring sale")
    assert listed.filter(has_text="Sent").filter(has_text="done").count() == 1
    marketer.screenshot("campaigns")

    # a post without its CSRF token changes nothing
    refused = page.request.post(campaign_url + "/cancel", form={"x": "1"})
    assert refused.status == 403
    assert _campaigns(served)[0]["status"] == "Sent"


def test_a_marketer_of_another_tenant_cannot_open_the_campaign(
    console: Console, served: RunningHost, tenant: str
) -> None:
    with served.client() as api:
        contact = [{"id": "c1", "name": "Ann", "email": ANN}]
        assert api.post(f"/api/v1/tenants/{tenant}/contacts", json=contact).is_success
        draft = {
            "module": "sendgrid", "name": "Private", "type": "Email", "subject": "s",
            "senderName": "Acme", "senderEmail": "news@acme.test", "contactIds": ["c1"],
            "html": "<p>hi</p>",
        }  # fmt: skip
        queued = api.post(f"/api/v1/tenants/{tenant}/campaigns", json=draft)
        assert queued.status_code == 202, queued.text
    campaign = queued.json()["id"]
    other = _as_marketer(console, "gus@example.com", "globex")
    page = other.page
    for path in ("campaigns", f"campaigns/{campaign}", f"campaigns/{campaign}/progress"):
        answer = page.goto(f"{served.url}/console/tenants/{tenant}/{path}")
        assert answer is not None and answer.status == 403, path
        assert "Private" not in page.content()
    other.go("/console/tenants/globex/campaigns")
    assert page.get_by_text("No email module is enabled for this tenant").is_visible()
    # and its own tenant's page does not show the campaign of acme
    assert page.get_by_text("Private").count() == 0
    other.go("/console/tenants/globex/campaigns/new-messenger?module=sendgrid")
    assert page.get_by_text("No messenger module is enabled for this tenant").is_visible()
    assert other.unlabelled_fields() == []
