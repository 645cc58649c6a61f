"""The console's shadow-run page, through HTTP: acme runs SendGrid 1.0.0 and received two
webhooks; an admin shadows a changed 1.1.0 (group unsubscribes become global) from the
tenant's module page and sees the differing action, a leaking version shows its error,
refused fetch and unstored write with the secret masked; other roles, posts without CSRF and
bad input are refused — and none of it stores anything."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from host.accounts import UserInfo
from host.api.app import create_app
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, make_host, table_dump
from tests.host.console_client import (
    FAST_HASHER,
    ConsoleVisitor,
    csrf_in,
    make_user,
    signed_in_admin,
    signed_in_user,
)
from tests.host.test_shadow_runs import (
    API_KEY,
    GLOBAL_UNSUBSCRIBE,
    GROUP_UNSUBSCRIBE,
    MODULE_DIR,
    data_tables,
    event,
    hostile,
    sendgrid,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODULE_PAGE = "/console/tenants/acme/modules/sendgrid"
PAGE = f"{MODULE_PAGE}/shadow"

LEAKING = """
def CRM_Marketing_ParseWebhookRequest(request):
    try:
        fetch("https://api.sendgrid.com/v3/marketing/contacts?key=" + settings["api_key"])
    except Exception:
        pass
    if "group_unsubscribe" in request.body:
        raise ValueError("cannot parse with " + settings["api_key"])
    storage.set("seen", settings["api_key"])
    return {"actions": [{"type": "Unsubscribe", "email": "p0@example.test",
                         "externalId": settings["api_key"]}], "response": {"status": 200}}
