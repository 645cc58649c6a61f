"""``module run --record/--replay/--show-log`` through the real command, and the recording
format's matching and masking rules in process — always under the real Fetcher, so a replay
passes the same egress check as a live call."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from host.errors import InvalidInput
from host.toolkit.recorder import Recorder
from host.toolkit.recording import FORMAT, Exchange, Recording
from host.toolkit.replayer import Replayer
from sandbox.egress import EgressPolicy
from sandbox.errors import EgressDenied, FetchFailed, ScriptError
from sandbox.fetch import Fetcher
from sandbox.invocation import FetchNetwork
from tests.cli_runner import Cli

SECRET = "REC-SECRET-4417"

SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    log("importing from", offset)
    url = settings["base_url"] + "/v1/templates?offset=" + str(offset) + "&key=" + settings["api_key"]
    data = fetch(url, headers={"Authorization": "Bearer " + settings["api_key"]}).json()
    return [{"externalId": t["id"], "name": t["name"]} for t in data["templates"]]
"""

#: what the host adds to a refusal an admin could waive (sandbox.egress waiver_hint)
WAIVER_HINT = (
    "; the platform admin can waive it with the host's egress allow-list "
    "(CRM_HOST_EGRESS_ALLOW; --allow-host for crm-host module run)"
)


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

    assert exchange["addresses"] == ["127.0.0.1"]  # what the host resolved to, for replay
    (logged,) = data["fetches"]  # the run's fetch log, as --show-log printed it
    assert logged["url"] == f"http://{address}/v1/templates?offset=0&key=***"
    assert logged["status"] == 200 and logged["bytes"] > 0
    assert f"-> 200 ({logged['ms']} ms, {logged['bytes']} bytes)" in recorded.stderr
    assert len(seen) == 1

    # replay under the same waiver, with another key: the service is never asked
    other = json.dumps({"api_key": "other-key", "base_url": f"http://{address}"})
    replay = ("module", "run", str(module), "ImportTemplates")
    replayed = cli.run(
        *replay, "0", "10", "--settings", other, "--replay", str(tape),
        "--allow-host", address, "--show-log",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == [{"externalId": "tpl-1", "name": "Welcome"}]
    assert f"fetch: GET http://{address}/v1/templates?offset=0&key=*** -> 200" in replayed.stderr
    assert len(seen) == 1

    unmatched = cli.run(
        *replay, "10", "10", "--settings", other, "--replay", str(tape), "--allow-host", address
    )
    assert unmatched.returncode == 1
    (line,) = unmatched.stderr.strip().splitlines()
    assert line.startswith("error: script_error: ")
    assert f"unmatched request: {tape} has no response for GET http://{address}" in line
    assert "offset=10&key=***; unused exchanges: GET " in line and "offset=0&key=***" in line
    assert line.endswith("(line 4)")
    assert len(seen) == 1


def test_replay_goes_through_the_egress_check(
    tmp_path: Path, service: tuple[str, list[str]]
) -> None:
    """The recorded 127.0.0.1 is judged again on replay: refused without the admin's
    waiver, and refused whatever the waiver once the manifest stops declaring the host."""
    address, seen = service
    module = write_module(tmp_path / "m", address)
    cli = Cli.in_dir(tmp_path)
    settings = json.dumps({"api_key": SECRET, "base_url": f"http://{address}"})
    tape = tmp_path / "t.json"
    run = ("module", "run", str(module), "ImportTemplates", "0", "10", "--settings", settings)
    assert cli.run(*run, "--allow-host", address, "--record", str(tape)).returncode == 0
    assert len(seen) == 1

    no_waiver = cli.run(*run, "--replay", str(tape))
    assert no_waiver.returncode == 1
    assert no_waiver.stderr.strip().splitlines() == [
        "error: egress_denied: fetch to 127.0.0.1 denied: loopback address"
        + WAIVER_HINT
        + " (line 4)"
    ]

    undeclared = write_module(tmp_path / "undeclared")  # egress: api.example.com only
    moved = cli.run(
        "module", "run", str(undeclared), "ImportTemplates", "0", "10", "--settings", settings,
        "--replay", str(tape), "--allow-host", address,
    )  # fmt: skip
    assert moved.returncode == 1
    (line,) = moved.stderr.strip().splitlines()
    assert line.startswith("error: egress_denied: fetch to 127.0.0.1 denied: ")
    assert "not in the module's egress list" in line
    assert len(seen) == 1  # nothing ever reached the service on replay


def test_a_recorded_name_is_judged_on_its_recorded_addresses(tmp_path: Path) -> None:
    """No DNS on replay: api.example.com is what the recording says it resolved to."""
    module = write_module(tmp_path / "m")
    cli = Cli.in_dir(tmp_path)
    exchange = {
        "request": {"method": "GET", "url": "https://api.example.com/v1/templates?offset=0&key=***"},
        "response": {"status": 200, "headers": {"content-type": "application/json"},
                     "body": json.dumps({"templates": [{"id": "t1", "name": "One"}]})},
    }  # fmt: skip
    settings = json.dumps({"api_key": SECRET, "base_url": "https://api.example.com"})
    run = ("module", "run", str(module), "ImportTemplates", "0", "10", "--settings", settings)

    public = tmp_path / "public.json"
    public.write_text(json.dumps(
        {"format": FORMAT, "exchanges": [{**exchange, "addresses": ["93.184.216.34"]}]}
    ))  # fmt: skip
    ok = cli.run(*run, "--replay", str(public))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == [{"externalId": "t1", "name": "One"}]

    private = tmp_path / "private.json"
    private.write_text(json.dumps(
        {"format": FORMAT, "exchanges": [{**exchange, "addresses": ["93.184.216.34", "10.0.0.7"]}]}
    ))  # fmt: skip
    denied = cli.run(*run, "--replay", str(private))
    assert denied.returncode == 1
    assert denied.stderr.strip().splitlines() == [
        "error: egress_denied: fetch to api.example.com denied: it resolves to 10.0.0.7, "
        "a private address" + WAIVER_HINT + " (line 4)"
    ]

    # a format 1 file (no addresses) still replays: the host is judged on its name alone
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "crm-host-recording/1", "exchanges": [exchange]}))
    legacy = cli.run(*run, "--replay", str(old))
    assert legacy.returncode == 0, legacy.stderr
    assert json.loads(legacy.stdout) == [{"externalId": "t1", "name": "One"}]
    undeclared = write_module(tmp_path / "other", "api.other.test")
    settings_elsewhere = json.dumps({"api_key": SECRET, "base_url": "https://api.other.test"})
    elsewhere = cli.run(
        "module", "run", str(undeclared), "ImportTemplates", "0", "10",
        "--settings", settings_elsewhere, "--replay", str(old),
    )  # fmt: skip
    assert elsewhere.returncode == 1
    assert "unmatched request" in elsewhere.stderr  # declared, resolved by name, not recorded

    unknown = tmp_path / "future.json"
    unknown.write_text(json.dumps({"format": "crm-host-recording/9", "exchanges": []}))
    refused = cli.run(*run, "--replay", str(unknown))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f'error: --replay: recording is invalid: {unknown}: expected an object with "format": '
        f"\"{FORMAT}\" (this version does not read 'crm-host-recording/9')"
    )


