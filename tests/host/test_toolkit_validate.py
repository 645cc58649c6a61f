"""``crm-host module validate``: every upload error at once with file:line, and warnings for
fetch() to hosts outside egress, undeclared settings and unimplemented functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.toolkit.lint import lint_script
from tests.cli_runner import Cli

MANIFEST = {
    "id": "linted",
    "name": "Linted",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "egress": ["api.acme.test"],
    "settings": {"type": "object", "properties": {"api_key": {"type": "string"}}},
}


def write(root: Path, script: str, **manifest: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({**MANIFEST, **manifest}))
    (root / "module.py").write_text(script)
    return root


BROKEN = """\
def CRM_Marketing_GetTemplateHTML():
    return fetch("https://api.wrong.test/html").text()

def CRM_Marketing_SetTemplateHTML(html):
    return ""
"""

WARNED = """\
API = "https://api.acme.tset/v3"

def CRM_Marketing_ImportTemplates(offset, limit):
    data = fetch(API + "/templates?offset=" + str(offset)).json()
    region = settings.get("region")
    return [{"externalId": t["id"], "name": t["name"]} for t in data]

def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return fetch(f"https://api.acme.test/templates/{templateExternalId}").text()

def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    raise NotImplementedError
"""


def test_errors_and_warnings_through_the_command(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path)
    broken = write(tmp_path / "broken", BROKEN, version="1.0")
    result = cli.run("module", "validate", str(broken))
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("error: manifest.json: $.version: ")
    assert errors[1:] == [
        "error: module.py:1: CRM_Marketing_GetTemplateHTML must accept the parameters "
        "(templateExternalId); it is defined as ()",
        "error: module.py:4: CRM_Marketing_SetTemplateHTML must accept the parameters "
        "(html, name, templateExternalId); it is defined as (html)",
    ]
    assert (
        "warning: module.py:2: fetch to api.wrong.test will be denied: it is not in the "
        "manifest's egress (api.acme.test)"
    ) in result.stdout
    assert f"{broken}: invalid: 3 errors, " in result.stdout

    warned = write(tmp_path / "warned", WARNED)
    result = cli.run("module", "validate", str(warned))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "warning: module.py:4: fetch to api.acme.tset will be denied: it is not in the "
        "manifest's egress (api.acme.test)"
    )
    assert lines[1].startswith("warning: module.py:5: settings.get('region') reads a setting the ")
    assert not any("module.py:9" in line for line in lines)  # f-string to a listed host
    assert (
        "warning: module.py: CRM_Marketing_ParseWebhookRequest is not defined; unsupported "
        "for tenants: webhooks (delivery statuses, unsubscribes)"
    ) in lines
    assert (
        "warning: module.py:11: CRM_Marketing_SetTemplateHTML is not implemented (raises "
        "NotImplementedError); unsupported for tenants: publishing templates to the service"
    ) in lines
    assert lines[-1] == f"{warned}: valid: 0 errors, 8 warnings"


@pytest.mark.parametrize(
    ("call", "egress", "warned"),
    [
        ('fetch("https://eu.api.acme.test/x")', ["*.acme.test"], False),
        ('fetch("https://acme.test/x")', ["*.acme.test"], True),
        ('fetch("https://api.acme.test:8443/x")', ["api.acme.test"], False),
        ('fetch("https://api.acme.test:8443/x")', ["api.acme.test:443"], True),
        ('fetch(url="http://10.0.0.5/x")', ["10.0.0.5"], False),
        ('fetch(url="http://10.0.0.6/x")', ["10.0.0.5"], True),
        ('fetch(f"https://api.{BASE}.acme.test/x")', ["api.acme.test"], False),
        ('fetch(f"https://api.{region}.acme.test/x")', ["api.acme.test"], True),  # a constant
        ('fetch(BASE + "/x")', ["api.acme.test"], False),  # BASE is not a literal
        ('fetch("https://other.test")', ["api.acme.test"], True),
    ],
)
def test_literal_url_hosts(call: str, egress: list[str], warned: bool) -> None:
    script = f"region = 'eu'\n\ndef f(BASE):\n    return {call}\n"
    findings = lint_script(script, "module.py", {"egress": egress, "kind": None})
    assert any("will be denied" in f.message for f in findings) is warned, findings


def test_url_constant_reached_through_local_variables() -> None:
    script = (
        'API = "https://api.acme.tset/v1"\n\n'
        "def get(path):\n"
        '    base = settings.get("base_url") or API\n'
        "    url = base + path\n"
        "    return fetch(url).json()\n"
    )
    findings = lint_script(script, "module.py", {"egress": ["api.acme.test"], "kind": None})
    assert [str(f) for f in findings if "denied" in f.message] == [
        "warning: module.py:6: fetch to api.acme.tset will be denied: it is not in the "
        "manifest's egress (api.acme.test)"
    ]
    fixed = script.replace("tset", "test")
    egress = {"egress": ["api.acme.test"], "kind": None}
    assert not [f for f in lint_script(fixed, "module.py", egress) if "denied" in f.message]


def test_fetch_without_any_egress_is_flagged() -> None:
    findings = lint_script("def f(u):\n    return fetch(u)\n", "m.py", {"kind": "email"})
    assert [str(f) for f in findings if "egress" in f.message] == [
        "warning: m.py:2: fetch() is called but the manifest lists no egress host: every call "
        "is denied"
    ]


def test_egress_entries_only_an_admin_waiver_opens_are_warned(tmp_path: Path) -> None:
    egress = [
        "api.acme.test",
        "127.0.0.1:8080",
        "[::1]",
        "localhost:9000",
        "*.corp.internal",
        "93.184.216.34",
        "[2606:2800:220:1:248:1893:25c8:1946]",
    ]
    module = write(tmp_path / "waived", "def f():\n    return 1\n", egress=egress)
    result = Cli.in_dir(tmp_path).run("module", "validate", str(module))
    assert result.returncode == 0, result.stdout + result.stderr
    waiver = [line for line in result.stdout.splitlines() if "$.egress" in line]
    tail = (
        ": fetch() reaches it only where the platform admin also allows it "
        "(CRM_HOST_EGRESS_ALLOW, or --allow-host for module run); on any other host every "
        "call to it is denied"
    )
    assert waiver == [
        f"warning: manifest.json: $.egress[1]: 127.0.0.1 is a loopback address{tail}",
        f"warning: manifest.json: $.egress[2]: ::1 is a loopback address{tail}",
        f"warning: manifest.json: $.egress[3]: localhost:9000 is a loopback host name{tail}",
        f"warning: manifest.json: $.egress[4]: *.corp.internal is a private-use host name{tail}",
    ]


def test_literal_read_of_an_undeclared_setting_is_an_error_get_a_warning(tmp_path: Path) -> None:
    script = (
        "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n"
        '    token = settings["api_key"] + settings["token"]\n'
        '    return settings.get("region", "eu") + settings[templateExternalId] + token\n'
    )
    cli = Cli.in_dir(tmp_path)
    module = write(tmp_path / "reads", script)
    result = cli.run("module", "validate", str(module))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: module.py:2: settings['token'] reads a setting the manifest does not declare "
        '(declared: api_key); declare it under "settings" in manifest.json or use '
        "settings.get() with a default"
    ]
    assert (
        "warning: module.py:3: settings.get('region') reads a setting the manifest's settings "
        "do not declare, so no tenant can set it and it is always the default"
    ) in result.stdout.splitlines()
    assert "api_key" not in result.stdout  # a declared setting is neither error nor warning
    assert f"{module}: invalid: 1 error, " in result.stdout
