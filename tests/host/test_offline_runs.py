"""Every function offline: ``module run --contacts/--storage`` and ``module test`` cases with
``contacts``, ``storage``/``storageAfter`` and form, raw-body and raw-HTTP webhook requests,
all through the real ``crm-host`` command and its sandbox."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.cli_runner import Cli

VENDOR = Path(__file__).parents[1] / "fixtures" / "vendor"

MANIFEST = {
    "id": "offline-mail",
    "name": "Offline Mail",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "egress": ["api.acme.test"],
    "settings": {
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True, "description": "API key"},
        },
        "required": ["api_key"],
    },
}

SCRIPT = """\
import hashlib

def CRM_Marketing_ExportContacts(contactIds):
    people = crm.contacts(contactIds)
    storage.set("exported", [[p["id"], p["email"], p["status"]] for p in people])

def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    storage.set("batch:" + campaignId, contacts, durable=True)
    storage.set("pending", campaignId)
    if not contacts:
        raise ValueError("empty batch")

def CRM_Marketing_CreateCampaign(request):
    batch = storage.get("batch:" + request.campaignId)
    if batch is None:
        raise ValueError("nothing prepared for " + request.campaignId)
    storage.delete("pending")
    return {"externalId": "ext-" + request.campaignId + "-" + str(len(batch))}

def CRM_Marketing_ParseWebhookRequest(request):
    raw = request.body.encode(request.headers["x-crm-host-body-encoding"])
    seen = [request.method, request.headers.get("content-type", ""),
            request.headers.get("x-telegram-bot-api-secret-token", ""),
            hashlib.sha256(raw).hexdigest(), request.query]
    return {"response": {"status": 200, "body": seen}}
