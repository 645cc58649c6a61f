"""Campaigns over HTTP: validation (every problem in one answer), the background send seen
through progress, deliveries and the list, messenger campaigns, cancel, tenant isolation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.db.models import ContactUnsubscription, Template
from host.marketing.campaigns import CampaignDraft
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, SECRET_KEY, email_manifest, make_host
from tests.host.test_campaign_job import RECORDING_SCRIPT, SETTINGS_SCHEMA, add_contacts, draft

MESSENGER_SCRIPT = """\
def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    storage.set("seen", (storage.get("seen") or []) + list(contacts))


def CRM_Marketing_CreateMessengerCampaign(request):
    storage.set("request", dict(request))
    return {"externalId": "tg-1", "status": "Sent"}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError


def CRM_Marketing_GetMessengerTypes():
    return ["Telegram"]


def CRM_Marketing_GetMessengerBots():
    return []
"""

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BASE = "/api/v1/tenants/acme/campaigns"


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    for manifest, script in (
        (email_manifest(id="rec", settings=SETTINGS_SCHEMA), RECORDING_SCRIPT),
        (email_manifest(id="off", settings=SETTINGS_SCHEMA), RECORDING_SCRIPT),
        (email_manifest(id="tg", kind="messenger", settings=SETTINGS_SCHEMA), MESSENGER_SCRIPT),
    ):
        body = {"manifest": manifest, "script": script}
        instance.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    instance.tenants.create("acme", "Acme")
    instance.tenants.create("other", "Other")
    for module in ("rec", "off", "tg"):
        instance.tenants.configure("acme", module, settings={})
    instance.tenants.configure("acme", "off", enabled=False)
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host)) as test_client:
        yield test_client


def body(**overrides: Any) -> dict[str, Any]:
    return draft(**overrides).model_dump(exclude_none=True)


def wait_done(client: TestClient, campaign_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = client.get(f"{BASE}/{campaign_id}", headers=ADMIN).json()
        if shown["progress"]["stage"] in ("done", "failed", "cancelled"):
            return shown  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("campaign did not finish")


def problems(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {p["location"]: p["message"] for p in response.json()["problems"]}


def test_send_in_the_background_and_watch_progress(host: Host, client: TestClient) -> None:
    add_contacts(host, 25)
    created = client.post(BASE, json=body(batchSize=10), headers=ADMIN)
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "Draft"
    shown = wait_done(client, created.json()["id"])
    assert shown["status"] == "Sending" and shown["externalId"].startswith("ext-")
    assert shown["error"] is None
    assert shown["progress"] == {
        "stage": "done",
        "total": 25,
        "exported": 25,
        "prepared": 25,
        "skipped": 0,
        "skippedBy": {
            "unsubscribed": 0,
            "bounced": 0,
            "complained": 0,
            "noAddress": 0,
            "category": 0,
        },
        "batches": 3,
        "batchSize": 10,
        "rateLimitedUntil": None,
        "percent": 100.0,
    }
    assert shown["stats"]["values"]["total"] == 1

    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"after": after} if after else {})
        page = client.get(f"{BASE}/{shown['id']}/deliveries", params=params, headers=ADMIN)
        seen += [d["contactId"] for d in page.json()["items"]]
        assert {d["status"] for d in page.json()["items"]} == {"Sent"}
        after = page.json()["next"]
        if after is None:
            break
    assert seen == [f"c{i:06d}" for i in range(25)]

    listed = client.get(BASE, headers=ADMIN).json()
    assert [c["id"] for c in listed] == [shown["id"]]
    cancel = client.post(f"{BASE}/{shown['id']}/cancel", headers=ADMIN)
    assert cancel.status_code == 409


def test_cli_status_json_is_the_api_answer(host: Host, client: TestClient, db_path: Path) -> None:
    """The CLI prints a campaign through the API's own model: the same fields, names and
    values as ``GET .../campaigns/{id}`` (stats come from the cache both times)."""
    add_contacts(host, 3)
    created = client.post(BASE, json=body(), headers=ADMIN)
    shown = wait_done(client, created.json()["id"])
    assert shown["stats"]["values"]["total"] == 1
    cli = Cli.in_dir(db_path.parent, CRM_HOST_SECRET_KEY=SECRET_KEY)
    printed = cli.run("campaign", "status", "acme", shown["id"], "--json")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == client.get(f"{BASE}/{shown['id']}", headers=ADMIN).json()
    missing = cli.run("campaign", "status", "acme", "nope", "--json")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "campaign nope does not exist" in missing.stderr


def test_scheduled_campaign_defaults_to_scheduled(host: Host, client: TestClient) -> None:
    add_contacts(host, 2)
    created = client.post(BASE, json=body(scheduledAt="2030-01-01T09:00:00+00:00"), headers=ADMIN)
    assert wait_done(client, created.json()["id"])["status"] == "Scheduled"


def test_messenger_campaign_goes_to_contact_ids(host: Host, client: TestClient) -> None:
    add_contacts(host, 3)
    created = client.post(
        BASE,
        json={
            "module": "tg",
            "name": "Bot news",
            "type": "Messenger",
            "campaignType": "Telegram",
            "botId": "bot-1",
            "text": "Hi!",
            "contactIds": "all",
        },
        headers=ADMIN,
    )
    assert created.status_code == 202, created.text
    shown = wait_done(client, created.json()["id"])
    assert (shown["status"], shown["externalId"]) == ("Sent", "tg-1"), shown["error"]
    stored = host.module_storage.load("acme", "tg")
    assert stored["seen"] == ["c000000", "c000001", "c000002"]
    assert stored["request"]["botId"] == "bot-1"
    assert stored["request"]["campaignType"] == "Telegram"


def test_a_messenger_campaigns_category_is_its_module_id(host: Host, client: TestClient) -> None:
    """A contact unsubscribed from ``tg`` (the module's id) is left out of its campaigns;
    one unsubscribed from another category is not."""
    add_contacts(host, 3)
    with host.db.transaction() as session:
        for contact_id, category in (("c000000", "tg"), ("c000001", "news")):
            session.add(
                ContactUnsubscription(tenant_id="acme", contact_id=contact_id, category=category)
            )
    created = client.post(
        BASE,
        json={
            "module": "tg",
            "name": "Bot news",
            "type": "Messenger",
            "campaignType": "Telegram",
            "botId": "bot-1",
            "text": "Hi!",
            "contactIds": "all",
        },
        headers=ADMIN,
    )
    assert created.status_code == 202, created.text
    shown = wait_done(client, created.json()["id"])
    assert host.module_storage.load("acme", "tg")["seen"] == ["c000001", "c000002"]
    assert shown["progress"]["skipped"] == 1
    assert shown["progress"]["skippedBy"]["category"] == 1


def test_every_problem_is_listed(host: Host, client: TestClient) -> None:
    response = client.post(
        BASE,
        json={"module": "rec", "type": "Fax", "senderEmail": "not-an-email", "contactIds": []},
        headers=ADMIN,
    )
    found = problems(response)
    assert set(found) >= {"type", "name", "contactIds", "senderEmail"}


@pytest.mark.parametrize(
    ("overrides", "location", "fragment"),
    [
        ({"module": "nope"}, "module", "unknown module"),
        ({"module": "off"}, "module", "disabled"),
        ({"module": "tg"}, "type", "need a email module"),
        ({"contactIds": []}, "contactIds", "non-empty"),
        ({"contactIds": ["c000000", "ghost"]}, "contactIds", "1 unknown contact(s): ghost"),
        ({"senderEmail": "acme.test"}, "senderEmail", "not an email address"),
        ({"senderName": ""}, "senderName", "required"),
        ({"templateId": "missing", "html": None}, "templateId", "no template"),
        ({"scheduledAt": "tomorrow"}, "scheduledAt", "ISO 8601"),
        ({"batchSize": 0}, "batchSize", "must be"),
    ],
)
def test_validation(
    host: Host, client: TestClient, overrides: dict[str, Any], location: str, fragment: str
) -> None:
    add_contacts(host, 1)
    found = problems(client.post(BASE, json=body(**overrides), headers=ADMIN))
    assert fragment in found[location]


def test_messenger_type_needs_a_messenger_module(host: Host, client: TestClient) -> None:
    add_contacts(host, 1)
    found = problems(
        client.post(
            BASE,
            json={"module": "rec", "name": "x", "type": "Messenger", "contactIds": "all"},
            headers=ADMIN,
        )
    )
    assert "messenger module" in found["type"]
    assert {"campaignType", "botId", "text"} <= set(found)


def test_all_with_no_contacts_is_an_empty_audience(client: TestClient) -> None:
    assert "no contacts" in problems(client.post(BASE, json=body(), headers=ADMIN))["contactIds"]


def test_neither_html_nor_template_is_required(host: Host, client: TestClient) -> None:
    """SPEC: html and templateExternalId are both optional; the module decides whether it
    can send without them (a service may use a default template)."""
    add_contacts(host, 2)
    created = client.post(BASE, json=body(html=None), headers=ADMIN)
    assert created.status_code == 202, created.text
    shown = wait_done(client, created.json()["id"])
    assert shown["status"] == "Sending" and shown["error"] is None
    with host.db.transaction() as session:
        from host.db.models import Campaign

        row = session.get(Campaign, created.json()["id"])
        assert row is not None
        assert (row.request["html"], row.request["templateExternalId"]) == (None, None)


def test_published_template_is_sent_by_external_id(host: Host, client: TestClient) -> None:
    add_contacts(host, 1)
    with host.db.transaction() as session:
        session.add(
            Template(id="t1", tenant_id="acme", module_id="rec", name="T", external_id="x9")
        )
        session.add(Template(id="t2", tenant_id="acme", module_id="rec", name="Draft"))
    unpublished = client.post(BASE, json=body(templateId="t2", html=None), headers=ADMIN)
    assert "not published" in problems(unpublished)["templateId"]
    created = client.post(BASE, json=body(templateId="t1", html=None), headers=ADMIN)
    assert created.status_code == 202
    with host.db.transaction() as session:
        from host.db.models import Campaign

        row = session.get(Campaign, created.json()["id"])
        assert row is not None and row.request["templateExternalId"] == "x9"


def test_cancel_a_queued_campaign_at_once(host: Host) -> None:
    add_contacts(host, 3)
    created = host.campaigns.create("acme", CampaignDraft(**body()))  # runner not started
    cancelled = host.campaigns.cancel("acme", created.id)
    assert (cancelled.status, cancelled.progress.stage) == ("Cancelled", "cancelled")
    assert host.campaign_runner.claim() is None


def test_other_tenants_see_nothing(host: Host, client: TestClient) -> None:
    add_contacts(host, 1)
    created = client.post(BASE, json=body(), headers=ADMIN).json()
    other = client.post("/api/v1/tenants", json={"id": "rival", "name": "R"}, headers=ADMIN)
    rival = {"Authorization": f"Bearer {other.json()['apiKey']}"}
    assert client.get(f"{BASE}/{created['id']}", headers=rival).status_code == 403
    wrong_path = client.get(f"/api/v1/tenants/rival/campaigns/{created['id']}", headers=rival)
    assert wrong_path.status_code == 404
    assert client.get("/api/v1/tenants/rival/campaigns", headers=rival).json() == []
