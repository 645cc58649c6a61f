"""``crm-host module run`` exactly as SPEC §7: JSON on stdout and exit 0, or one line
``error: KIND: message`` on stderr and exit 1 — for every kind, through the real command."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli_runner import Cli

SETTINGS = '{"api_key": "RUN-SECRET-9911"}'


def write_module(root: Path, script: str, **manifest_extra: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": "runner",
        "name": "Runner",
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "egress": ["api.example.com"],
        "settings": {
            "type": "object",
            "properties": {"api_key": {"type": "string", "writeOnly": True}},
        },
        "limits": {"timeout_s": 2, "cpu_s": 2, "memory_mb": 64},
        **manifest_extra,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "module.py").write_text(script)
    return root


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli.in_dir(tmp_path)


def run(
    cli: Cli, module: Path, function: str, *args: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return cli.run("module", "run", str(module), function, *args, "--settings", SETTINGS, *extra)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_success_prints_validated_json(cli: Cli, tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "m",
        "def CRM_Marketing_ImportTemplates(offset, limit):\n"
        "    return [CRM_Marketing_ImportTemplate(externalId=str(i), name='T' + str(i))\n"
        "            for i in range(offset, offset + limit)]\n",
    )
    result = run(cli, module, "CRM_Marketing_ImportTemplates", "10", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"externalId": "10", "name": "T10"},
        {"externalId": "11", "name": "T11"},
    ]


@pytest.mark.parametrize(
    ("script", "function", "args", "kind", "message"),
    [
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    raise NotImplementedError\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "not_implemented",
            "does not implement",
        ),
        (
            "def CRM_Marketing_ImportTemplates(offset, limit):\n    return []\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "not_implemented",
            "does not implement",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    x = 1\n    return {}['missing']\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "script_error",
            r"KeyError.*line 3",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return 42\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "invalid_return",
            "returned an invalid value",
        ),
        (
            "def CRM_Marketing_GetCampaignStats(campaignExternalId):\n    return {'sent': -1}\n",
            "CRM_Marketing_GetCampaignStats",
            ['"c1"'],
            "invalid_return",
            "sent",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    while True:\n        pass\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "timeout",
            "",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return 'a' * (10 ** 10)\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "memory_limit",
            "",
        ),
        (
            "def f(n):\n    return f(n + 1)\n\ndef CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return f(0)\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "limit_exceeded",
            "",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return fetch('http://evil.example.org/').text()\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "egress_denied",
            "evil.example.org",
        ),
        (
            "import os\n\ndef CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return os.getcwd()\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "policy_violation",
            "os",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId:\n    return ''\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "invalid_module",
            "module.py:1",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return ''.__class__\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "policy_violation",
            "module.py:2",
        ),
    ],
    ids=[
        "stub",
        "absent",
        "script-error",
        "wrong-type",
        "negative-stat",
        "timeout",
        "memory",
        "recursion",
        "egress",
        "import-os",
        "syntax",
        "dunder",
    ],
)
def test_failure_kinds(
    cli: Cli, tmp_path: Path, script: str, function: str, args: list[str], kind: str, message: str
) -> None:
    module = write_module(tmp_path / "m", script)
    result = run(cli, module, function, *args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    line = error_line(result)
    assert line.startswith(f"error: {kind}: "), line
    assert re.search(message, line), line
    assert "RUN-SECRET-9911" not in result.stderr


def test_secret_printed_by_script_is_masked_in_errors(cli: Cli, tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "m",
        "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n"
        "    raise ValueError('key is ' + settings['api_key'])\n",
    )
    result = run(cli, module, "CRM_Marketing_GetTemplateHTML", '"t"')
    assert result.returncode == 1
    assert "RUN-SECRET-9911" not in result.stderr
    assert "key is ***" in result.stderr


@pytest.fixture
def local_service() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"templates": [{"id": "tpl-1", "name": "Welcome"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


FETCHING = (
    "def CRM_Marketing_ImportTemplates(offset, limit):\n"
    "    data = fetch('http://{addr}/templates').json()\n"
    "    return [{{'externalId': t['id'], 'name': t['name']}} for t in data['templates']]\n"
)


def test_fetch_to_local_service_needs_allow_host(
    cli: Cli, tmp_path: Path, local_service: str
) -> None:
    module = write_module(tmp_path / "m", FETCHING.format(addr=local_service), egress=["127.0.0.1"])
    denied = run(cli, module, "CRM_Marketing_ImportTemplates", "0", "10")
    assert denied.returncode == 1
    assert error_line(denied).startswith("error: egress_denied: ")

    allowed = run(
        cli,
        module,
        "CRM_Marketing_ImportTemplates",
        "0",
        "10",
        extra=("--allow-host", local_service),
    )
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout) == [{"externalId": "tpl-1", "name": "Welcome"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1"], "expected 2 argument(s) (offset, limit), got 1"),
        (["0", "{nope"], "argument limit: is not JSON"),
    ],
)
def test_bad_arguments_are_usage_errors(
    cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    module = write_module(
        tmp_path / "m", "def CRM_Marketing_ImportTemplates(offset, limit):\n    return []\n"
    )
    result = run(cli, module, "CRM_Marketing_ImportTemplates", *args)
    assert result.returncode == 2
    assert message in error_line(result)


def test_function_of_other_kind_and_bad_settings(cli: Cli, tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "m", "def CRM_Marketing_ImportTemplates(offset, limit):\n    return []\n"
    )
    other = run(cli, module, "CRM_Marketing_GetMessengerBots")
    assert other.returncode == 2
    assert "not a function of email modules" in error_line(other)

    bad = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "1", "--settings", '{"api_key": 5}'
    )
    assert bad.returncode == 2
    assert "settings.api_key" in error_line(bad)
