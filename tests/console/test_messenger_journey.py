"""A marketer's messenger campaign in a real browser, against a real ``crm-host serve`` and
the Telegram Bot API emulator: in *New messenger campaign* the *Campaign module* select lists
the tenant's enabled messenger modules (SendGrid, an email module, is not one), the module
then offers its account types and bots (GetMessengerTypes / GetMessengerBots, which also
registers the tenant's webhook with the bot), the marketer picks Telegram and the bot, and
the campaign runs to Sent with no reload: the two linked chats get the message, the contact
who never started the bot is reported Failed by the module with the next update, and the
stats show it. A form the service refuses is shown again at its field, nothing stored.
Then an admin resolves a campaign needing attention on the console's page for them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from emulators.runner import RunningServer, serve
from emulators.telegram import TelegramState, create_app
from host.db.models import Campaign
from tests.console.conftest import Console, label
from tests.e2e.server import RunningHost, free_port, running_host

ATTENTION = "interrupted during CRM_Marketing_CreateMessengerCampaign"
MODULES = Path(__file__).resolve().parents[2] / "module_manifests"
WEBHOOK_SECRET = "console-journey-secret-0123"
LINKED = {"c1": 5001, "c2": 5002}  # contact id -> the chat that started the bot for it
CONTACTS = [
    {"id": "c1", "name": "Ann", "email": "ann@example.com"},
    {"id": "c2", "name": "Bob", "email": "bob@example.com"},
    {"id": "c3", "name": "Cy", "email": "cy@example.com"},  # never started the bot
]


@pytest.fixture(scope="module")
def bot() -> Iterator[tuple[TelegramState, RunningServer]]:
    state = TelegramState()
    with serve(create_app(state)) as server:
        yield state, server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, bot: tuple[TelegramState, RunningServer]
) -> Iterator[RunningHost]:
    with running_host(
        tmp_path_factory.mktemp("console-messenger"),
        port=free_port(),
        CRM_HOST_SANDBOX_WORKERS="1",
        CRM_HOST_EGRESS_ALLOW=bot[1].netloc,
        CRM_HOST_CAMPAIGN_POLL_SECONDS="0.5",
    ) as host:
        yield host


def _upload(api: Any, module: str, *extra_egress: str) -> None:
    manifest = json.loads((MODULES / module / "manifest.json").read_text())
    manifest["egress"] = [*manifest["egress"], *extra_egress]
    script = (MODULES / module / "module.py").read_text()
    answer = api.post("/api/v1/modules", json={"manifest": manifest, "script": script})
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def tenant(served: RunningHost, bot: tuple[TelegramState, RunningServer]) -> str:
    """What the admin did before: Telegram (its copy also declares the emulator) and SendGrid
    enabled for acme, with its contacts."""
    state, server = bot
    with served.client() as api:
        _upload(api, "telegram", server.netloc)
        _upload(api, "sendgrid")
        assert api.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).is_success
        settings = {"bot_token": state.token, "webhook_secret": WEBHOOK_SECRET,
                    "api_base_url": server.url}  # fmt: skip
        path = "/api/v1/tenants/acme/modules/telegram"
        enabled = api.put(path, json={"settings": settings})
        assert enabled.status_code == 200, enabled.text
        settings["webhook_url"] = enabled.json()["webhookUrl"]
        assert api.put(path, json={"settings": settings}).status_code == 200
        sendgrid = {"api_key": "SG.unused-here-0123456789", "sender_id": 1,
                    "suppression_group_id": 1}  # fmt: skip
        answer = api.put("/api/v1/tenants/acme/modules/sendgrid", json={"settings": sendgrid})
        assert answer.status_code == 200, answer.text
        assert api.post("/api/v1/tenants/acme/contacts", json=CONTACTS).is_success
    return "acme"


def _campaigns(served: RunningHost) -> list[dict[str, Any]]:
    with served.client() as api:
        return list(api.get("/api/v1/tenants/acme/campaigns").json())


def test_marketer_sends_a_telegram_campaign_and_watches_it(
    console: Console,
    served: RunningHost,
    tenant: str,
    bot: tuple[TelegramState, RunningServer],
) -> None:
    state, _ = bot
    console.sign_in_with_admin_token()
    console.create_user("tess@example.com", "marketer", tenant=tenant)
    console.sign_out()
    console.sign_in("tess@example.com")
    page = console.page

    console.go(f"/console/tenants/{tenant}/campaigns")
    page.get_by_role("link", name="New messenger campaign").click()
    page.wait_for_url(re.compile(r"/campaigns/new-messenger$"))
    module = page.get_by_role("combobox", name=label("Campaign module"))
    assert module.locator("option").all_inner_texts() == ["telegram"]
    assert state.webhook == {}, "no bot is asked before the module is picked"
    module.select_option("telegram")
    page.get_by_role("button", name="Show its bots").click()
    page.get_by_role("heading", name="Campaign through telegram").wait_for()
    # listing the bots registered the tenant's webhook: the contacts can now start the bot
    assert state.webhook["url"].startswith(served.url + "/hooks/acme/telegram/")
    for contact_id, chat_id in LINKED.items():
        assert state.user_starts(chat_id, f"c_{contact_id}").status_code == 200
    assert page.get_by_label(label("Account type")).locator("option").all_inner_texts() == [
        "Telegram"
    ]
    bots = page.get_by_label(label("Bot")).locator("option").all_inner_texts()
    assert bots == ["CRM Test Bot (Telegram)"]
    assert console.unlabelled_fields() == []
    assert not console.scrolls_sideways()
    console.screenshot("campaign-messenger")

    # the browser's checks pass, the service's do not: refused at its field, nothing stored
    page.get_by_label(label("Name")).fill("   ")
    page.get_by_label(label("Message")).fill("Flash sale: 30% off today")
    page.get_by_role("button", name="Create campaign").click()
    page.get_by_role("alert").wait_for()
    assert page.get_by_label(label("Name")).get_attribute("aria-invalid") == "true"
    assert page.locator("#f-name-error").inner_text() == "must be 1-500 characters"
    assert page.get_by_label(label("Message")).input_value() == "Flash sale: 30% off today"
    assert _campaigns(served) == []

    page.get_by_label(label("Name")).fill("Flash sale")
    page.get_by_label(label("Account type")).select_option("Telegram")
    page.get_by_label(label("Bot")).select_option(label="CRM Test Bot (Telegram)")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url(re.compile(r"/campaigns/[0-9a-f]{32}$"))
    page.evaluate("() => { window.notReloaded = true; }")
    page.locator('[data-field="status"]').filter(has_text="Sent").wait_for(timeout=60_000)
    assert page.evaluate("() => window.notReloaded") is True
    assert page.locator('[data-field="prepared"]').inner_text() == "3"
    [campaign] = _campaigns(served)
    assert page.locator('[data-field="externalId"]').inner_text() == f"tg-{campaign['id']}"
    for chat_id in LINKED.values():
        assert [m["text"] for m in state.messages_to(chat_id)][-1] == "Flash sale: 30% off today"

    # the module reports the unreachable contact with the next update it receives
    assert state.user_starts(5009).status_code == 200
    page.reload()
    rows = page.locator("#deliveries ~ .table-wrap tbody tr")
    statuses = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(2).inner_text()
        for row in rows.all()
    }
    assert statuses == {"c1": "Sent", "c2": "Sent", "c3": "Failed"}
    stats = page.locator("table.stats")
    values = dict(zip(stats.locator("th").all_inner_texts(), stats.locator("td").all_inner_texts(),
                      strict=True))  # fmt: skip
    assert values["sent"] == "2" and values["failed"] == "1"
    assert console.unlabelled_fields() == []


def _flag_as_interrupted(served: RunningHost, campaign_id: str) -> None:
    """Put a finished campaign back in the state the send job leaves when the host died
    during CreateMessengerCampaign (Telegram does not declare it idempotent): stage
    creating, no id in the service, flagged. Done once the job is over, so nothing races."""
    engine = create_engine(f"sqlite:///{served.workdir / 'host.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id)
                .values(stage="creating", status="Draft", external_id=None, finished_at=None,
                        attention_reason=ATTENTION, attention_at=datetime.now(UTC))
            )  # fmt: skip
    finally:
        engine.dispose()


def test_an_admin_resolves_a_campaign_needing_attention(
    console: Console, served: RunningHost, tenant: str
) -> None:
    with served.client() as api:
        draft = {"module": "telegram", "name": "Interrupted", "type": "Messenger",
                 "campaignType": "Telegram", "botId": "123456789", "text": "Hello",
                 "contactIds": ["c1"]}  # fmt: skip
        queued = api.post(f"/api/v1/tenants/{tenant}/campaigns", json=draft)
        assert queued.status_code == 202, queued.text
        campaign_id = queued.json()["id"]
        path = f"/api/v1/tenants/{tenant}/campaigns/{campaign_id}"
        for _ in range(600):
            if api.get(path).json()["progress"]["stage"] == "done":
                break
            time.sleep(0.1)
    _flag_as_interrupted(served, campaign_id)

    console.sign_in_with_admin_token()
    page = console.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Needs attention").click()
    row = page.get_by_role("row").filter(has_text="Interrupted")
    assert row.filter(has_text=ATTENTION).filter(has_text="telegram@1.0.0").count() == 1
    assert not console.scrolls_sideways()
    console.screenshot("attention")
    row.get_by_role("link", name="Interrupted").click()
    page.get_by_label(label("Campaign id in the service")).fill(f"tg-{campaign_id}")
    page.get_by_role("button", name="Record the id").click()
    page.get_by_role("status").filter(has_text="recorded as tg-").wait_for()
    assert page.get_by_role("row").filter(has_text="Interrupted").count() == 0
    with served.client() as api:
        shown = api.get(f"/api/v1/tenants/{tenant}/campaigns/{campaign_id}").json()
    assert (shown["status"], shown["externalId"], shown["attention"]) == (
        "Sending",
        f"tg-{campaign_id}",
        None,
    )
