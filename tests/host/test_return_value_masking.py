"""A secret a script returns is script output: masked on every surface that shows it (tenant
API answers, the webhook reply, ``module run`` stdout, recordings, ``module test`` reports)
while what is stored is the raw value. Secrets shorter than 8 characters are masked only
where a whole value is the secret, so ordinary data is not corrupted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from host.api.app import create_app
from host.db.models import Campaign, Template
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "sk-live-RETURNED-9f8e7d6c"
UNICODE_SECRET = "пароль-секрет-42€"
SHORT = "pin42"

EMAIL_SCRIPT = """\
import json


def CRM_Marketing_ImportTemplates(offset, limit):
    key = settings["api_key"]
    return [{"externalId": key, "name": "Welcome " + key, "subject": key,
             "html": "<p>" + json.dumps({"k": key}) + "</p>"}]


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "camp-" + settings["api_key"]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    key = settings["api_key"]
    mode = request.query.get("mode", "text")
    if mode == "json":
        body = {"echo": key, key: [key + "!"], "n": 1}
    elif mode == "whole":
        body = key
    else:
        body = "your key is " + key
    return {"response": {"status": 202, "headers": {"WWW-Authenticate": "k=" + key}, "body": body}}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return "<b>" + settings["api_key"] + "</b>"


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "id-" + settings["api_key"]
"""

MESSENGER_SCRIPT = """\
def CRM_Marketing_GetMessengerTypes():
    return ["Telegram"]


def CRM_Marketing_GetMessengerBots():
    return [{"id": settings["api_key"], "name": "Bot " + settings["api_key"], "type": "Telegram"}]
"""

SCHEMA = {
    "type": "object",
    "properties": {"api_key": {"type": "string", "writeOnly": True}},
    "required": ["api_key"],
}


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    packages = [
        (email_manifest(id="mail", settings=SCHEMA, egress=[]), EMAIL_SCRIPT),
        (email_manifest(id="short", settings=SCHEMA, egress=[]), EMAIL_SCRIPT),
        (email_manifest(id="bots", kind="messenger", settings=SCHEMA, egress=[]), MESSENGER_SCRIPT),
    ]
    for manifest, script in packages:
        body = {"manifest": manifest, "script": script}
        instance.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    instance.tenants.create("acme", "Acme")
    instance.tenants.create("short", "Short")
    instance.tenants.configure("acme", "mail", settings={"api_key": SECRET})
    instance.tenants.configure("acme", "bots", settings={"api_key": UNICODE_SECRET})
    instance.tenants.configure("short", "short", settings={"api_key": SHORT})
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host)) as test_client:
        yield test_client


def assert_masked(response: Any, secret: str = SECRET) -> None:
    assert response.status_code < 300, response.text
    for form in (secret, json.dumps(secret)[1:-1]):
        assert form not in response.text
        assert form not in str(response.headers)
    assert "***" in response.text


def test_templates_from_return_values_are_masked_when_shown_and_stored_raw(
    host: Host, client: TestClient
) -> None:
    base = "/api/v1/tenants/acme"
    assert client.post(f"{base}/modules/mail/templates/import", headers=ADMIN).status_code == 200
    listed = client.get(f"{base}/templates", headers=ADMIN)
    assert_masked(listed)
    (template,) = listed.json()
    assert template["externalId"] == "***" and template["name"] == "Welcome ***"
    shown = client.get(f"{base}/templates/{template['id']}", headers=ADMIN)
    html = client.get(f"{base}/templates/{template['id']}/html", headers=ADMIN)
    assert_masked(shown)
    assert_masked(html)
    assert html.json()["html"] == '<p>{"k": "***"}</p>'
    fresh = client.get(f"{base}/templates/{template['id']}/html?refresh=true", headers=ADMIN)
    assert_masked(fresh)
    assert fresh.json()["html"] == "<b>***</b>"

    local = client.post(
        f"{base}/templates", headers=ADMIN, json={"module": "mail", "name": "N", "html": "<i/>"}
    )
    published = client.post(f"{base}/templates/{local.json()['id']}/publish", headers=ADMIN)
    assert_masked(published)
    assert published.json()["externalId"] == "id-***"

    with host.db.transaction() as session:
        rows = {r.name: r for r in session.scalars(select(Template))}
    imported = rows[f"Welcome {SECRET}"]  # stored as returned
    assert (imported.external_id, imported.subject) == (SECRET, SECRET)
    assert imported.html == f"<b>{SECRET}</b>"
    assert rows["N"].external_id == f"id-{SECRET}"


def test_campaign_external_id_is_masked_when_shown(host: Host, client: TestClient) -> None:
    base = "/api/v1/tenants/acme"
    contacts = client.post(
        f"{base}/contacts", headers=ADMIN, json=[{"name": "Ann", "email": "ann@acme.test"}]
    )
    assert contacts.status_code < 300, contacts.text
    draft = {
        "module": "mail",
        "name": "Spring",
        "type": "Email",
        "subject": "Hi",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "contactIds": "all",
        "html": "<p>hi</p>",
    }
    created = client.post(f"{base}/campaigns", headers=ADMIN, json=draft)
    assert created.status_code == 202, created.text
    campaign_id = created.json()["id"]
    deadline = time.monotonic() + 30
    while (
        client.get(f"{base}/campaigns/{campaign_id}", headers=ADMIN).json()["status"] != "Sending"
    ):
        assert time.monotonic() < deadline, "campaign was not created in the service"
        time.sleep(0.05)
    shown = client.get(f"{base}/campaigns/{campaign_id}", headers=ADMIN)
    listed = client.get(f"{base}/campaigns", headers=ADMIN)
    assert_masked(shown)
    assert_masked(listed)
    assert shown.json()["externalId"] == "camp-***"
    with host.db.transaction() as session:
        assert session.scalar(select(Campaign.external_id)) == f"camp-{SECRET}"


def test_messenger_bots_mask_a_unicode_secret(client: TestClient) -> None:
    bots = client.get("/api/v1/tenants/acme/modules/bots/messenger/bots", headers=ADMIN)
    assert_masked(bots, UNICODE_SECRET)
    assert bots.json()["bots"][0]["name"] == "Bot ***"


@pytest.mark.parametrize(
    ("mode", "body"),
    [
        ("text", b"your key is ***"),
        ("whole", b"***"),
        ("json", b'{"echo": "***", "***": ["***!"], "n": 1}'),
    ],
)
def test_the_webhook_reply_masks_body_and_headers(
    host: Host, client: TestClient, mode: str, body: bytes
) -> None:
    url = host.tenants.enablement("acme", "mail").webhook_url.split("crm.example.test", 1)[1]
    reply = client.post(f"{url}?mode={mode}", content=b"{}")
    assert reply.status_code == 202
    assert reply.content == body
    assert reply.headers["www-authenticate"] == "k=***"
    assert SECRET not in str(reply.headers)


def test_a_short_secret_is_masked_only_as_a_whole_value(host: Host, client: TestClient) -> None:
    url = host.tenants.enablement("short", "short").webhook_url.split("crm.example.test", 1)[1]
    whole = client.post(f"{url}?mode=whole", content=b"{}")
    inside = client.post(f"{url}?mode=text", content=b"{}")
    assert whole.content == b"***"
    assert inside.content == f"your key is {SHORT}".encode()  # not corrupted
    assert inside.headers["www-authenticate"] == f"k={SHORT}"


# ---------------------------------------------------------------------------------- CLI

FETCH_SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    key = settings["api_key"]
    log("key", key)
    answer = fetch(settings["base_url"] + "/t", method="POST", json={"key": key}).json()
    return [{"externalId": answer["id"], "name": key}]
"""