# --- in process, under the real Fetcher: the format's rules ------------------------------

POLICY = EgressPolicy.from_config(["a.example"])
PUBLIC = ["93.184.216.34"]


def _exchange(url: str, body: str | None = None, status: int = 200, **extra: object) -> Exchange:
    request: dict[str, object] = {"method": "POST", "url": url, "headers": {}, "body": body}
    request.update(extra)
    return Exchange(request, {"status": status, "headers": {}, "body": str(status)}, None, PUBLIC)


def _fetcher(network: FetchNetwork, secrets: list[str] | None = None) -> Fetcher:
    return Fetcher(
        POLICY,
        resolver=network.resolver,
        transport_factory=network.transport_factory,
        secrets=secrets or [],
    )


def test_equal_requests_replay_in_recorded_order_and_each_answers_once() -> None:
    recording = Recording(
        [_exchange("https://a.example/x", status=201), _exchange("https://a.example/x", status=202)]
    )
    replay = Replayer(recording, [])
    request = {"method": "post", "url": "https://a.example/x", "headers": {"X": "1"}}
    with _fetcher(replay.network()) as fetcher:
        assert fetcher.fetch(request)["status"] == 201
        assert fetcher.fetch(request)["status"] == 202
        with pytest.raises(ScriptError, match="unused exchanges: none"):
            fetcher.fetch(request)
    assert replay.misses == ["POST https://a.example/x"]


