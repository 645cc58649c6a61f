"""The admin's journey in a real browser: upload the SendGrid module (folder files), create
a tenant (API key shown once), fill the settings form generated from the module's schema (the
secret stays hidden after save), copy the webhook URL; a marketer of another tenant cannot open
this tenant's pages; a keyboard-only journey; every field of every page labelled; 390 px."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.console.conftest import Console, label, new_console
from tests.e2e.server import RunningHost

SENDGRID = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
SECRET = "SG.console-secret-value-0042"


@pytest.fixture(scope="module")
def set_up(browser, served: RunningHost, screenshots: Path) -> dict[str, str]:
    """The admin uploads SendGrid, creates tenants acme and globex, enables SendGrid for acme
    with its settings, and creates a marketer for globex (one journey, shared below)."""
    context, console = new_console(browser, served, screenshots)
    page = console.page
    try:
        console.sign_in_with_admin_token()
        console.go("/console/modules")
        page.get_by_label(re.compile("^Module package")).set_input_files(
            [str(SENDGRID / "manifest.json"), str(SENDGRID / "module.py")]
        )
        page.get_by_role("button", name="Upload and validate").click()
        page.get_by_role("status").filter(has_text="Module sendgrid").wait_for()
        assert page.get_by_role("heading", name="Egress").is_visible()
        console.screenshot("module-version")
        console.go("/console/modules")
        console.screenshot("modules")

        keys = {}
        for tenant_id, name in (("acme", "Acme"), ("globex", "Globex")):
            console.go("/console/tenants")
            page.get_by_label(label("Id")).fill(tenant_id)
            page.get_by_label(label("Name")).fill(name)
            page.get_by_role("button", name="Create tenant").click()
            keys[tenant_id] = page.get_by_label("API key of " + tenant_id).input_value()
        assert keys["acme"] and keys["acme"] != keys["globex"]
        console.screenshot("tenant-created")

        console.go("/console/tenants/acme")
        page.get_by_label(label("Module")).select_option("sendgrid")
        page.get_by_role("button", name="Set up").click()
        page.get_by_label(label("api_key")).fill(SECRET)
        page.get_by_label(label("sender_id")).fill("0")
        page.get_by_role("button", name="Save").click()
        assert page.locator("#f-settings-sender_id-error").is_visible()  # minimum 1
        assert page.get_by_label(label("sender_id")).get_attribute("aria-invalid") == "true"
        with served.client() as api:
            assert api.get("/api/v1/tenants/acme/modules").json() == []
        assert SECRET not in page.content()
        page.get_by_label(label("api_key")).fill(SECRET)
        page.get_by_label(label("sender_id")).fill("7")
        page.get_by_role("button", name="Save").click()
        page.get_by_role("status").filter(has_text="Saved: sendgrid").wait_for()
        assert SECRET not in page.content()
        assert page.locator("#f-settings-api_key-state").inner_text().startswith("set")
        assert page.get_by_label(label("api_key")).input_value() == ""
        webhook = page.get_by_label("Webhook URL").input_value()
        assert re.fullmatch(re.escape(served.url) + r"/hooks/acme/sendgrid/\S+", webhook)
        console.screenshot("tenant-settings")
        console.create_user("gina@example.com", "marketer", tenant="globex")
    finally:
        context.close()
    assert console.outside_requests == []
    return {"webhook": webhook, **keys}


def test_settings_saved_through_the_form_reach_the_host_and_the_secret_stays_hidden(
    set_up: dict[str, str], served: RunningHost
) -> None:
    with served.client() as api:
        answer = api.get("/api/v1/tenants/acme/modules/sendgrid").json()
    assert answer["settings"]["api_key"] == "***set***"
    assert answer["settings"]["sender_id"] == 7
    assert answer["webhookUrl"] == set_up["webhook"]


def test_the_webhook_url_is_copied(set_up: dict[str, str], browser, served, screenshots) -> None:
    context, console = new_console(
        browser, served, screenshots, permissions=["clipboard-read", "clipboard-write"]
    )
    try:
        console.sign_in_with_admin_token()
        console.go("/console/tenants/acme/modules/sendgrid")
        console.page.get_by_role("button", name="Copy webhook URL").click()
        console.page.get_by_text("Copied.").wait_for()
        assert console.page.evaluate("navigator.clipboard.readText()") == set_up["webhook"]
    finally:
        context.close()
    assert console.outside_requests == []


def test_a_marketer_of_one_tenant_cannot_open_another_tenants_pages(
    set_up: dict[str, str], console: Console
) -> None:
    console.sign_in("gina@example.com")
    page = console.page
    assert re.search(r"/console/tenants/globex$", page.url)
    for path in ("/console/tenants/acme", "/console/tenants/acme/modules/sendgrid",
                 "/console/tenants", "/console/modules"):  # fmt: skip
        console.go(path)
        assert page.get_by_role("heading", name="Not allowed").is_visible(), path
        assert "sendgrid/" not in page.content()
        assert set_up["webhook"] not in page.content()


def test_keyboard_only_sign_in_open_a_tenant_change_a_setting_and_save(
    set_up: dict[str, str], console: Console, served: RunningHost
) -> None:
    page = console.page
    console.go("/console/sign-in")
    page.get_by_label(label("Admin token")).focus()
    page.keyboard.type(served.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console$"))
    console.go("/console/tenants")
    page.get_by_role("link", name="acme").focus()
    page.keyboard.press("Enter")
    page.get_by_role("link", name="sendgrid").focus()
    page.keyboard.press("Enter")
    page.get_by_label(label("sender_id")).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("9")
    page.keyboard.press("Enter")  # submits the form from its field
    page.get_by_role("status").filter(has_text="Saved: sendgrid").wait_for()
    with served.client() as api:
        settings = api.get("/api/v1/tenants/acme/modules/sendgrid").json()["settings"]
    assert settings["sender_id"] == 9
    assert settings["api_key"] == "***set***"


PAGES = (
    "/console", "/console/users", "/console/audit", "/console/account", "/console/attention",
    "/console/modules",
    "/console/modules/sendgrid/versions/{v}", "/console/modules/sendgrid/diff",
    "/console/tenants", "/console/tenants/acme", "/console/tenants/acme/modules/sendgrid",
)  # fmt: skip


def test_every_field_of_every_page_has_a_label_and_nothing_scrolls_sideways_at_390px(
    set_up: dict[str, str], browser, served: RunningHost, screenshots: Path
) -> None:
    with served.client() as api:
        version = api.get("/api/v1/modules/sendgrid").json()["versions"][-1]["version"]
    context, console = new_console(
        browser, served, screenshots, viewport={"width": 390, "height": 844}
    )
    try:
        console.sign_in_with_admin_token()
        for path in ("/console/sign-in", *PAGES):
            console.go(path.format(v=version))
            assert console.unlabelled_fields() == [], path
            assert not console.scrolls_sideways(), path
        console.screenshot("tenant-settings-390px")
    finally:
        context.close()
    assert console.outside_requests == []