@pytest.fixture
def service() -> Iterator[str]:
    """A service that echoes what it was sent (as services do with account ids)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"id": "tpl-" + sent["key"]}).encode()  # ensure_ascii escapes
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write_module(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = email_manifest(
        id="echoer",
        egress=["127.0.0.1"],
        settings={
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "writeOnly": True},
                "base_url": {"type": "string"},
            },
        },
    )
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "module.py").write_text(FETCH_SCRIPT)
    return root


def assert_nowhere(text: str) -> None:
    for form in (UNICODE_SECRET, json.dumps(UNICODE_SECRET)[1:-1]):
        assert form not in text


def test_module_run_stdout_and_recording_mask_returned_secrets(
    tmp_path: Path, service: str
) -> None:
    module = write_module(tmp_path / "echoer")
    tape = tmp_path / "tape.json"
    settings = json.dumps({"api_key": UNICODE_SECRET, "base_url": f"http://{service}"})
    cli = Cli.in_dir(tmp_path)
    run = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "10",
        "--settings", settings, "--allow-host", service, "--record", str(tape), "--show-log",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [{"externalId": "tpl-***", "name": "***"}]
    recording = tape.read_text(encoding="utf-8")
    for text in (run.stdout, run.stderr, recording):
        assert_nowhere(text)
    exchange = json.loads(recording)["exchanges"][0]
    assert exchange["request"]["body"] == '{"key": "***"}'
    assert json.loads(exchange["response"]["body"]) == {"id": "tpl-***"}

    # the masked recording still replays (under the waiver its loopback address needs)
    replayed = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "10",
        "--settings", settings, "--replay", str(tape), "--allow-host", service,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == [{"externalId": "tpl-***", "name": "***"}]


def test_module_test_report_masks_returned_secrets(tmp_path: Path) -> None:
    module = write_module(tmp_path / "echoer")
    (module / "module.py").write_text(
        "def CRM_Marketing_ImportTemplates(offset, limit):\n"
        "    log('using', settings['api_key'])\n"
        "    return [{'externalId': 't1', 'name': settings['api_key']}]\n"
    )
    (module / "tests").mkdir()
    case = {
        "name": "names",
        "function": "ImportTemplates",
        "args": [0, 10],
        "settings": {"api_key": UNICODE_SECRET},
        "returns": [{"externalId": "t1", "name": "something else"}],
    }
    (module / "tests" / "names.json").write_text(json.dumps(case, ensure_ascii=False))
    report = Cli.in_dir(tmp_path).run("module", "test", str(module))
    assert report.returncode == 1, report.stdout + report.stderr
    assert "tests/names.json::names FAILED" in report.stdout
    assert '+    "name": "***"' in report.stdout  # the diff shows the masked value
    assert "using ***" in report.stdout  # and the captured log
    assert_nowhere(report.stdout + report.stderr)
