"""The script editor in a real browser: an integrator opens a module's *Scripts* tab, breaks
the script and sees the syntax error at its line, fixes it, runs a function on scratch
storage and sees its result, log and fetches, and saves the edit as a new version (the old
one unchanged).

This is the textarea editor, the default of a plain install: ``?editor=plain`` keeps it when
the optional rich editor is built too (that one: ``test_rich_script_editor_journey.py``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.console.conftest import Console, label
from tests.e2e.server import RunningHost, running_host
from tests.host.conftest import email_manifest

SCRIPT = """\
import json


def CRM_Marketing_ImportTemplates(offset, limit):
    response = fetch(settings["base"] + "/healthz")
    log("health answered " + str(response.status))
    return [{"externalId": "t1", "name": "Health " + str(response.status)}]


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "x", "status": "Sent"}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    return {"actions": json.loads(request.body or "[]")}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return "<p>hi</p>"


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""
PLAIN = "/console/modules/healthmail/scripts?editor=plain"
SETTINGS = {
    "type": "object",
    "properties": {"base": {"type": "string", "format": "uri"}},
    "required": ["base"],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    """The host may fetch its own 127.0.0.1 address (the platform admin's egress waiver), so
    a run's fetch really happens and is logged."""
    workdir = tmp_path_factory.mktemp("console-scripts")
    with running_host(
        workdir, CRM_HOST_SANDBOX_WORKERS="1", CRM_HOST_EGRESS_ALLOW="127.0.0.1"
    ) as host:
        manifest = email_manifest(id="healthmail", egress=["127.0.0.1"], settings=SETTINGS)
        with host.client() as api:
            answer = api.post("/api/v1/modules", json={"manifest": manifest, "script": SCRIPT})
            assert answer.status_code == 201, answer.text
        yield host


def _versions(served: RunningHost) -> list[str]:
    with served.client() as api:
        return [v["version"] for v in api.get("/api/v1/modules/healthmail").json()["versions"]]


def test_integrator_fixes_a_syntax_error_runs_a_function_and_saves_a_version(
    console: Console, served: RunningHost
) -> None:
    console.sign_in_with_admin_token()
    console.create_user("ivy@example.com", "integrator")
    console.sign_out()
    console.sign_in("ivy@example.com")
    page = console.page
    console.go(PLAIN)
    assert page.get_by_role("heading", name="healthmail scripts").is_visible()
    editor = page.get_by_label("Script (module.py)")
    broken = SCRIPT.replace(
        "def CRM_Marketing_ExportContacts(contactIds):",
        "def CRM_Marketing_ExportContacts(contactIds)",
    )
    editor.fill(broken)
    page.get_by_role("button", name="Validate").click()
    marker = page.locator("#L10 .marker.error")
    marker.wait_for()
    assert "SyntaxError" in marker.inner_text()
    assert page.locator("tr.marked").count() == 1
    assert console.unlabelled_fields() == []
    console.screenshot("script-editor-error")

    page.get_by_label("Script (module.py)").fill(SCRIPT)
    page.get_by_role("button", name="Validate").click()
    page.get_by_role("status").filter(has_text="Validation passed").wait_for()
    assert page.locator(".marker.error").count() == 0
    # the loopback egress entry works here only through the admin's waiver: a warning
    warnings = page.get_by_role("list", name="Problems not at a script line")
    assert "127.0.0.1 is a loopback address" in warnings.inner_text()

    page.get_by_label("Function").select_option("CRM_Marketing_ImportTemplates")
    page.get_by_label("Arguments (JSON array)").fill("[0, 10]")
    page.get_by_label("Settings (JSON object)").fill(json.dumps({"base": served.url}))
    page.get_by_role("button", name="Run function").click()
    result = page.get_by_role("region", name="Run of CRM_Marketing_ImportTemplates")
    result.wait_for()
    assert '"name": "Health 200"' in result.locator("pre.result").inner_text()
    assert "health answered 200" in result.locator("pre.log").inner_text()
    fetch = result.get_by_role("row").filter(has_text=f"{served.url}/healthz")
    assert fetch.filter(has_text="GET").filter(has_text="200").count() == 1
    console.screenshot("script-editor-run")

    page.get_by_label(label("New version")).fill("1.0.1")
    page.get_by_label("Script (module.py)").fill(SCRIPT.replace("Health ", "Healthy "))
    page.get_by_role("button", name="Save as new version").click()
    page.get_by_role("status").filter(has_text="Saved healthmail@1.0.1").wait_for()
    assert _versions(served) == ["1.0.0", "1.0.1"]
    with served.client() as api:
        old = api.get("/api/v1/modules/healthmail/versions/1.0.0").json()
        new = api.get("/api/v1/modules/healthmail/versions/1.0.1").json()
    assert old["script"] == SCRIPT
    assert new["script"] == SCRIPT.replace("Health ", "Healthy ")


def test_bad_run_input_and_a_used_version_are_refused_and_change_nothing(
    console: Console, served: RunningHost
) -> None:
    console.sign_in_with_admin_token()
    page = console.page
    console.go(PLAIN + "&version=1.0.0")
    page.get_by_label("Arguments (JSON array)").fill("[0,")
    with page.expect_response(re.compile(r"/scripts")) as answer:
        page.get_by_role("button", name="Run function").click()
    assert answer.value.status == 422
    assert page.get_by_role("alert").filter(has_text="arguments is not valid JSON").is_visible()
    assert page.get_by_label("Arguments (JSON array)").get_attribute("aria-invalid") == "true"

    page.get_by_label("Arguments (JSON array)").fill("[0, 10]")
    page.get_by_label("Settings (JSON object)").fill('{"base": 5}')
    page.get_by_role("button", name="Run function").click()
    assert page.get_by_role("alert").filter(has_text="settings").is_visible()
    assert page.get_by_role("region", name=re.compile("Run of")).count() == 0

    before = _versions(served)
    page.get_by_label(label("New version")).fill("1.0.0")
    page.get_by_label("Script (module.py)").fill(SCRIPT + "\n# changed\n")
    with page.expect_response(re.compile(r"/scripts")) as answer:
        page.get_by_role("button", name="Save as new version").click()
    assert answer.value.status == 409
    assert page.get_by_role("alert").filter(has_text="versions are immutable").is_visible()
    assert _versions(served) == before
    # the page keeps serving
    console.go("/console/modules/healthmail/scripts")
    assert page.get_by_role("heading", name="healthmail scripts").is_visible()


def test_a_marketer_cannot_open_the_script_editor(console: Console, served: RunningHost) -> None:
    with served.client() as api:
        api.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"})
    console.sign_in_with_admin_token()
    console.create_user("mo@example.com", "marketer", tenant="acme")
    console.sign_out()
    console.sign_in("mo@example.com")
    response = console.page.goto(served.url + "/console/modules/healthmail/scripts")
    assert response is not None and response.status == 403
    assert "CRM_Marketing_ImportTemplates" not in console.page.content()
