"""``crm-host module test``: case files run offline in the real sandbox, a pytest-like report,
exit 1 on any failure or broken case file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.errors import InvalidInput
from host.toolkit.cases import load_cases, run_module_cases, webhook_request
from host.toolkit.local_run import load_module
from host.toolkit.recording import FORMAT
from tests.cli_runner import Cli

SCRIPT = """\
import json

def CRM_Marketing_ImportTemplates(offset, limit):
    page = fetch("https://api.acme.test/templates?offset=" + str(offset)).json()
    log("got", len(page), "templates")
    return [{"externalId": t["id"], "name": t["name"]} for t in page]

def CRM_Marketing_ParseWebhookRequest(request):
    events = json.loads(request.body)["events"]
    return {"actions": [
        {"type": "UpdateDeliveryStatus", "email": e["email"], "externalId": e["campaign"],
         "status": CRM_Marketing_DeliveryStatus.Delivered}
        for e in events
    ]}
"""

MANIFEST = {
    "id": "cased",
    "name": "Cased",
    "version": "2.0.0",
    "kind": "email",
    "script": "module.py",
    "egress": ["api.acme.test"],
    "settings": {
        "type": "object",
        "properties": {"api_key": {"type": "string", "writeOnly": True}},
        "required": ["api_key"],
    },
}

RECORDING = {
    "format": FORMAT,
    "exchanges": [
        {
            "request": {"method": "GET", "url": "https://api.acme.test/templates?offset=0"},
            "response": {"status": 200, "body": json.dumps([{"id": "t1", "name": "Welcome"}])},
        }
    ],
}

WEBHOOK_ARGS = [{"json": {"events": [{"email": "ann@x.test", "campaign": "c1"}]}}]
DELIVERED = [
    {
        "type": "UpdateDeliveryStatus",
        "email": "ann@x.test",
        "externalId": "c1",
        "status": "Delivered",
    }
]


def module_with_cases(root: Path, cases: dict[str, object]) -> Path:
    (root / "tests" / "recordings").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    (root / "module.py").write_text(SCRIPT)
    (root / "tests" / "recordings" / "templates.json").write_text(json.dumps(RECORDING))
    for name, case in cases.items():
        text = case if isinstance(case, str) else json.dumps(case, indent=2)
        (root / "tests" / name).write_text(text)
    return root


def case(function: str, args: list[object], **expect: object) -> dict[str, object]:
    return {"function": function, "args": args, "settings": {"api_key": "k"}, **expect}


GOOD = {
    "a_templates.json": {
        **case("ImportTemplates", [0, 100], returns=[{"externalId": "t1", "name": "Welcome"}]),
        "name": "first page",
        "replay": "recordings/templates.json",
    },
    "b_webhook.json": [
        case("ParseWebhookRequest", WEBHOOK_ARGS, actions=DELIVERED),
        case("GetTemplateHTML", ["t1"], error={"kind": "not_implemented"}),
    ],
}


def test_report_and_exit_status_through_the_command(tmp_path: Path) -> None:
    bad = {
        "c_wrong.json": {
            **case("ImportTemplates", [0, 100], returns=[{"externalId": "t1", "name": "Hello"}]),
            "replay": "recordings/templates.json",
        },
        "d_offline.json": case("ImportTemplates", [0, 100], returns=[]),
        "e_broken.json": '{\n  "function": "ImportTemplates",\n  "args": [0 100]\n}',
    }
    root = module_with_cases(tmp_path / "m", {**GOOD, **bad})
    cli = Cli.in_dir(tmp_path)
    result = cli.run("module", "test", str(root))
    assert result.returncode == 1, result.stderr
    report = result.stdout
    assert report.splitlines()[0].strip("= ") == "module test: cased@2.0.0"
    for line in (
        "tests/a_templates.json::first page PASSED",
        "tests/b_webhook.json::b_webhook[0] PASSED",
        "tests/b_webhook.json::b_webhook[1] PASSED",
        "tests/c_wrong.json::c_wrong FAILED",
        "tests/d_offline.json::d_offline FAILED",
        "tests/e_broken.json ERROR",
    ):
        assert line in report.splitlines(), report
    assert "CRM_Marketing_ImportTemplates: the return value differs from the expected one" in report
    assert '-    "name": "Hello"\n+    "name": "Welcome"' in report
    assert "got 1 templates" in report  # captured log of the failing case
    assert (
        "unmatched request: this case (it has no replay) has no response for GET "
        "https://api.acme.test/templates?offset=0"
    ) in report
    assert "tests/e_broken.json:3: Expecting ',' delimiter" in report
    assert (
        report.rstrip().splitlines()[-1].strip("= ").startswith("2 failed, 1 error, 3 passed in ")
    )

    for name in bad:
        (root / "tests" / name).unlink()
    passing = cli.run("module", "test", str(root))
    assert passing.returncode == 0, passing.stdout
    assert "FAILURES" not in passing.stdout and " 3 passed in " in passing.stdout


def test_unexpected_success_and_wrong_error_fail(tmp_path: Path) -> None:
    root = module_with_cases(
        tmp_path / "m",
        {
            "x.json": [
                case("ParseWebhookRequest", WEBHOOK_ARGS, error="script_error"),
                case("GetTemplateHTML", ["t1"], error={"kind": "script_error"}),
                case("GetTemplateHTML", ["t1"], error={"message": "does not implement"}),
            ]
        },
    )
    report = run_module_cases(root, load_module(root, max_script_bytes=1 << 20))
    assert [o.status for o in report.outcomes] == ["FAILED", "FAILED", "PASSED"]
    assert "expected an error 'script_error', but CRM_Marketing_ParseWebhookRequest returned" in (
        report.outcomes[0].detail
    )
    assert "got not_implemented: module cased@2.0.0 does not implement" in report.outcomes[1].detail
    assert not report.ok


def test_case_file_problems_are_reported_at_once(tmp_path: Path) -> None:
    root = module_with_cases(tmp_path / "m", {})
    path = root / "tests" / "bad.json"
    path.write_text(
        json.dumps(
            [
                {"function": "GetMessengerBots", "args": [], "returns": []},
                {"function": "ImportTemplates", "args": [0], "returns": [], "error": "x"},
                {"function": "ImportTemplates", "args": [0, 1], "replay": "nope.json", "oops": 1},
            ]
        )
    )
    with pytest.raises(InvalidInput) as caught:
        load_cases(path, load_module(root, max_script_bytes=1 << 20), root)
    assert [str(p) for p in caught.value.problems] == [
        "tests/bad.json: $[0].function: CRM_Marketing_GetMessengerBots is not a function of email",
        "tests/bad.json: $[1].args: CRM_Marketing_ImportTemplates takes 2 (offset, limit), got 1",
        "tests/bad.json: $[1]: needs exactly one of returns, actions, error",
        "tests/bad.json: $[2].oops: unknown key",
        "tests/bad.json: $[2].replay: no recording file 'nope.json'",
        "tests/bad.json: $[2]: needs exactly one of returns, actions, error",
    ]


def test_webhook_shorthand_builds_a_full_request() -> None:
    request = webhook_request({"json": {"a": 1}, "headers": {"X-Sig": "s"}})
    assert request == {
        "method": "POST",
        "url": "https://crm.example/hooks/local/module/token",
        "headers": {"content-type": "application/json", "X-Sig": "s"},
        "query": {},
        "body": '{"a": 1}',
    }


PUBLISHING = """\
def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return f"{name}:{templateExternalId}"
"""


def test_optional_template_id_may_be_left_out_of_a_case(tmp_path: Path) -> None:
    """SetTemplateHTML(html, name, templateExternalId?): a case with two arguments runs with
    ``None`` for the third; one argument is still a case-file problem naming the counts."""
    root = module_with_cases(tmp_path / "m", {})
    (root / "module.py").write_text(PUBLISHING)
    (root / "tests" / "publish.json").write_text(
        json.dumps(
            [
                case("SetTemplateHTML", ["<p/>", "new"], returns="new:None"),
                case("SetTemplateHTML", ["<p/>", "old", "t9"], returns="old:t9"),
            ]
        )
    )
    cli = Cli.in_dir(tmp_path)
    result = cli.run("module", "test", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 2 passed in " in result.stdout

    (root / "tests" / "publish.json").write_text(
        json.dumps(case("SetTemplateHTML", ["<p/>"], returns="x"))
    )
    with pytest.raises(InvalidInput) as caught:
        load_cases(
            root / "tests" / "publish.json", load_module(root, max_script_bytes=1 << 20), root
        )
    assert [str(p) for p in caught.value.problems] == [
        "tests/publish.json: $.args: CRM_Marketing_SetTemplateHTML takes 2 to 3 "
        "(html, name, templateExternalId=None), got 1"
    ]


def test_replayed_cases_go_through_the_egress_check(tmp_path: Path) -> None:
    """A case's recording is judged by the module's egress policy on its recorded
    addresses: a loopback answer needs ``module test --allow-host``, and a recording of a
    host the manifest does not declare fails the case with egress_denied."""
    root = module_with_cases(tmp_path / "m", {})
    recordings = root / "tests" / "recordings"
    local = json.loads(json.dumps(RECORDING))
    local["exchanges"][0]["addresses"] = ["127.0.0.1"]
    (recordings / "local.json").write_text(json.dumps(local))
    elsewhere = json.loads(json.dumps(RECORDING))
    elsewhere["exchanges"][0]["request"]["url"] = "https://api.elsewhere.test/templates?offset=0"
    elsewhere["exchanges"][0]["addresses"] = ["93.184.216.34"]
    (recordings / "elsewhere.json").write_text(json.dumps(elsewhere))
    expect = {"returns": [{"externalId": "t1", "name": "Welcome"}]}
    (root / "tests" / "local.json").write_text(
        json.dumps(
            {**case("ImportTemplates", [0, 100], **expect), "replay": "recordings/local.json"}
        )
    )
    script = (root / "module.py").read_text()
    (root / "module.py").write_text(
        script.replace("https://api.acme.test/", "https://api.elsewhere.test/", 1)
    )
    (root / "manifest.json").write_text(json.dumps({**MANIFEST, "egress": ["api.acme.test"]}))
    (root / "tests" / "elsewhere.json").write_text(
        json.dumps(
            {**case("ImportTemplates", [0, 100], **expect), "replay": "recordings/elsewhere.json"}
        )
    )
    cli = Cli.in_dir(tmp_path)

    unwaived = cli.run("module", "test", str(root))
    assert unwaived.returncode == 1
    assert "tests/elsewhere.json::elsewhere FAILED" in unwaived.stdout
    assert "tests/local.json::local FAILED" in unwaived.stdout
    assert (
        "CRM_Marketing_ImportTemplates failed: egress_denied: fetch to api.elsewhere.test "
        "denied: host api.elsewhere.test is not in the module's egress list (line 4)"
    ) in unwaived.stdout

    waived = cli.run("module", "test", str(root), "--allow-host", "api.elsewhere.test")
    assert "tests/elsewhere.json::elsewhere FAILED" in waived.stdout  # a waiver is no grant

    (root / "module.py").write_text(script)  # back to api.acme.test, recorded at 127.0.0.1
    (root / "tests" / "elsewhere.json").unlink()
    denied = cli.run("module", "test", str(root))
    assert denied.returncode == 1
    assert (
        "egress_denied: fetch to api.acme.test denied: it resolves to 127.0.0.1, "
        "a loopback address; the platform admin can waive it"
    ) in denied.stdout
    allowed = cli.run("module", "test", str(root), "--allow-host", "127.0.0.1")
    assert allowed.returncode == 0, allowed.stdout
    assert "tests/local.json::local PASSED" in allowed.stdout

    malformed = cli.run("module", "test", str(root), "--allow-host", "not a host")
    assert malformed.returncode == 1
    assert malformed.stderr.startswith("error: --allow-host: ")
    assert len(malformed.stderr.strip().splitlines()) == 1


KEYED_SCRIPT = """\
import json