"""

SETTINGS = '{"api_key": "k-123"}'
CONTACTS = [
    {"id": "c1", "name": "Ann", "email": "ann@x.test"},
    {"id": "c2", "name": "Bob", "email": "bob@x.test", "status": "Unsubscribed"},
]
REQUEST = json.dumps(
    {
        "campaignId": "42",
        "name": "Spring",
        "type": "Email",
        "subject": "Hi",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
    }
)


@pytest.fixture
def module(tmp_path: Path) -> Path:
    root = tmp_path / "offline-mail"
    (root / "tests").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    (root / "module.py").write_text(SCRIPT, encoding="utf-8")
    (tmp_path / "contacts.json").write_text(json.dumps(CONTACTS), encoding="utf-8")
    return root


def run(cli: Cli, *args: str) -> tuple[int, str, str]:
    result = cli.run("module", "run", "offline-mail", *args, "--settings", SETTINGS)
    return result.returncode, result.stdout, result.stderr


def test_export_contacts_reads_the_contacts_file_as_the_host_serves_them(module: Path) -> None:
    cli = Cli.in_dir(module.parent)
    # asked order, duplicates once, unknown ids left out, status defaulted
    code, _, stderr = run(
        cli,
        "ExportContacts",
        '["c2", "unknown", "c1", "c2"]',
        "--contacts",
        "contacts.json",
        "--storage",
        "storage.json",
    )
    assert code == 0, stderr
    stored = json.loads((module.parent / "storage.json").read_text())
    assert stored == {
        "exported": [["c2", "bob@x.test", "Unsubscribed"], ["c1", "ann@x.test", "Subscribed"]]
    }
    # more ids than the host serves per call: the same limit error as on a server
    too_many = json.dumps([f"c{i}" for i in range(1001)])
    code, _, stderr = run(cli, "ExportContacts", too_many, "--contacts", "contacts.json")
    assert code == 1
    assert stderr.startswith("error: limit_exceeded: ") and "at most 1000 ids" in stderr


def test_storage_file_carries_prepare_into_create_and_a_failure_keeps_only_durable_writes(
    module: Path,
) -> None:
    cli = Cli.in_dir(module.parent)
    state = module.parent / "state" / "storage.json"
    state.parent.mkdir()
    code, stdout, stderr = run(cli, "CreateCampaign", REQUEST, "--storage", str(state))
    assert code == 1 and "nothing prepared for 42" in stderr
    assert not state.exists(), "a failed call writes no storage"

    code, _, stderr = run(
        cli, "PrepareCampaign", '"42"', '"Email"', '["a@x.test"]', "--storage", str(state)
    )
    assert code == 0, stderr
    assert json.loads(state.read_text()) == {"batch:42": ["a@x.test"], "pending": "42"}
    code, stdout, stderr = run(cli, "CreateCampaign", REQUEST, "--storage", str(state))
    assert code == 0, stderr
    assert json.loads(stdout) == {"externalId": "ext-42-1"}
    assert json.loads(state.read_text()) == {"batch:42": ["a@x.test"]}

    # fails after a durable write: that write is kept, the ordinary one is not
    code, _, stderr = run(cli, "PrepareCampaign", '"43"', '"Email"', "[]", "--storage", str(state))
    assert code == 1 and stderr.strip() == "error: script_error: ValueError: empty batch (line 11)"
    assert json.loads(state.read_text()) == {"batch:42": ["a@x.test"], "batch:43": []}
    assert [p.name for p in state.parent.iterdir()] == ["storage.json"], "no temporary left"


def test_bad_contacts_and_storage_files_are_one_usage_line_naming_file_and_key(
    module: Path,
) -> None:
    cli = Cli.in_dir(module.parent)
    folder = module.parent
    (folder / "broken.json").write_text('{"a": ', encoding="utf-8")
    (folder / "list.json").write_text("[1, 2]", encoding="utf-8")
    (folder / "people.json").write_text(
        json.dumps([{"id": "c1"}, {"id": "c2", "name": "B", "status": "Gone", "age": 3}]),
        encoding="utf-8",
    )
    before = (folder / "broken.json").read_text()
    cases = [
        (("--storage", "broken.json"), "error: --storage: storage file is not JSON: broken.json:1"),
        (("--storage", "list.json"), "error: --storage: storage is invalid: list.json: must be"),
        (("--contacts", "missing.json"), "error: --contacts: contacts file not found: missing"),
        (("--contacts", "broken.json"), "error: --contacts: contacts file is not JSON: broken"),
    ]
    for option, expected in cases:
        code, stdout, stderr = run(cli, "ExportContacts", '["c1"]', *option)
        assert code == 2, (option, stderr)
        assert stderr.startswith(expected) and len(stderr.strip().splitlines()) == 1, stderr
        assert stdout == "" and "Traceback" not in stderr
    code, _, stderr = run(cli, "ExportContacts", '["c1"]', "--contacts", "people.json")
    assert code == 2
    for where in ("people.json[0]: name", "people.json[1].age: unknown key", "people.json[1]:"):
        assert where in stderr, stderr
    assert (folder / "broken.json").read_text() == before, "a bad storage file is not replaced"


def write_cases(module: Path, name: str, cases: list[dict[str, object]]) -> None:
    (module / "tests" / name).write_text(json.dumps(cases), encoding="utf-8")


def test_cases_state_contacts_and_storage_before_and_after(module: Path) -> None:
    (module / "tests" / "people.json").write_text(json.dumps(CONTACTS), encoding="utf-8")
    settings = {"api_key": "k-123"}
    write_cases(
        module,
        "campaign.json",
        [
            {
                "name": "export reads the contacts of the case",
                "function": "ExportContacts",
                "args": [["c2", "c1"]],
                "settings": settings,
                "contacts": "people.json",
                "returns": None,
                "storageAfter": {
                    "exported": [
                        ["c2", "bob@x.test", "Unsubscribed"],
                        ["c1", "ann@x.test", "Subscribed"],
                    ]
                },
            },
            {
                "name": "create sees what prepare stored",
                "function": "CreateCampaign",
                "args": [json.loads(REQUEST)],
                "settings": settings,
                "storage": {"batch:42": ["a@x.test", "b@x.test"], "pending": "42"},
                "returns": {"externalId": "ext-42-2"},
                "storageAfter": {"batch:42": ["a@x.test", "b@x.test"]},
            },
            {
                "name": "a failed prepare keeps its durable write only",
                "function": "PrepareCampaign",
                "args": ["43", "Email", []],
                "settings": settings,
                "error": {"kind": "script_error", "message": "empty batch"},
                "storageAfter": {"batch:43": []},
            },
            {
                "name": "wrong storage after",
                "function": "PrepareCampaign",
                "args": ["44", "Email", ["x@x.test"]],
                "settings": settings,
                "contacts": [{"id": "c9", "name": "Nine"}],
                "returns": None,
                "storageAfter": {"batch:44": ["x@x.test"]},
            },
        ],
    )
    result = Cli.in_dir(module.parent).run("module", "test", "offline-mail")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert "tests/campaign.json::export reads the contacts of the case PASSED" in lines
    assert "tests/campaign.json::create sees what prepare stored PASSED" in lines
    assert "tests/campaign.json::a failed prepare keeps its durable write only PASSED" in lines
    assert "tests/campaign.json::wrong storage after FAILED" in lines
    assert "the storage left behind differs from storageAfter" in result.stdout
    assert '+  "pending": "44"' in result.stdout


def test_bad_contacts_storage_and_webhook_keys_are_reported_at_once(module: Path) -> None:
    write_cases(
        module,
        "broken.json",
        [
            {
                "function": "ExportContacts",
                "args": [["c1"]],
                "contacts": [{"id": "c1", "name": "A", "mobile": "1"}],
                "storage": [],
                "storageAfter": 3,
                "returns": None,
            },
            {
                "function": "ParseWebhookRequest",
                "args": [{"form": {"a": 1}, "headers": {"x": 2}}],
                "returns": {},
            },
            {"function": "ParseWebhookRequest", "args": [{"http": "nope.http"}], "returns": {}},
            {
                "function": "ExportContacts",
                "args": [["c1"]],
                "contacts": "gone.json",
                "returns": None,
            },
        ],
    )
    result = Cli.in_dir(module.parent).run("module", "test", "offline-mail")
    assert result.returncode == 1
    for expected in (
        "tests/broken.json: $[0].contacts[0].mobile: unknown key",
        "tests/broken.json: $[0].storage: must be a JSON object of stored keys",
        "tests/broken.json: $[0].storageAfter: must be a JSON object of stored keys",
        "tests/broken.json: $[1].args[0].headers: must map names to strings",
        "tests/broken.json: $[2].args[0].http: no file 'nope.http' beside the case file",
        "tests/broken.json: $[3].contacts: no contacts file 'gone.json'",
    ):
        assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_form_raw_body_and_raw_http_webhook_cases_arrive_as_the_route_delivers_them(
    module: Path,
) -> None:
    fixtures = module / "tests" / "fixtures"
    fixtures.mkdir()
    for name in (
        "sendgrid_signed_single.body",
        "telegram_webhook_request.RECONSTRUCTED.http",
        "mailchimp_subscribe.form",
    ):
        shutil.copy(VENDOR / name, fixtures / name)
    signed = (VENDOR / "sendgrid_signed_single.body").read_bytes()
    http = (VENDOR / "telegram_webhook_request.RECONSTRUCTED.http").read_bytes()
    telegram_body = http.split(b"\r\n\r\n", 1)[1]
    form = (VENDOR / "mailchimp_subscribe.form").read_bytes().strip()
    settings = {"api_key": "k-123"}
    write_cases(
        module,
        "webhooks.json",
        [
            {
                "name": "mailchimp form",
                "function": "ParseWebhookRequest",
                "args": [{"form": [["type", "subscribe"], ["data[email]", "a@x.test"]]}],
                "settings": settings,
                "returns": {
                    "actions": [],
                    "response": {
                        "status": 200,
                        "headers": {},
                        "body": [
                            "POST",
                            "application/x-www-form-urlencoded",
                            "",
                            sha(b"type=subscribe&data%5Bemail%5D=a%40x.test"),
                            {},
                        ],
                    },
                },
            },
            {
                "name": "mailchimp captured form file",
                "function": "ParseWebhookRequest",
                "args": [
                    {
                        "bodyFile": "fixtures/mailchimp_subscribe.form",
                        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                        "query": {"secret": "s"},
                    }
                ],
                "settings": settings,
                "returns": {
                    "actions": [],
                    "response": {
                        "status": 200,
                        "headers": {},
                        "body": [
                            "POST",
                            "application/x-www-form-urlencoded",
                            "",
                            sha((VENDOR / "mailchimp_subscribe.form").read_bytes()),
                            {"secret": "s"},
                        ],
                    },
                },
            },
            {
                "name": "sendgrid signed bytes",
                "function": "ParseWebhookRequest",
                "args": [
                    {
                        "bodyFile": "fixtures/sendgrid_signed_single.body",
                        "headers": {"Content-Type": "application/json"},
                    }
                ],
                "settings": settings,
                "returns": {
                    "actions": [],
                    "response": {
                        "status": 200,
                        "headers": {},
                        "body": ["POST", "application/json", "", sha(signed), {}],
                    },
                },
            },
            {
                "name": "telegram raw http",
                "function": "ParseWebhookRequest",
                "args": [{"http": "fixtures/telegram_webhook_request.RECONSTRUCTED.http"}],
                "settings": settings,
                "returns": {
                    "actions": [],
                    "response": {
                        "status": 200,
                        "headers": {},
                        "body": [
                            "POST",
                            "application/json",
                            "Crm_Test-Secret_0123456789",
                            sha(telegram_body),
                            {},
                        ],
                    },
                },
            },
        ],
    )
    assert form  # the captured form is not empty
    result = Cli.in_dir(module.parent).run("module", "test", "offline-mail")
    assert result.returncode == 0, result.stdout
    assert "4 passed" in result.stdout
