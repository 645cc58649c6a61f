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
from tests.sandbox.http_servers import LocalHTTPServer

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


WEBHOOK_REQUEST = json.dumps(
    {"method": "POST", "url": "https://crm.test/hook", "headers": {}, "body": "", "query": {}}
)


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
        (
            "def CRM_Marketing_ParseWebhookRequest(request):\n"
            "    body = 'leaf'\n"
            "    for i in range(63):\n"
            "        body = {'a': body}\n"
            "    return {'response': {'status': 200, 'body': body}}\n",
            "CRM_Marketing_ParseWebhookRequest",
            [WEBHOOK_REQUEST],
            "invalid_return",
            r"returned an invalid value: \$\.response\.body\.a\.a\.a.*\.\.\..*: nested deeper than 64 levels$",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return 'a\\ud800'\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "invalid_return",
            r"returned an invalid value: \$: contains a lone surrogate",
        ),
        (
            "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return 'a\\x00b'\n",
            "CRM_Marketing_GetTemplateHTML",
            ['"t1"'],
            "invalid_return",
            r"returned an invalid value: value: contains a NUL character$",
        ),
    ],
    ids=[
        "deep-return",
        "surrogate-return",
        "nul-return",
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


PUBLISHING = (
    "def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId):\n"
    "    return f'{html}|{name}|{templateExternalId}'\n"
)


def test_optional_template_id_may_be_left_out(cli: Cli, tmp_path: Path) -> None:
    """SPEC: SetTemplateHTML(html, name, templateExternalId=None). Leaving the optional
    argument out passes None, even to a module that declares no default for it."""
    module = write_module(tmp_path / "m", PUBLISHING)
    two = run(cli, module, "CRM_Marketing_SetTemplateHTML", '"<p/>"', '"name"')
    assert two.returncode == 0, two.stderr
    assert json.loads(two.stdout) == "<p/>|name|None"
    three = run(cli, module, "SetTemplateHTML", '"<p/>"', '"name"', '"t-1"')
    assert three.returncode == 0, three.stderr
    assert json.loads(three.stdout) == "<p/>|name|t-1"


@pytest.mark.parametrize("args", [['"<p/>"'], ['"<p/>"', '"n"', '"t"', '"extra"']])
def test_optional_arguments_still_bound_the_count(
    cli: Cli, tmp_path: Path, args: list[str]
) -> None:
    module = write_module(tmp_path / "m", PUBLISHING)
    result = run(cli, module, "CRM_Marketing_SetTemplateHTML", *args)
    assert result.returncode == 2
    assert error_line(result) == (
        f"error: expected 2 to 3 argument(s) (html, name, templateExternalId=None), got {len(args)}"
    )
    assert result.stdout == ""


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


# --------------------------------------------------------------------------- egress (SPEC §4)
# The admin's --allow-host waives the address check for destinations the manifest declares;
# it never adds one. Real servers record what reached them.

PROBING = (
    "def CRM_Marketing_ImportTemplates(offset, limit):\n"
    "    r = fetch('{url}', method='{method}', body={body!r},\n"
    "              headers={{'Authorization': 'Bearer ' + settings['api_key'],\n"
    "                       'X-Key': settings['api_key'], 'Accept': 'application/json'}})\n"
    "    return [{{'externalId': str(r.status), 'name': r.headers.get('location') or r.text()}}]\n"
)


def probing(url: str, method: str = "GET", body: str | None = None) -> str:
    return PROBING.format(url=url, method=method, body=body)


@pytest.fixture
def landing() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as srv:
        srv.route("/landing")(lambda req: req.reply(200, b"landed"))
        yield srv


def test_allow_host_alone_does_not_open_an_undeclared_destination(
    cli: Cli, tmp_path: Path, landing: LocalHTTPServer
) -> None:
    module = write_module(tmp_path / "m", probing(landing.url("/landing")), egress=[])
    result = run(
        cli, module, "CRM_Marketing_ImportTemplates", "0", "1", extra=("--allow-host", "127.0.0.1")
    )
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("error: egress_denied: fetch to 127.0.0.1 denied: 127.0.0.1 is an IP ")
    assert "only waives the address check for destinations the manifest declares" in line
    assert landing.seen == []


def test_manifest_ip_port_is_checked_at_fetch_time_and_waived_by_allow_host(
    cli: Cli, tmp_path: Path, landing: LocalHTTPServer
) -> None:
    script = probing(landing.url("/landing"))
    module = write_module(tmp_path / "m", script, egress=[f"127.0.0.1:{landing.port}"])
    denied = run(cli, module, "CRM_Marketing_ImportTemplates", "0", "1")
    assert error_line(denied) == (
        "error: egress_denied: fetch to 127.0.0.1 denied: loopback address; the platform admin "
        "can waive it with the host's egress allow-list (CRM_HOST_EGRESS_ALLOW; --allow-host for "
        "crm-host module run) (line 2)"
    )
    assert landing.seen == []

    waived = run(
        cli, module, "CRM_Marketing_ImportTemplates", "0", "1", extra=("--allow-host", "127.0.0.1")
    )
    assert waived.returncode == 0, waived.stderr
    assert json.loads(waived.stdout) == [{"externalId": "200", "name": "landed"}]
    assert len(landing.seen) == 1

    other_port = write_module(tmp_path / "p", script, egress=[f"127.0.0.1:{landing.port + 1}"])
    mismatch = run(
        cli,
        other_port,
        "CRM_Marketing_ImportTemplates",
        "0",
        "1",
        extra=("--allow-host", "127.0.0.1"),
    )
    assert error_line(mismatch).startswith(
        f"error: egress_denied: fetch to 127.0.0.1 denied: 127.0.0.1 port {landing.port} is "
        f"not in the module's egress list (listed: 127.0.0.1:{landing.port + 1})"
    )
    assert len(landing.seen) == 1


@pytest.mark.parametrize(
    ("status", "method", "body"), [(302, "GET", None), (307, "POST", "card=4111")]
)
def test_cross_origin_redirect_leaks_no_secret_through_module_run(
    cli: Cli,
    tmp_path: Path,
    landing: LocalHTTPServer,
    status: int,
    method: str,
    body: str | None,
) -> None:
    target = landing.url("/landing", host="127.0.0.1")
    with LocalHTTPServer() as first:
        first.route("/start")(lambda req: req.reply(status, b"moved", {"Location": target}))
        egress = [f"127.0.0.1:{first.port}", f"127.0.0.1:{landing.port}"]
        module = write_module(
            tmp_path / "m", probing(first.url("/start"), method, body), egress=egress
        )
        result = run(
            cli,
            module,
            "CRM_Marketing_ImportTemplates",
            "0",
            "1",
            extra=("--allow-host", "127.0.0.0/8"),
        )
    assert result.returncode == 0, result.stderr
    assert first.seen[0].headers["x-key"] == "RUN-SECRET-9911"  # the origin the script named
    if status == 307:  # would replay the body and credentials: handed back, not followed
        assert json.loads(result.stdout) == [{"externalId": "307", "name": target}]
        assert landing.seen == []
    else:
        assert json.loads(result.stdout) == [{"externalId": "200", "name": "landed"}]
        [arrived] = landing.seen
        assert arrived.headers["accept"] == "application/json"
        assert "authorization" not in arrived.headers and "x-key" not in arrived.headers
        assert "RUN-SECRET-9911" not in json.dumps(arrived.headers)


def test_values_at_the_nesting_limit_pass_both_ways(cli: Cli, tmp_path: Path) -> None:
    """64 levels are accepted as an argument and as a return value (65 are not, above)."""
    module = write_module(
        tmp_path / "m",
        "def CRM_Marketing_ParseWebhookRequest(request):\n"
        "    depth, value = 0, request['body']\n"
        "    body = json.loads(value)\n"
        "    while not isinstance(body, str):\n"
        "        depth, body = depth + 1, body[0]\n"
        "    reply = 'depth ' + str(depth)\n"
        "    for i in range(62):\n"
        "        reply = {'a': reply}\n"
        "    return {'response': {'status': 200, 'body': reply}}\n",
    )
    module.joinpath("module.py").write_text("import json\n\n" + (module / "module.py").read_text())
    request = json.loads(WEBHOOK_REQUEST)
    request["body"] = "[" * 63 + '"leaf"' + "]" * 63
    argument = {**request, "query": {"deep": "x"}}
    result = run(cli, module, "CRM_Marketing_ParseWebhookRequest", json.dumps(argument))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)["response"]["body"]
    for _ in range(62):
        body = body["a"]
    assert body == "depth 63"


