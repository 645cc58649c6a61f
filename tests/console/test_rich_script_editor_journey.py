"""The rich script editor (CodeMirror, the optional build of ``console-editor/``) in a real
browser: typed into with the keyboard, Validate shows the syntax error at its line inside the
editor, the fix is typed (and a line the lint warns of, shown at its line), and Save stores a version with exactly the typed text; Tab indents
and Escape-then-Tab leaves the editor; the page's CSP holds (nothing refused) and nothing
scrolls sideways at 390 px.

It needs the build (``npm ci --prefix console-editor && npm run build --prefix
console-editor``); without it these tests skip with that reason, unless
``CRM_HOST_TEST_EDITOR`` is ``required`` (as in ``.ci/run``), where a missing build fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from host.console.pages.scripts import EDITOR_BUNDLE
from tests.console.conftest import Console, label, new_console
from tests.console.test_script_editor_journey import SCRIPT, SETTINGS
from tests.e2e.server import RunningHost, running_host
from tests.host.conftest import email_manifest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

BROKEN_LINE = 10
"""``def CRM_Marketing_ExportContacts(contactIds):``, whose colon the journey deletes."""
ADDED = '    return settings.get("colour")'
"""Typed (after a Tab) on the script's last, empty line: valid, but reading an undeclared
setting, which the lint warns of at that line."""
ADDED_LINE = len(SCRIPT.splitlines()) + 1


@pytest.fixture(scope="module", autouse=True)
def editor_built() -> None:
    if not Path(str(EDITOR_BUNDLE)).is_file():
        reason = (
            "the rich script editor is not built: "
            "npm ci --prefix console-editor && npm run build --prefix console-editor"
        )
        if os.environ.get("CRM_HOST_TEST_EDITOR") == "required":
            pytest.fail(f"CRM_HOST_TEST_EDITOR=required but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    with running_host(
        tmp_path_factory.mktemp("console-rich-editor"), CRM_HOST_SANDBOX_WORKERS="1"
    ) as host:
        with host.client() as api:
            manifest = email_manifest(id="richmail", settings=SETTINGS)
            answer = api.post("/api/v1/modules", json={"manifest": manifest, "script": SCRIPT})
            assert answer.status_code == 201, answer.text
        yield host


def _refusals(page: Page) -> list[str]:
    """What the browser refused or failed on while the test ran: CSP violations are console
    errors, script failures page errors (a page answered with a 4xx, as a failed Validate
    is, is logged as an error too, and is no failure here)."""
    seen: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            seen.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.append(str(error)))
    return seen


def _go_to_line_end(page: Page, number: int) -> None:
    page.keyboard.press("Control+Home")
    for _ in range(number - 1):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("End")


def test_typing_validating_fixing_and_saving_in_the_rich_editor(
    console: Console, served: RunningHost
) -> None:
    page = console.page
    refused = _refusals(page)
    console.sign_in_with_admin_token()
    response = page.goto(served.url + "/console/modules/richmail/scripts")
    assert response is not None and "nonce-" in response.headers["content-security-policy"]
    editor = page.get_by_role("textbox", name="Script (module.py)")
    editor.wait_for()
    assert page.locator("textarea#f-script").is_hidden()
    assert page.locator("table.code").is_hidden()
    assert page.locator(".cm-gutters .cm-lineNumbers").is_visible()
    # Python highlighting: a keyword is coloured apart from the plain text around it
    keyword = page.locator(".cm-content span").get_by_text("def", exact=True).first
    colour = "e => getComputedStyle(e).color"
    assert keyword.evaluate(colour) != page.locator(".cm-content").evaluate(colour)
    assert "Escape, then Tab" in page.get_by_text("Tab indents").inner_text()
    assert "f-script-keys" in (editor.get_attribute("aria-describedby") or "").split()

    editor.click()
    _go_to_line_end(page, BROKEN_LINE)
    page.keyboard.press("Backspace")
    page.get_by_role("button", name="Validate").click()
    note = page.locator(".cm-content .marker.error")
    note.wait_for()
    assert "SyntaxError" in note.inner_text()
    assert note.count() == 1
    # the note sits under the broken line, and the lint gutter marks that line
    above = note.evaluate("n => n.previousElementSibling.textContent")
    assert above == "def CRM_Marketing_ExportContacts(contactIds)"
    assert page.locator(".cm-lint-marker-error").count() == 1
    assert page.locator(".cm-lintRange-error").count() >= 1
    assert console.unlabelled_fields() == []
    console.screenshot("script-editor-rich-error")

    # the fix, and a line indented with Tab, typed in (brackets and quotes close themselves,
    # and typing the closing ones steps over them)
    page.get_by_role("textbox", name="Script (module.py)").click()
    _go_to_line_end(page, BROKEN_LINE)
    page.keyboard.type(":")
    page.keyboard.press("Control+End")
    page.keyboard.press("Tab")
    page.keyboard.type(ADDED.strip())
    assert page.evaluate("document.activeElement.classList.contains('cm-content')")
    # Escape then Tab leaves the editor for the next control: the keyboard is not trapped
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Validate"
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="Validation passed").wait_for()
    assert page.locator(".marker.error").count() == 0
    warning = page.locator(".cm-content .marker.warning")
    assert warning.count() == 1
    assert "settings.get('colour')" in warning.inner_text()
    assert f"warning at line {ADDED_LINE}" in warning.inner_text()
    assert warning.evaluate("n => n.previousElementSibling.textContent") == ADDED
    assert page.locator(".cm-lint-marker-warning").count() == 1

    page.get_by_label(label("New version")).fill("1.0.1")
    page.get_by_role("button", name="Save as new version").click()
    page.get_by_role("status").filter(has_text="Saved richmail@1.0.1").wait_for()
    with served.client() as api:
        versions = api.get("/api/v1/modules/richmail").json()["versions"]
        saved = api.get("/api/v1/modules/richmail/versions/1.0.1").json()
        old = api.get("/api/v1/modules/richmail/versions/1.0.0").json()
    assert [v["version"] for v in versions] == ["1.0.0", "1.0.1"]
    assert saved["script"] == SCRIPT + ADDED
    assert old["script"] == SCRIPT
    assert refused == []


def test_the_rich_editor_fits_a_phone_and_serves_the_built_file(
    browser: Browser, served: RunningHost, screenshots: Path
) -> None:
    context, console = new_console(
        browser, served, screenshots, viewport={"width": 390, "height": 800}
    )
    try:
        page = console.page
        refused = _refusals(page)
        console.sign_in_with_admin_token()
        console.go("/console/modules/richmail/scripts?version=1.0.0")
        page.get_by_role("textbox", name="Script (module.py)").wait_for()
        assert not console.scrolls_sideways()
        console.screenshot("script-editor-rich-390")
        bundle = page.request.get(served.url + "/console/static/editor/editor.js")
        assert bundle.ok and bundle.body() == Path(str(EDITOR_BUNDLE)).read_bytes()
        assert refused == []
    finally:
        context.close()
    assert console.outside_requests == []