def test_body_is_matched_unless_removed_from_the_recording() -> None:
    recording = Recording([_exchange("https://a.example/x", body='{"n": 1}')])
    with _fetcher(Replayer(recording, []).network()) as fetcher:
        with pytest.raises(ScriptError, match="another body"):
            fetcher.fetch({"method": "POST", "url": "https://a.example/x", "json": {"n": 2}})
        assert fetcher.fetch({"method": "POST", "url": "https://a.example/x", "body": '{"n": 1}'})
    loose = Exchange(
        {"method": "POST", "url": "https://a.example/x"}, {"status": 200}, None, PUBLIC
    )
    with _fetcher(Replayer(Recording([loose]), []).network()) as fetcher:
        assert fetcher.fetch({"method": "POST", "url": "https://a.example/x", "body": "z"})


def test_secrets_in_url_and_body_are_masked_before_matching() -> None:
    recorder = Recorder(
        ["K1-live-secret"],
        connect=lambda: httpx.MockTransport(lambda request: httpx.Response(200, text="ok")),
    )
    request = {"method": "POST", "url": "https://a.example/x?key=K1-live-secret"}
    network = FetchNetwork(lambda host, port: PUBLIC, recorder.network().transport_factory)
    with _fetcher(network, ["K1-live-secret"]) as fetcher:
        fetcher.fetch({**request, "body": "token=K1-live-secret"})
    (exchange,) = recorder.recording.exchanges
    assert exchange.request["url"] == "https://a.example/x?key=***"
    assert exchange.request["body"] == "token=***"
    assert exchange.addresses == PUBLIC
    replay = Replayer(recorder.recording, ["K2-live-secret"])
    with _fetcher(replay.network(), ["K2-live-secret"]) as fetcher:
        answer = fetcher.fetch(
            {"method": "POST", "url": "https://a.example/x?key=K2-live-secret",
             "body": "token=K2-live-secret"}
        )  # fmt: skip
    assert answer["body"] == "ok"


def test_recorded_connection_errors_are_replayed_as_the_fetcher_words_them() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    recorder = Recorder([], connect=lambda: httpx.MockTransport(refuse))
    network = FetchNetwork(lambda host, port: PUBLIC, recorder.network().transport_factory)
    with _fetcher(network) as fetcher, pytest.raises(FetchFailed) as live:
        fetcher.fetch({"method": "GET", "url": "https://a.example/"})
    (exchange,) = recorder.recording.exchanges
    assert exchange.error is not None and exchange.error["exception"] == "ConnectError"
    replay = Replayer(recorder.recording, [])
    with _fetcher(replay.network()) as fetcher, pytest.raises(FetchFailed) as replayed:
        fetcher.fetch({"method": "GET", "url": "https://a.example/"})
    assert (
        replayed.value.message
        == live.value.message
        == ("fetch to a.example failed: connection refused")
    )


def test_a_replayed_redirect_is_followed_and_rechecked_hop_by_hop() -> None:
    """The Fetcher's redirect rules apply to recorded 3xx answers: the next hop is judged
    by the policy (an undeclared host is refused) and answered from the recording."""
    moved = Exchange(
        {"method": "GET", "url": "https://a.example/old", "body": None},
        {"status": 302, "headers": {"location": "https://evil.example/new"}, "body": ""},
        None,
        PUBLIC,
    )
    fetcher = _fetcher(Replayer(Recording([moved]), []).network())
    with fetcher, pytest.raises(EgressDenied, match=r"evil\.example is not in the module's egress"):
        fetcher.fetch({"url": "https://a.example/old"})
    assert [r.url for r in fetcher.records] == [
        "https://a.example/old",
        "https://evil.example/new",
    ]


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
