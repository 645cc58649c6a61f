"""Accounts in a real browser: the first admin signs in with the admin token and creates
the people; roles decide what each sees; a form without its CSRF token is refused; the audit
log names who changed what."""

from __future__ import annotations

import re

import pytest

from tests.console.conftest import PASSWORD, Console, label
from tests.e2e.server import RunningHost


@pytest.fixture(scope="module")
def tenant(served: RunningHost) -> str:
    with served.client() as api:
        assert api.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).status_code == 201
        assert (
            api.post("/api/v1/tenants", json={"id": "globex", "name": "Globex"}).status_code == 201
        )
    return "acme"


def test_admin_signs_in_with_the_token_and_creates_an_integrator_and_a_marketer(
    console: Console, tenant: str
) -> None:
    page = console.page
    console.go("/console/users")
    assert re.search(r"/console/sign-in\?next=/console/users$", page.url)
    console.screenshot("sign-in")
    assert console.unlabelled_fields() == []

    console.sign_in_with_admin_token()
    assert page.get_by_role("heading", name="Welcome, admin token configured").is_visible()
    console.screenshot("home")
    console.create_user("ivy@example.com", "integrator")
    console.create_user("mia@example.com", "marketer", tenant=tenant)
    rows = page.get_by_role("row")
    assert rows.filter(has_text="ivy@example.com").filter(has_text="integrator").count() == 1
    assert rows.filter(has_text="mia@example.com").filter(has_text="acme").count() == 1
    assert console.unlabelled_fields() == []
    console.screenshot("users")
    console.sign_out()

    console.sign_in("ivy@example.com")
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Modules").is_visible()
    assert nav.get_by_role("link", name="Users").count() == 0
    console.go("/console/users")
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    assert "ivy@example.com" not in page.content().split("</header>", 1)[1]


def test_a_wrong_password_is_refused_with_a_clear_message(console: Console, tenant: str) -> None:
    console.sign_in("nobody@example.com", "not the password at all")
    page = console.page
    assert page.get_by_role("alert").filter(has_text="wrong email or password").is_visible()
    assert page.get_by_label(label("Password")).get_attribute("aria-invalid") == "true"
    assert "/console/sign-in" in page.url


def test_a_form_posted_without_its_csrf_token_is_refused(console: Console, tenant: str) -> None:
    console.sign_in_with_admin_token()
    console.go("/console/users")
    page = console.page
    page.get_by_label(label("Email")).fill("forged@example.com")
    page.get_by_label(label("Password")).fill(PASSWORD)
    page.evaluate(
        '() => document.querySelector(\'form[action="/console/users"] '
        "input[name=csrf_token]').remove()"
    )
    with page.expect_response(re.compile(r"/console/users$")) as answer:
        page.get_by_role("button", name="Create user").click()
    assert answer.value.status == 403
    assert page.get_by_role("alert").filter(has_text="security token (CSRF)").is_visible()
    console.go("/console/users")
    assert page.get_by_role("row").filter(has_text="forged@example.com").count() == 0


def test_the_audit_log_shows_who_changed_what(
    console: Console, tenant: str, served: RunningHost
) -> None:
    console.sign_in_with_admin_token()
    console.create_user("audited@example.com", "integrator")
    console.sign_out()
    console.sign_in("audited@example.com")
    console.sign_out()
    with served.client() as api:
        assert (
            api.post("/api/v1/tenants", json={"id": "initech", "name": "Initech"}).status_code
            == 201
        )
    console.sign_in_with_admin_token()
    console.go("/console/audit")
    rows = console.page.get_by_role("row")
    created = rows.filter(has_text="created user audited@example.com (integrator)")
    assert created.filter(has_text="admin token configured").count() == 1
    assert (
        rows.filter(has_text="audited@example.com")
        .filter(has_text="signed in to the console")
        .count()
        == 1
    )
    assert (
        rows.filter(has_text="POST /api/v1/tenants")
        .filter(has_text="admin token configured")
        .count()
        >= 1
    )
    assert console.unlabelled_fields() == []
    console.screenshot("audit-log")
    with served.client() as api:
        entries = api.get("/api/v1/audit", params={"actor": "audited@example.com"}).json()["items"]
    assert [e["action"] for e in entries] == [
        "signed out of the console",
        "signed in to the console",
    ]


def test_a_user_changes_their_password_on_their_account_page(console: Console, tenant: str) -> None:
    new_password = "a changed console passphrase 73"
    console.sign_in_with_admin_token()
    console.create_user("pat@example.com", "integrator")
    console.sign_out()
    console.sign_in("pat@example.com")
    page = console.page
    page.get_by_role("link", name="pat@example.com · integrator").click()
    page.get_by_role("heading", name="Change your password").wait_for()
    assert console.unlabelled_fields() == []
    page.get_by_label(label("Current password")).fill("not the password at all")
    page.get_by_label(label("New password")).fill(new_password)
    page.get_by_label(label("New password again")).fill(new_password)
    page.get_by_role("button", name="Change password").click()
    assert page.locator("#f-current_password-error").inner_text() == "is not your current password"
    assert page.get_by_label(label("Current password")).get_attribute("aria-invalid") == "true"

    page.get_by_label(label("Current password")).fill(PASSWORD)
    page.get_by_label(label("New password")).fill(new_password)
    page.get_by_label(label("New password again")).fill(new_password)
    page.get_by_role("button", name="Change password").click()
    page.get_by_role("status").filter(has_text="Password changed").wait_for()
    assert not console.scrolls_sideways()
    console.screenshot("account")
    console.sign_out()
    console.sign_in("pat@example.com")
    assert page.get_by_role("alert").filter(has_text="wrong email or password").is_visible()
    console.sign_in("pat@example.com", new_password)
    assert page.get_by_role("heading", name="Welcome, pat@example.com").is_visible()
