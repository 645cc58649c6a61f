"""A marketer's pages in a real browser: contacts imported from a CSV file (a bad row is
refused with its row, nothing stored), searched and filtered; templates imported from the
enabled email module, previewed in the sandboxed frame (its script does not run) and
published; the activity page shows the module calls; another tenant's pages are refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.conftest import Console, label
from tests.e2e.server import RunningHost
from tests.host.conftest import EMAIL_SCRIPT, email_manifest

PREVIEW = (
    'return "<h1>Hello " + templateExternalId + "</h1>'
    "<script>parent.document.title = 'pwned'</script>\""
)
SCRIPT = EMAIL_SCRIPT.replace('raise NotImplementedError("no previews")', PREVIEW)


@pytest.fixture(scope="module")
def tenant(served: RunningHost) -> Iterator[str]:
    with served.client() as api:
        assert api.post(
            "/api/v1/modules", json={"manifest": email_manifest(), "script": SCRIPT}
        ).is_success
        for tenant_id in ("acme", "globex"):
            assert api.post(
                "/api/v1/tenants", json={"id": tenant_id, "name": tenant_id.title()}
            ).is_success
        enabled = api.put(
            "/api/v1/tenants/acme/modules/sendmail", json={"settings": {"api_key": "k-123456789"}}
        )
        assert enabled.status_code == 200, enabled.text
    yield "acme"


@pytest.fixture
def marketer(console: Console, tenant: str) -> Console:
    console.sign_in_with_admin_token()
    console.go("/console/users")
    if console.page.get_by_role("row").filter(has_text="mia@example.com").count() == 0:
        console.create_user("mia@example.com", "marketer", tenant=tenant)
    console.sign_out()
    console.sign_in("mia@example.com")
    return console


def _contacts(served: RunningHost) -> list[str]:
    with served.client() as api:
        return [c["id"] for c in api.get("/api/v1/tenants/acme/contacts").json()["items"]]


def test_marketer_imports_contacts_and_searches_them(
    marketer: Console, served: RunningHost, tmp_path: Path
) -> None:
    page = marketer.page
    marketer.go("/console/tenants/acme/contacts")
    assert page.get_by_text("No contacts yet").is_visible()
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,email\nc1,Ann,ann@example.com\nc2,Bob,not-an-email\n")
    page.get_by_label("CSV or JSON file").set_input_files(str(bad))
    page.get_by_role("button", name="Import").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert re.search(r"row 3|line 3|\[1\]|2", alert.inner_text())
    assert "email" in alert.inner_text()
    assert _contacts(served) == []

    good = tmp_path / "good.csv"
    good.write_text("id,name,email\nc1,Ann,ann@example.com\nc2,Bob,bob@example.com\n")
    page.get_by_label("CSV or JSON file").set_input_files(str(good))
    page.get_by_role("button", name="Import").click()
    page.get_by_role("status").filter(has_text="Imported: 2 created, 0 updated").wait_for()
    assert _contacts(served) == ["c1", "c2"]
    assert page.get_by_role("row").filter(has_text="bob@example.com").count() == 1
    assert marketer.unlabelled_fields() == []
    marketer.screenshot("contacts")

    page.get_by_label("Search").fill("ann")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"q=ann"))
    assert page.get_by_role("row").filter(has_text="ann@example.com").count() == 1
    assert page.get_by_role("row").filter(has_text="bob@example.com").count() == 0
    page.get_by_role("link", name="c1").click()
    assert page.get_by_role("heading", name=re.compile("Ann")).is_visible()
    assert page.get_by_text("No campaign was sent to this contact yet.").is_visible()


def test_marketer_imports_previews_and_publishes_templates(
    marketer: Console, served: RunningHost
) -> None:
    page = marketer.page
    marketer.go("/console/tenants/acme/templates")
    page.get_by_label("Email service").select_option("sendmail")
    page.get_by_role("button", name="Import templates").click()
    page.get_by_role("status").filter(has_text="Imported 3 templates from sendmail").wait_for()
    assert marketer.unlabelled_fields() == []
    marketer.screenshot("templates")
    page.get_by_role("link", name="Welcome").click()
    frame = page.frame_locator("iframe.preview")
    assert frame.get_by_role("heading", name="Hello t0").is_visible()
    # the template's script did not run: the sandbox and the preview's CSP stop it
    assert page.title() != "pwned"
    preview = page.request.get(
        served.url + (page.locator("iframe.preview").get_attribute("src") or "")
    )
    assert "sandbox" in preview.headers["content-security-policy"]
    marketer.screenshot("template-preview")

    page.get_by_label(label("Name")).fill("Welcome v2")
    page.get_by_label("HTML").fill("<h1>Hi there</h1>")
    page.get_by_role("button", name="Publish").click()
    page.get_by_role("status").filter(has_text="Published Welcome v2 to sendmail").wait_for()
    with served.client() as api:
        names = [t["name"] for t in api.get("/api/v1/tenants/acme/templates").json()]
    assert "Welcome v2" in names

    marketer.go("/console/tenants/acme/activity")
    calls = page.locator("ul.calls > li")
    assert calls.filter(has_text="CRM_Marketing_SetTemplateHTML").count() == 1
    assert calls.filter(has_text="CRM_Marketing_ImportTemplates").count() >= 1
    page.get_by_label("Function").fill("SetTemplateHTML")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"function=SetTemplateHTML"))
    assert page.locator("ul.calls > li").count() == 1
    assert marketer.unlabelled_fields() == []
    marketer.screenshot("activity")


def test_a_marketer_cannot_open_another_tenants_pages(marketer: Console) -> None:
    page = marketer.page
    for path in ("contacts", "templates", "activity", "contacts/c1"):
        answer = page.goto(f"{marketer.host.url}/console/tenants/globex/{path}")
        assert answer is not None and answer.status == 403, path
        assert page.get_by_role("heading", name="Not allowed").is_visible()
    assert not marketer.scrolls_sideways()