"""
"""Leaks the tenant's API key everywhere a shadow run reports: a fetch URL, a storage
write and an action (the delivered request), an error (the unsubscribe)."""


class World:
    def __init__(self, host: Host, app: FastAPI, users: dict[str, UserInfo]) -> None:
        self.host = host
        self.app = app
        self.users = users


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pool: SandboxPool) -> Iterator[World]:
    host = make_host(tmp_path_factory.mktemp("console-shadow") / "host.db", sandbox=pool)
    host.accounts.hasher = FAST_HASHER
    app = create_app(host)
    with TestClient(app) as client:
        changed = (
            (MODULE_DIR / "module.py").read_text().replace(GROUP_UNSUBSCRIBE, GLOBAL_UNSUBSCRIBE)
        )
        for body in (sendgrid("1.0.0"), sendgrid("1.1.0", changed), hostile("6.6.8", LEAKING)):
            assert client.post("/api/v1/modules", json=body, headers=ADMIN).status_code == 201
        host.tenants.create("acme", "Acme")
        enabled = client.put(
            "/api/v1/tenants/acme/modules/sendgrid",
            json={"version": "1.0.0", "settings": {"api_key": API_KEY}},
            headers=ADMIN,
        )
        assert enabled.status_code == 200, enabled.text
        hook = urlsplit(enabled.json()["webhookUrl"]).path
        for body in (
            [event("delivered", "p0@example.test", "e-d0")],
            [event("group_unsubscribe", "p1@example.test", "e-g1", asm_group_id=7)],
        ):
            assert client.post(hook, content=json.dumps(body)).status_code == 200
    users = {
        "integrator": make_user(host, "ivy@example.com", "integrator"),
        "marketer": make_user(host, "mia@example.com", "marketer", "acme"),
    }
    yield World(host, app, users)
    host.close()


@pytest.fixture(scope="module")
def admin(world: World) -> ConsoleVisitor:
    return signed_in_admin(world.app)


def run(visitor: ConsoleVisitor, **form: str) -> tuple[int, str]:
    page = visitor.http.get(PAGE)
    assert page.status_code == 200, page.text
    answer = visitor.post(PAGE, {"csrf_token": csrf_in(page.text), **form})
    return answer.status_code, answer.text


def test_an_admin_shadows_a_changed_version_and_sees_the_differing_action(
    world: World, admin: ConsoleVisitor
) -> None:
    module_page = admin.http.get(MODULE_PAGE)
    assert f'href="{PAGE}"' in module_page.text  # linked from the tenant's module page
    form = admin.http.get(PAGE)
    assert form.status_code == 200
    for version in ("1.0.0", "1.1.0", "6.6.8"):
        assert f'<option value="{version}"' in form.text
    before = data_tables(world.host)
    status, page = run(admin, version="1.1.0", since="", until="", limit="100")
    assert status == 200, page
    assert "<dt>Shadowed version</dt><dd>1.1.0</dd>" in page
    assert "<dt>Compared with</dt><dd>1.0.0 (pinned)</dd>" in page
    assert "<dt>Same</dt><dd>1</dd>" in page and "<dt>Differs</dt><dd>1</dd>" in page
    verdicts = re.findall(r'<span class="badge (?:on|off)">(same|differs|no baseline)</span>', page)
    assert verdicts == ["same", "differs"]  # oldest first
    only_current, only_candidate = re.findall(
        r"<h3>Only the (?:current|shadowed) version</h3>\s*<pre class=\"log\">(.*?)</pre>",
        page,
        re.S,
    )
    assert json.loads(only_current.replace("&#34;", '"')) == [
        {"type": "Unsubscribe", "email": "p1@example.test", "externalId": "7", "eventId": "e-g1"}
    ]
    assert json.loads(only_candidate.replace("&#34;", '"'))[0]["externalId"] == {"all": True}
    assert data_tables(world.host) == before  # no action, receipt or storage kept
    audited = table_dump(world.host)["audit_log"]
    assert any("shadow-ran module sendgrid@1.1.0 for tenant acme" in str(row) for row in audited)


def test_a_failing_version_shows_its_error_refused_fetch_and_unstored_write_masked(
    world: World, admin: ConsoleVisitor
) -> None:
    before = data_tables(world.host)
    status, page = run(admin, version="6.6.8")
    assert status == 200, page
    assert "<dt>Differs</dt><dd>2</dd>" in page
    assert "script_error" in page and "cannot parse with ***" in page  # the unsubscribe
    refused = "<li><code>GET https://api.sendgrid.com/v3/marketing/contacts?key=***</code></li>"
    assert page.count(refused) == 2  # never made, each listed
    assert page.count("<li><code>seen</code></li>") == 1  # the delivered one's, not stored
    assert '"externalId": "***"' in page.replace("&#34;", '"')
    assert API_KEY not in page
    assert data_tables(world.host) == before
    assert "seen" not in world.host.module_storage.load("acme", "sendgrid")


@pytest.mark.parametrize("role", ["integrator", "marketer"])
def test_an_integrator_or_a_marketer_is_refused(world: World, role: str) -> None:
    visitor = signed_in_user(world.app, world.users[role])
    before = data_tables(world.host)
    assert visitor.http.get(PAGE).status_code == 403
    answer = visitor.post(PAGE, {"csrf_token": visitor.csrf(), "version": "1.1.0"})
    assert answer.status_code == 403
    assert "Shadowed version" not in answer.text
    assert data_tables(world.host) == before
    assert f'href="{PAGE}"' not in visitor.http.get("/console/tenants/acme").text


def test_a_post_without_its_csrf_token_is_refused(world: World, admin: ConsoleVisitor) -> None:
    other = signed_in_admin(world.app)
    before = table_dump(world.host)  # the audit log too: a refused post is not recorded
    for form in ({"version": "1.1.0"}, {"version": "1.1.0", "csrf_token": other.csrf()}):
        answer = admin.post(PAGE, form)
        assert answer.status_code == 403, answer.text
        assert "CSRF" in answer.text and "Shadowed version" not in answer.text
    assert table_dump(world.host) == before
    assert admin.http.get(PAGE).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"version": "1.1.0", "limit": "many"}, "limit", "a whole number from 1 to 1000"),
        ({"version": "1.1.0", "limit": "0"}, "limit", "must be between 1 and 1000"),
        ({"version": "1.1.0", "limit": "1001"}, "limit", "must be between 1 and 1000"),
        ({"version": "1.1.0", "since": "soon"}, "since", "a date and time (UTC)"),
        (
            {"version": "1.1.0", "since": "2030-01-01T00:00", "until": "2029-01-01T00:00"},
            "until",
            "must be after since",
        ),
        ({"version": "9.9.9"}, "version", "9.9.9"),
        ({"version": ""}, "version", "is required"),
    ],
)
def test_bad_input_is_shown_at_its_field_and_nothing_is_stored(
    world: World, admin: ConsoleVisitor, form: dict[str, str], field: str, message: str
) -> None:
    before = table_dump(world.host)
    status, page = run(admin, **form)
    assert status == 422, page
    error = re.search(rf'<p class="field-error" id="f-{field}-error">([^<]*)</p>', page)
    assert error is not None and message in error.group(1), page
    assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', page)
    assert "Shadowed version" not in page
    assert table_dump(world.host) == before  # nothing ran, nothing audited


def test_a_window_without_requests_shows_the_empty_state(admin: ConsoleVisitor) -> None:
    status, page = run(admin, version="1.1.0", until="2000-01-01T00:00")
    assert status == 200, page
    assert "<dd>0 (0 ran)</dd>" in page
    assert 'class="empty">No stored webhook request of sendgrid is in this window.' in page


def test_an_unknown_module_page_is_a_404_page(admin: ConsoleVisitor) -> None:
    answer = admin.http.get("/console/tenants/acme/modules/nosuch/shadow")
    assert answer.status_code == 404 and "text/html" in answer.headers["content-type"]
    assert admin.post("/console/tenants/acme/modules/nosuch/shadow", {
        "csrf_token": admin.csrf(), "version": "1.0.0"
    }).status_code == 404  # fmt: skip


def test_a_disabled_module_is_refused_on_the_form(world: World, admin: ConsoleVisitor) -> None:
    """Runs last: it disables acme's SendGrid (its settings are the enabled ones) and
    enables it again."""
    world.host.tenants.configure("acme", "sendgrid", enabled=False, settings_mode="patch")
    try:
        before = data_tables(world.host)
        status, page = run(admin, version="1.1.0")
        assert status == 409, page
        assert '<div class="errors" role="alert"' in page
        assert "module sendgrid is disabled for tenant acme" in page
        assert "Shadowed version" not in page
        assert data_tables(world.host) == before
    finally:
        world.host.tenants.configure("acme", "sendgrid", enabled=True, settings_mode="patch")