def CRM_Marketing_ParseWebhookRequest(request):
    email = json.loads(request.body)["email"]
    campaign = crm.campaign_for_key("msg-1")
    if campaign is None:
        return {"actions": []}
    return {"actions": [{"type": "UpdateDeliveryStatus", "email": email,
                         "externalId": campaign, "status": "Delivered"}]}
"""


def test_campaign_keys_of_a_case_answer_the_attribution_map(tmp_path: Path) -> None:
    """``campaignKeys`` is what crm.campaign_for_key finds; without it, nothing."""
    webhook = [{"json": {"email": "ann@x.test"}}]
    root = module_with_cases(
        tmp_path / "m",
        {
            "keys.json": [
                {**case("ParseWebhookRequest", webhook, actions=[{**DELIVERED[0]}])}
                | {"campaignKeys": {"msg-1": "c1"}},
                case("ParseWebhookRequest", webhook, actions=[]),
            ]
        },
    )
    (root / "module.py").write_text(KEYED_SCRIPT)
    report = run_module_cases(root, load_module(root, max_script_bytes=1 << 20))
    assert [o.status for o in report.outcomes] == ["PASSED", "PASSED"], report.outcomes
    bad = root / "tests" / "bad.json"
    bad.write_text(
        json.dumps(
            [{**case("ParseWebhookRequest", webhook, actions=[]), "campaignKeys": {"msg-1": 5}}]
        )
    )
    with pytest.raises(InvalidInput) as caught:
        load_cases(bad, load_module(root, max_script_bytes=1 << 20), root)
    assert [str(p) for p in caught.value.problems] == [
        "tests/bad.json: $[0].campaignKeys: must map keys to campaign ids"
    ]