def test_a_flood_of_log_and_print_keeps_the_outcome(cli: Cli, tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "m",
        "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n"
        "    for i in range(100000):\n"
        "        print('y' * 1000)\n"
        "    log('x' * 30000000)\n"
        "    return 'done'\n",
    )
    result = run(cli, module, "CRM_Marketing_GetTemplateHTML", '"t1"', extra=("--show-log",))
    assert result.returncode == 0, result.stderr[-500:]
    assert json.loads(result.stdout) == "done"
    log_lines = result.stderr.strip().splitlines()
    assert log_lines[0] == "log: " + "y" * 1000
    written = 100000 * 1001 + 30000001
    assert log_lines[-1] == f"log: [log truncated: {written} bytes written, limit 65536 bytes]"
    assert len(result.stderr) < 80_000


def test_a_result_over_the_size_limit_is_limit_exceeded(cli: Cli, tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "m",
        "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return 'a' * 5000\n",
        limits={"timeout_s": 2, "cpu_s": 2, "memory_mb": 64, "result_bytes": 1000},
    )
    result = run(cli, module, "CRM_Marketing_GetTemplateHTML", '"t1"')
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert re.fullmatch(
        r"error: limit_exceeded: the result is \d+ bytes, more than the limit of 1000 bytes",
        error_line(result),
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["[" * 100_000], "error: argument templateExternalId: nested deeper than 64 levels"),
        (
            ["[" * 65 + "]" * 65],
            "error: argument templateExternalId[0][0][0][0][0][0][0][0]...(55 more)...[0]: "
            "nested deeper than 64 levels",
        ),
        (['"a\\ud800"'], "error: argument templateExternalId: contains a lone surrogate"),
        (['"t1"', "--bogus"], "error: No such option: --bogus"),
        (
            ['"t1"', "--settings", '{"api_key": "a\\u0000b"}'],
            "error: --settings.api_key: contains a NUL character",
        ),
    ],
    ids=["parser-depth", "nesting-limit", "surrogate", "unknown-option", "nul-settings"],
)
def test_bad_command_lines_are_one_line_usage_errors(
    cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    module = write_module(
        tmp_path / "m", "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return ''\n"
    )
    result = cli.run("module", "run", str(module), "CRM_Marketing_GetTemplateHTML", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert error_line(result).startswith(message)


def test_unwritable_record_and_unreadable_replay_are_usage_errors(cli: Cli, tmp_path: Path) -> None:
    module = write_module(
        tmp_path / "m", "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n    return ''\n"
    )
    (tmp_path / "a-file").write_text("")
    record = run(
        cli,
        module,
        "CRM_Marketing_GetTemplateHTML",
        '"t1"',
        extra=("--record", str(tmp_path / "a-file" / "x.json")),
    )
    assert record.returncode == 2, record.stderr
    assert error_line(record).startswith("error: --record: cannot write ")
    (tmp_path / "bad.json").write_text('{"exchanges": [')
    replay = run(
        cli,
        module,
        "CRM_Marketing_GetTemplateHTML",
        '"t1"',
        extra=("--replay", str(tmp_path / "bad.json")),
    )
    assert replay.returncode == 2, replay.stderr
    assert error_line(replay).startswith("error: --replay: recording is not JSON")
