"""``module run --record/--replay/--show-log`` through the real command, and the recording
format's matching and masking rules in process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from host.errors import InvalidInput
from host.toolkit.recording import FORMAT, Exchange, Recorder, Recording, Replayer
from sandbox.errors import EgressDenied, ScriptError
from tests.cli_runner import Cli

SECRET = "REC-SECRET-4417"

SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    log("importing from", offset)
    url = settings["base_url"] + "/v1/templates?offset=" + str(offset) + "&key=" + settings["api_key"]
    data = fetch(url, headers={"Authorization": "Bearer " + settings["api_key"]}).json()
    return [{"externalId": t["id"], "name": t["name"]} for t in data["templates"]]
"""


def write_module(root: Path, *local: str) -> Path:
    """The module; ``local`` destinations (a test service) join its egress."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "id": "recorder",
        "name": "Recorder",
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "egress": ["api.example.com", *local],
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "writeOnly": True},
                "base_url": {"type": "string"},
            },
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "module.py").write_text(SCRIPT)
    return root


@pytest.fixture
def service() -> Iterator[tuple[str, list[str]]]:
    """A local template service that needs the API key and echoes it (as services do)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.headers.get("Authorization") != f"Bearer {SECRET}":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps(
                {"account": SECRET, "templates": [{"id": "tpl-1", "name": "Welcome"}]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Set-Cookie", "session=abc123")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_record_then_replay_offline(tmp_path: Path, service: tuple[str, list[str]]) -> None:
    address, seen = service
    module = write_module(tmp_path / "m", address)
    cli = Cli.in_dir(tmp_path)
    settings = json.dumps({"api_key": SECRET, "base_url": f"http://{address}"})
    tape = tmp_path / "tapes" / "templates.json"

    recorded = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "10",
        "--settings", settings, "--allow-host", address, "--record", str(tape), "--show-log",
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout) == [{"externalId": "tpl-1", "name": "Welcome"}]
    assert "log: importing from 0" in recorded.stderr
    assert f"fetch: GET http://{address}/v1/templates?offset=0&key=*** -> 200" in recorded.stderr
    assert "recorded 1 exchange(s)" in recorded.stderr
    text = tape.read_text()
    assert SECRET not in text and SECRET not in recorded.stderr
    data = json.loads(text)
    assert data["format"] == FORMAT and data["module"] == "recorder@1.0.0"
    (exchange,) = data["exchanges"]
    assert exchange["request"]["headers"]["Authorization"] == "***"
    assert exchange["request"]["url"] == f"http://{address}/v1/templates?offset=0&key=***"
    assert exchange["response"]["headers"]["set-cookie"] == "***"
    assert json.loads(exchange["response"]["body"])["account"] == "***"
    assert len(seen) == 1

    # replay: no --allow-host, another key; the service is never asked
    other = json.dumps({"api_key": "other-key", "base_url": f"http://{address}"})
    replayed = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "10",
        "--settings", other, "--replay", str(tape),
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == [{"externalId": "tpl-1", "name": "Welcome"}]
    assert len(seen) == 1

    unmatched = cli.run(
        "module", "run", str(module), "ImportTemplates", "10", "10",
        "--settings", other, "--replay", str(tape),
    )  # fmt: skip
    assert unmatched.returncode == 1
    (line,) = unmatched.stderr.strip().splitlines()
    assert line.startswith("error: script_error: ")
    assert f"unmatched request: {tape} has no response for GET http://{address}" in line
    assert "offset=10&key=***; unused exchanges: GET " in line and "offset=0&key=***" in line
    assert line.endswith("(line 4)")
    assert len(seen) == 1


def test_recording_goes_through_egress_policy_and_options_exclude(
    tmp_path: Path, service: tuple[str, list[str]]
) -> None:
    address, seen = service
    module = write_module(tmp_path / "m")
    cli = Cli.in_dir(tmp_path)
    settings = json.dumps({"api_key": SECRET, "base_url": f"http://{address}"})
    tape = tmp_path / "t.json"
    denied = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "10",
        "--settings", settings, "--record", str(tape),
    )  # fmt: skip
    assert denied.returncode == 1
    assert denied.stderr.strip().splitlines()[-1].startswith("error: egress_denied: ")
    assert seen == []
    assert json.loads(tape.read_text())["exchanges"][0]["error"]["kind"] == "egress_denied"

    both = cli.run(
        "module", "run", str(module), "ImportTemplates", "0", "10",
        "--record", str(tape), "--replay", str(tape),
    )  # fmt: skip
    assert both.returncode == 2
    assert "--record and --replay exclude each other" in both.stderr


# --- in process: the format's rules ---------------------------------------------------------


def _exchange(url: str, body: str | None = None, status: int = 200, **extra: object) -> Exchange:
    request: dict[str, object] = {"method": "POST", "url": url, "headers": {}, "body": body}
    request.update(extra)
    return Exchange(request, {"status": status, "headers": {}, "body": str(status)})


def test_equal_requests_replay_in_recorded_order_and_each_answers_once() -> None:
    recording = Recording(
        [_exchange("https://a/x", status=201), _exchange("https://a/x", status=202)]
    )
    replay = Replayer(recording, [])
    request = {"method": "post", "url": "https://a/x", "headers": {"X": "1"}, "body": None}
    assert replay(request)["status"] == 201
    assert replay(request)["status"] == 202
    with pytest.raises(ScriptError, match="unused exchanges: none"):
        replay(request)
    assert replay.misses == ["POST https://a/x"]


def test_body_is_matched_unless_removed_from_the_recording() -> None:
    recording = Recording([_exchange("https://a/x", body='{"n": 1}')])
    replay = Replayer(recording, [])
    with pytest.raises(ScriptError, match="another body"):
        replay({"method": "POST", "url": "https://a/x", "body": '{"n": 2}'})
    loose = Exchange({"method": "POST", "url": "https://a/x"}, {"status": 200})
    assert Replayer(Recording([loose]), [])({"method": "POST", "url": "https://a/x", "body": "z"})


def test_secrets_in_url_and_body_are_masked_before_matching() -> None:
    recorder = Recorder(
        lambda request: {"status": 200, "headers": {}, "body": "ok"}, ["K1-live-secret"]
    )
    recorder(
        {
            "method": "POST",
            "url": "https://a/x?key=K1-live-secret",
            "body": "token=K1-live-secret",
            "headers": {},
        }
    )
    (exchange,) = recorder.recording.exchanges
    assert exchange.request["url"] == "https://a/x?key=***"
    assert exchange.request["body"] == "token=***"
    replay = Replayer(recorder.recording, ["K2-live-secret"])
    assert replay(
        {"method": "POST", "url": "https://a/x?key=K2-live-secret", "body": "token=K2-live-secret"}
    )


def test_recorded_errors_are_replayed_with_their_kind() -> None:
    def deny(request: dict[str, object]) -> dict[str, object]:
        raise EgressDenied("fetch to a denied: host a is not in the module's egress list")

    recorder = Recorder(deny, [])
    with pytest.raises(EgressDenied):
        recorder({"method": "GET", "url": "https://a/"})
    with pytest.raises(EgressDenied, match="not in the module's egress"):
        Replayer(recorder.recording, [])({"method": "GET", "url": "https://a/"})


def test_broken_recording_files_name_file_and_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "format": "crm-host-recording/1",\n  "exchanges": [,]\n}')
    with pytest.raises(InvalidInput) as syntax:
        Recording.load(bad_json)
    assert str(syntax.value.problems[0]).startswith(f"{bad_json}:3: ")

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": FORMAT, "exchanges": [{"request": {}}]}))
    with pytest.raises(InvalidInput) as shape:
        Recording.load(wrong)
    assert [str(p) for p in shape.value.problems] == [
        f"{wrong}: $.exchanges[0]: needs a request with a url"
    ]
