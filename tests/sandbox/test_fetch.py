"""The fetch shim against real local servers on 127.0.0.x (random ports, fake DNS).

Reaching 127.0.0.1 needs the admin allow-list, exactly as in production; each test that
opens it states how, and :func:`test_same_fetch_is_denied_without_the_allow_list` shows the
fetch is refused otherwise.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from sandbox.egress import EgressPolicy, UnresolvableHost
from sandbox.errors import EgressDenied, FetchFailed, LimitExceeded
from sandbox.fetch import Fetcher, FetchLimits
from tests.sandbox.http_servers import (
    LocalHTTPServer,
    RecordingListener,
    RequestHandler,
    closed_port,
    free_port_on,
    make_tls_pair,
)

API = "api.example.com"
MiB = 1024 * 1024


class FakeResolver:
    """Answers from a script of address lists, one per call (the last one repeats)."""

    def __init__(self, *answers: list[str], names: dict[str, list[str]] | None = None):
        self.answers = list(answers)
        self.names = names or {}
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host in self.names:
            return self.names[host]
        if not self.answers:
            raise UnresolvableHost(host, "unknown name (fake resolver)")
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def make_fetcher(
    allow: list[str] | None = None,
    egress: list[str] | None = None,
    resolver: FakeResolver | None = None,
    limits: FetchLimits | None = None,
    **kwargs: object,
) -> Fetcher:
    policy = EgressPolicy.from_config(
        egress if egress is not None else [API, "other.example.com"],
        allow if allow is not None else ["127.0.0.1"],
        resolver=resolver or FakeResolver(["127.0.0.1"]),
    )
    return Fetcher(policy, limits or FetchLimits(), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    srv = LocalHTTPServer()

    @srv.route("/hello")
    def hello(req: RequestHandler) -> None:
        req.reply(200, b'{"greeting": "hi"}', {"Content-Type": "application/json", "X-Id": "7"})

    @srv.route("/echo")
    def echo(req: RequestHandler) -> None:
        payload = {
            "method": req.command,
            "path": req.path,
            "body": req.body.decode(),
            "contentType": req.headers.get("content-type"),
            "host": req.headers.get("host"),
            "authorization": req.headers.get("authorization"),
            "cookie": req.headers.get("cookie"),
        }
        req.reply(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    with srv:
        yield srv


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with make_fetcher() as f:
        yield f


def url(srv: LocalHTTPServer, path: str, host: str = API) -> str:
    return srv.url(path, host=host)


# --------------------------------------------------------------------------- the happy path


def test_allowed_get_returns_status_headers_body_and_final_url(
    server: LocalHTTPServer, fetcher: Fetcher
) -> None:
    response = fetcher.fetch({"method": "GET", "url": url(server, "/hello"), "headers": {}})
    assert response["status"] == 200
    assert response["statusText"] == "OK"
    assert response["headers"]["content-type"] == "application/json"
    assert response["headers"]["x-id"] == "7"
    assert json.loads(response["body"]) == {"greeting": "hi"}
    assert response["url"] == url(server, "/hello")
    assert server.seen[0].headers["host"] == f"{API}:{server.port}"  # Host kept as named
    [record] = fetcher.records
    assert record.as_dict() == {
        "method": "GET",
        "url": url(server, "/hello"),
        "host": API,
        "status": 200,
        "bytes": 18,
        "ms": record.ms,
        "error": None,
    }
    json.dumps([r.as_dict() for r in fetcher.records])  # JSON-serialisable


def test_a_429_record_keeps_the_rate_limit_headers_and_only_those(
    server: LocalHTTPServer, fetcher: Fetcher
) -> None:
    @server.route("/busy")
    def busy(req: RequestHandler) -> None:
        headers = {
            "Retry-After": "12",
            "X-RateLimit-Limit": "150",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1392815263",
            "X-Request-Id": "r-1",
            "Set-Cookie": "session=1",
        }
        req.reply(429, b'{"errors": [{"message": "too many requests"}]}', headers)

    response = fetcher.fetch({"method": "GET", "url": url(server, "/busy")})
    hello = fetcher.fetch({"method": "GET", "url": url(server, "/hello")})
    assert (response["status"], hello["status"]) == (429, 200)
    assert response["headers"]["x-request-id"] == "r-1"  # the script still sees them all
    throttled, fine = (r.as_dict() for r in fetcher.records)
    assert throttled["rate_limit"] == {
        "retry-after": "12",
        "x-ratelimit-limit": "150",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "1392815263",
    }
    assert "rate_limit" not in fine  # any other status: the record is as it always was


def test_post_with_body_json_and_query(server: LocalHTTPServer, fetcher: Fetcher) -> None:
    response = fetcher.fetch(
        {
            "method": "post",
            "url": url(server, "/echo"),
            "headers": {"Content-Type": "text/plain", "Host": "evil.internal"},
            "body": "héllo",
            "query": {"page": 2},
        }
    )
    echoed = json.loads(response["body"])
    assert echoed["method"] == "POST"
    assert echoed["body"] == "héllo"
    assert echoed["contentType"] == "text/plain"
    assert echoed["path"] == "/echo?page=2"
    assert echoed["host"] == f"{API}:{server.port}"  # a script cannot override Host
    response = fetcher.fetch({"method": "PUT", "url": url(server, "/echo"), "json": {"a": [1]}})
    echoed = json.loads(response["body"])
    assert echoed["method"] == "PUT"
    assert json.loads(echoed["body"]) == {"a": [1]}
    assert echoed["contentType"] == "application/json"


def test_same_fetch_is_denied_without_the_allow_list(server: LocalHTTPServer) -> None:
    with make_fetcher(allow=[]) as fetcher, pytest.raises(EgressDenied) as info:
        fetcher.fetch({"url": url(server, "/hello")})
    assert str(info.value) == (
        f"fetch to {API} denied: it resolves to 127.0.0.1, a loopback address; "
        "the platform admin can waive it with the host's egress allow-list"
    )
    assert server.seen == []
    assert fetcher.records[0].error == "egress_denied"
    with make_fetcher(allow=[]) as fetcher, pytest.raises(EgressDenied, match="loopback"):
        fetcher.fetch({"url": url(server, "/hello", host="127.0.0.1")})


def test_ip_spellings_connect_to_the_address_they_denote(server: LocalHTTPServer) -> None:
    with make_fetcher(egress=["127.0.0.1"]) as fetcher:  # allow-list: 127.0.0.1
        response = fetcher.fetch({"url": url(server, "/hello", host="2130706433")})
    assert response["status"] == 200 and server.seen[0].client == "127.0.0.1"
    with make_fetcher(allow=[]) as fetcher:
        for host in ("0177.0.0.1", "0x7f.1", "127.1"):
            with pytest.raises(EgressDenied, match=rf"{host} is 127\.0\.0\.1, a loopback"):
                fetcher.fetch({"url": url(server, "/hello", host=host)})


def test_non_http_scheme_and_unlisted_host_are_denied(fetcher: Fetcher) -> None:
    with pytest.raises(EgressDenied, match="scheme 'file' is not allowed"):
        fetcher.fetch({"url": "file:///etc/passwd"})
    with pytest.raises(EgressDenied, match=r"host evil\.com is not in the module's egress list"):
        fetcher.fetch({"url": "http://evil.com/"})


# --------------------------------------------------------------------------- redirects


def test_redirects_are_followed_with_get_semantics_and_307_replays(
    server: LocalHTTPServer, fetcher: Fetcher
) -> None:
    @server.route("/see-other")
    def see_other(req: RequestHandler) -> None:
        req.reply(303, headers={"Location": "/echo"})

    @server.route("/temporary")
    def temporary(req: RequestHandler) -> None:
        req.reply(307, headers={"Location": "/echo"})

    echoed = json.loads(
        fetcher.fetch({"method": "POST", "url": url(server, "/see-other"), "body": "x"})["body"]
    )
    assert (echoed["method"], echoed["body"]) == ("GET", "")
    echoed = json.loads(
        fetcher.fetch({"method": "POST", "url": url(server, "/temporary"), "body": "x"})["body"]
    )
    assert (echoed["method"], echoed["body"]) == ("POST", "x")
    assert [(r.status, r.method) for r in fetcher.records] == [
        (303, "POST"),
        (200, "GET"),
        (307, "POST"),
        (200, "POST"),
    ]


def test_redirect_to_unallowed_loopback_is_denied_at_the_hop(server: LocalHTTPServer) -> None:
    @server.route("/to-loopback")
    def to_loopback(req: RequestHandler) -> None:
        req.reply(302, headers={"Location": url(server, "/secret", host="127.0.0.1")})

    # The admin trusts the host by name (it lives on loopback) but not 127.0.0.1 itself.
    with (
        make_fetcher(allow=[API]) as fetcher,
        pytest.raises(EgressDenied, match=r"fetch to 127\.0\.0\.1 denied: loopback address"),
    ):
        fetcher.fetch({"url": url(server, "/to-loopback")})
    assert [s.path for s in server.seen] == ["/to-loopback"]
    assert [(r.host, r.status, r.error) for r in fetcher.records] == [
        (API, 302, None),
        ("127.0.0.1", None, "egress_denied"),
    ]


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local / cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://metadata.google.internal/", "not in the module's egress list"),
        ("gopher://api.example.com/", "scheme 'gopher' is not allowed"),
    ],
)
def test_redirect_to_metadata_or_other_schemes_is_denied(
    server: LocalHTTPServer, fetcher: Fetcher, location: str, message: str
) -> None:
    @server.route("/bounce")
    def bounce(req: RequestHandler) -> None:
        req.reply(301, headers={"Location": location})

    with pytest.raises(EgressDenied, match=message):
        fetcher.fetch({"url": url(server, "/bounce")})


def test_cross_origin_redirect_drops_credentials(server: LocalHTTPServer, fetcher: Fetcher) -> None:
    @server.route("/away")
    def away(req: RequestHandler) -> None:
        req.reply(302, headers={"Location": url(server, "/echo", host="other.example.com")})

    @server.route("/here")
    def here(req: RequestHandler) -> None:
        req.reply(302, headers={"Location": "/echo"})

    auth = {"Authorization": "Bearer secret"}
    same = json.loads(fetcher.fetch({"url": url(server, "/here"), "headers": auth})["body"])
    assert same["authorization"] == "Bearer secret"
    other = json.loads(fetcher.fetch({"url": url(server, "/away"), "headers": auth})["body"])
    assert other["authorization"] is None
    assert other["host"] == f"other.example.com:{server.port}"


# Two real servers, two origins, both in egress: what the second one receives is what left.
SECRET = "sk-live-7f3a9c"


@pytest.fixture
def other() -> Iterator[LocalHTTPServer]:
    srv = LocalHTTPServer()
    srv.route("/landing")(lambda req: req.reply(200, b"landed"))
    with srv:
        yield srv


def bounce_to(server: LocalHTTPServer, status: int, location: str) -> str:
    @server.route(f"/bounce-{status}")
    def bounce(req: RequestHandler) -> None:
        req.reply(status, b"moved", {"Location": location})

    return url(server, f"/bounce-{status}")


def test_cross_origin_redirect_forwards_only_harmless_secret_free_headers(
    server: LocalHTTPServer, other: LocalHTTPServer
) -> None:
    start = bounce_to(server, 302, url(other, "/landing", host="other.example.com"))
    headers = {
        "Authorization": f"Bearer {SECRET}",
        "X-Api-Key": SECRET,
        "X-Trace": "plain-value",
        "Cookie": "session=1",
        "Accept": "application/json",
        "Accept-Language": f"en;q=0.9, {SECRET}",  # harmless by name, not by value
        "Content-Type": "text/plain",
    }
    with make_fetcher(secrets=[SECRET]) as fetcher:
        response = fetcher.fetch({"url": start, "headers": headers})
    assert (response["status"], response["body"]) == (200, "landed")
    assert server.seen[0].headers["authorization"] == f"Bearer {SECRET}"  # first origin: all
    [arrived] = other.seen
    assert arrived.headers["host"] == f"other.example.com:{other.port}"
    assert arrived.headers["accept"] == "application/json"
    assert arrived.headers["content-type"] == "text/plain"
    assert arrived.headers["user-agent"].startswith("crm-module-host-fetch/")
    for dropped in ("authorization", "x-api-key", "x-trace", "cookie", "accept-language"):
        assert dropped not in arrived.headers, dropped
    assert SECRET not in json.dumps(arrived.headers)


def test_same_origin_redirect_keeps_every_header(server: LocalHTTPServer) -> None:
    start = bounce_to(server, 307, "/echo")
    with make_fetcher(secrets=[SECRET]) as fetcher:
        response = fetcher.fetch(
            {"method": "POST", "url": start, "body": "x", "headers": {"X-Api-Key": SECRET}}
        )
    assert json.loads(response["body"])["body"] == "x"
    assert [s.headers.get("x-api-key") for s in server.seen] == [SECRET, SECRET]


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize(
    "request_",
    [
        {"method": "POST", "body": "card=4111"},
        {"method": "PUT", "json": {"a": 1}},
        {"headers": {"Authorization": "Basic abc"}},
        {"headers": {"Cookie": "session=1"}},
        {"headers": {"X-Api-Key": SECRET}},
    ],
    ids=["body", "json", "authorization", "cookie", "secret-header"],
)
def test_cross_origin_replaying_redirect_is_handed_back_not_followed(
    server: LocalHTTPServer, other: LocalHTTPServer, status: int, request_: dict[str, object]
) -> None:
    location = url(other, "/landing", host="other.example.com")
    start = bounce_to(server, status, location)
    with make_fetcher(secrets=[SECRET]) as fetcher:
        response = fetcher.fetch({**request_, "url": start})
        records = [(r.host, r.status) for r in fetcher.records]
    assert response["status"] == status
    assert response["headers"]["location"] == location
    assert response["body"] == "moved"
    assert response["url"] == start
    assert other.seen == []
    assert records == [(API, status)]


def test_cross_origin_307_without_body_or_credentials_is_followed(
    server: LocalHTTPServer, other: LocalHTTPServer
) -> None:
    start = bounce_to(server, 307, url(other, "/landing", host="other.example.com"))
    with make_fetcher(secrets=[SECRET]) as fetcher:
        response = fetcher.fetch({"url": start, "headers": {"X-Trace": "t-1"}})
    assert response["body"] == "landed"
    assert "x-trace" not in other.seen[0].headers


def test_cross_origin_303_after_post_drops_the_body_and_follows(
    server: LocalHTTPServer, other: LocalHTTPServer
) -> None:
    start = bounce_to(server, 303, url(other, "/landing", host="other.example.com"))
    with make_fetcher(secrets=[SECRET]) as fetcher:
        response = fetcher.fetch({"method": "POST", "url": start, "body": "card=4111"})
    assert response["body"] == "landed"
    [arrived] = other.seen
    assert (arrived.method, arrived.body) == ("GET", b"")
    assert "content-type" not in arrived.headers


# --------------------------------------------------------------------------- waiver, not grant


def test_admin_allow_list_alone_never_opens_a_destination(server: LocalHTTPServer) -> None:
    with make_fetcher(egress=[], allow=["127.0.0.1", "127.0.0.0/8"]) as fetcher:
        with pytest.raises(EgressDenied) as info:
            fetcher.fetch({"url": url(server, "/hello", host="127.0.0.1")})
        assert "127.0.0.1 is an IP address not in the module's egress list" in str(info.value)
        with pytest.raises(EgressDenied, match=r"host api\.example\.com is not in the module"):
            fetcher.fetch({"url": url(server, "/hello")})
    assert server.seen == []


def test_manifest_ip_and_port_is_checked_at_fetch_time(server: LocalHTTPServer) -> None:
    listed = [f"127.0.0.1:{server.port}"]
    with make_fetcher(egress=listed, allow=[]) as fetcher, pytest.raises(EgressDenied) as info:
        fetcher.fetch({"url": url(server, "/hello", host="127.0.0.1")})
    assert str(info.value) == (
        "fetch to 127.0.0.1 denied: loopback address; "
        "the platform admin can waive it with the host's egress allow-list"
    )
    assert server.seen == []
    with make_fetcher(egress=listed, allow=["127.0.0.1"]) as fetcher:
        assert fetcher.fetch({"url": url(server, "/hello", host="127.0.0.1")})["status"] == 200
        unlisted = closed_port()
        with pytest.raises(EgressDenied, match=rf"127\.0\.0\.1 port {unlisted} is not in the"):
            fetcher.fetch({"url": f"http://127.0.0.1:{unlisted}/hello"})
    assert len(server.seen) == 1


def test_redirect_loop_is_capped(server: LocalHTTPServer, fetcher: Fetcher) -> None:
    @server.route("/loop")
    def loop(req: RequestHandler) -> None:
        req.reply(302, headers={"Location": "/loop"})

    with pytest.raises(LimitExceeded, match=r"too many redirects \(more than 5\)"):
        fetcher.fetch({"url": url(server, "/loop")})
    assert len(server.seen) == 6  # the request and five redirects, then stop


# --------------------------------------------------------------------------- pinning


def test_dns_rebinding_cannot_redirect_the_connection() -> None:
    """The resolver answers 127.0.0.1 (trusted, standing in for a public address) first,
    then 127.0.0.2 (not trusted). Servers on both, same port, record who got connections."""
    port = free_port_on("127.0.0.1", "127.0.0.2")
    good, evil = LocalHTTPServer("127.0.0.1", port), LocalHTTPServer("127.0.0.2", port)
    for srv in (good, evil):
        srv.route("/")(lambda req: req.reply(200, b"ok"))
    resolver = FakeResolver(["127.0.0.1"], ["127.0.0.2"])
    with good, evil, make_fetcher(allow=["127.0.0.1/32"], resolver=resolver) as fetcher:
        response = fetcher.fetch({"url": f"http://{API}:{port}/"})
        assert response["body"] == "ok"
        assert resolver.calls == [API]  # one lookup; httpx never resolved the name again
        assert [(s.client, s.headers["host"]) for s in good.seen] == [
            ("127.0.0.1", f"{API}:{port}")
        ]
        with pytest.raises(EgressDenied, match=r"resolves to 127\.0\.0\.2, a loopback"):
            fetcher.fetch({"url": f"http://{API}:{port}/"})
    assert evil.seen == []


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_ipv6_pinning_and_mapped_addresses() -> None:
    srv = LocalHTTPServer("::1")
    srv.route("/")(lambda req: req.reply(200, b"six"))
    with srv:
        with make_fetcher(
            allow=["::1"], egress=[API, "[::1]"], resolver=FakeResolver(["::1"])
        ) as fetcher:
            assert fetcher.fetch({"url": srv.url("/", host=API)})["body"] == "six"
            assert fetcher.fetch({"url": srv.url("/")})["body"] == "six"  # http://[::1]:p/
        assert [s.headers["host"] for s in srv.seen] == [f"{API}:{srv.port}", f"[::1]:{srv.port}"]
        with (
            make_fetcher(allow=[], resolver=FakeResolver(["::1"])) as fetcher,
            pytest.raises(EgressDenied, match="it resolves to ::1, a loopback address"),
        ):
            fetcher.fetch({"url": srv.url("/", host=API)})


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_manifest_bracketed_ipv6_literal_needs_the_waiver() -> None:
    srv = LocalHTTPServer("::1")
    srv.route("/")(lambda req: req.reply(200, b"six"))
    with srv:
        with (
            make_fetcher(egress=[f"[::1]:{srv.port}"], allow=[]) as fetcher,
            pytest.raises(EgressDenied, match="fetch to ::1 denied: loopback address"),
        ):
            fetcher.fetch({"url": srv.url("/")})
        assert srv.seen == []
        with make_fetcher(egress=[f"[::1]:{srv.port}"], allow=["[::1]"]) as fetcher:
            assert fetcher.fetch({"url": srv.url("/")})["body"] == "six"
            with pytest.raises(EgressDenied, match=r"::1 port 80 is not in the module's egress"):
                fetcher.fetch({"url": "http://[::1]/"})
        with (
            make_fetcher(egress=[], allow=["::1/128"]) as fetcher,
            pytest.raises(EgressDenied, match="not in the module's egress list"),
        ):
            fetcher.fetch({"url": srv.url("/")})
    assert len(srv.seen) == 1


def test_mapped_ipv6_answer_is_pinned_to_its_ipv4_address(server: LocalHTTPServer) -> None:
    resolver = FakeResolver(["::ffff:127.0.0.1"])
    with make_fetcher(allow=["127.0.0.1"], resolver=resolver) as fetcher:
        assert fetcher.fetch({"url": url(server, "/hello")})["status"] == 200
    assert server.seen[0].client == "127.0.0.1"


def test_pinned_request_carries_original_host_and_sni() -> None:
    seen: list[httpx.Request] = []

    def inner() -> httpx.BaseTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, content=b"pinned")

        return httpx.MockTransport(handle)

    resolver = FakeResolver(["93.184.216.34"])
    with make_fetcher(allow=[], resolver=resolver, transport_factory=inner) as fetcher:
        response = fetcher.fetch({"url": f"https://{API}/v3/mail?x=1"})
    assert response["body"] == "pinned"
    assert response["url"] == f"https://{API}/v3/mail?x=1"
    [request] = seen
    assert str(request.url) == "https://93.184.216.34/v3/mail?x=1"
    assert request.headers["host"] == API
    assert request.extensions["sni_hostname"] == API


def test_https_verifies_the_certificate_for_the_name_while_pinned() -> None:
    tls = make_tls_pair(API)
    srv = LocalHTTPServer(tls=tls.server)
    srv.route("/")(lambda req: req.reply(200, b"secure"))
    with srv, make_fetcher(verify=tls.client) as fetcher:
        assert fetcher.fetch({"url": srv.url("/", host=API)})["body"] == "secure"
        # other.example.com is in egress and resolves to the same IP, but the certificate
        # does not name it: verification fails, it is a network failure.
        with pytest.raises(FetchFailed, match=r"fetch to other\.example\.com failed"):
            fetcher.fetch({"url": srv.url("/", host="other.example.com")})


# --------------------------------------------------------------------------- caps and time


def test_huge_streamed_response_stops_at_the_cap_with_bounded_memory(
    server: LocalHTTPServer,
) -> None:
    block = b"x" * (256 * 1024)

    @server.route("/huge")
    def huge(req: RequestHandler) -> None:
        req.stream(200, (block for _ in range(200)))  # 50 MiB, chunked, no length

    cap = 1 * MiB
    with make_fetcher(limits=FetchLimits(max_response_bytes=cap)) as fetcher:
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(LimitExceeded, match="exceeded the 1048576-byte limit"):
                fetcher.fetch({"url": url(server, "/huge")})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert time.monotonic() - started < 2
    assert peak < 4 * cap, f"peak {peak} bytes"
    assert fetcher.records[0].error == "limit_exceeded"
    time.sleep(0.05)
    assert server.bytes_sent < 50 * MiB


def test_declared_content_length_over_the_cap_fails_before_reading(
    server: LocalHTTPServer,
) -> None:
    @server.route("/declared")
    def declared(req: RequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(50 * MiB))
        req.end_headers()
        req.wfile.write(b"x" * 1024)

    with (
        make_fetcher(limits=FetchLimits(max_response_bytes=MiB)) as fetcher,
        pytest.raises(LimitExceeded, match="is 52428800 bytes, over the 1048576-byte limit"),
    ):
        fetcher.fetch({"url": url(server, "/declared")})


def test_gzip_is_decoded_and_a_gzip_bomb_is_capped(server: LocalHTTPServer) -> None:
    small = gzip.compress(b'{"ok": true}')
    bomb = gzip.compress(b"\0" * (16 * MiB))  # ~16 KiB on the wire

    @server.route("/small")
    def small_route(req: RequestHandler) -> None:
        req.reply(200, small, {"Content-Encoding": "gzip"})

    @server.route("/bomb")
    def bomb_route(req: RequestHandler) -> None:
        req.reply(200, bomb, {"Content-Encoding": "gzip"})

    with make_fetcher(limits=FetchLimits(max_response_bytes=MiB)) as fetcher:
        assert fetcher.fetch({"url": url(server, "/small")})["body"] == '{"ok": true}'
        assert server.seen[0].headers["accept-encoding"] == "gzip, deflate"
        tracemalloc.start()
        try:
            with pytest.raises(LimitExceeded):
                fetcher.fetch({"url": url(server, "/bomb")})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * MiB, f"peak {peak} bytes"


def test_slow_response_hits_the_timeout(server: LocalHTTPServer) -> None:
    @server.route("/slow")
    def slow(req: RequestHandler) -> None:
        server.stopping.wait(3)
        req.reply(200, b"late")

    # The request asks for 5 s; the limit (0.3 s) wins.
    with make_fetcher(limits=FetchLimits(timeout_s=0.3)) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match=r"fetch to api.example.com timed out after 0.3s"):
            fetcher.fetch({"url": url(server, "/slow"), "timeout": 5})
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        with pytest.raises(FetchFailed, match=r"timed out after 0\.2s"):
            fetcher.fetch({"url": url(server, "/slow"), "timeout": 0.2})
        assert time.monotonic() - started < 1.5
    assert fetcher.records[0].error == "script_error"


def test_slow_drip_body_hits_the_overall_deadline(server: LocalHTTPServer) -> None:
    def drip() -> Iterator[bytes]:
        for _ in range(40):
            if server.stopping.wait(0.05):
                return
            yield b"."

    @server.route("/drip")
    def drip_route(req: RequestHandler) -> None:
        req.stream(200, drip())

    with make_fetcher(limits=FetchLimits(timeout_s=0.4)) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match="timed out"):
            fetcher.fetch({"url": url(server, "/drip")})
        assert time.monotonic() - started < 1.2


def test_hanging_dns_resolution_is_bounded_by_the_timeout() -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(3)
        return ["127.0.0.1"]

    policy = EgressPolicy.from_config([API], ["127.0.0.1"], resolver=hanging)
    try:
        with Fetcher(policy, FetchLimits(timeout_s=0.2)) as fetcher:
            started = time.monotonic()
            with pytest.raises(FetchFailed, match="timed out"):
                fetcher.fetch({"url": f"http://{API}/"})
            assert time.monotonic() - started < 1
    finally:
        release.set()


def test_too_many_fetches_fail_on_the_n_plus_first(
    server: LocalHTTPServer,
) -> None:
    with make_fetcher(limits=FetchLimits(max_fetches=3)) as fetcher:
        for _ in range(3):
            assert fetcher.fetch({"url": url(server, "/hello")})["status"] == 200
        with pytest.raises(LimitExceeded, match="at most 3 fetch calls per invocation"):
            fetcher.fetch({"url": url(server, "/hello")})
        with pytest.raises(LimitExceeded):
            fetcher.fetch({"url": url(server, "/hello")})
    assert len(server.seen) == 3
    assert [r.error for r in fetcher.records] == [None, None, None, "limit_exceeded"]


# --------------------------------------------------------------------------- environment


def test_environment_proxies_are_ignored(
    server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RecordingListener() as proxy:
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with make_fetcher() as fetcher:
            assert fetcher.fetch({"url": url(server, "/hello")})["status"] == 200
        # Sanity: a client that honours the environment would have used the proxy.
        with httpx.Client() as honest:
            assert honest.get(url(server, "/hello", host="127.0.0.1")).status_code == 502
    assert proxy.connections == 1  # only the sanity client's
    assert len(server.seen) == 1


# --------------------------------------------------------------------------- failures


def test_connection_refused_is_a_catchable_fetch_failure() -> None:
    with (
        make_fetcher() as fetcher,
        pytest.raises(FetchFailed, match=r"fetch to api\.example\.com failed") as info,
    ):
        fetcher.fetch({"url": f"http://{API}:{closed_port()}/"})
    assert info.value.kind == "script_error"
    assert fetcher.records[0].error == "script_error"


def test_unresolvable_host_is_a_fetch_failure() -> None:
    with (
        make_fetcher(resolver=FakeResolver()) as fetcher,
        pytest.raises(FetchFailed, match=r"could not resolve host api\.example\.com"),
    ):
        fetcher.fetch({"url": f"http://{API}/"})


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"url": ""}, "needs a url"),
        ({"url": "http://api.example.com/", "method": "CONNECT"}, "not supported"),
        ({"url": "http://api.example.com/", "headers": {"X": "a\r\nB: c"}}, "control"),
        ({"url": "http://api.example.com/", "timeout": -1}, "positive"),
        ({"url": "http://api.example.com/", "body": 5}, "must be a string"),
        ({"url": "http://api.example.com/", "headers": ["X"]}, "must be a mapping"),
        ({"url": "http://api.example.com/", "headers": {"X": "é"}}, "only ASCII"),
        ({"url": "http://api.example.com/", "json": {1j}}, "not JSON-serialisable"),
    ],
)
def test_invalid_requests_fail_clearly(request_: dict[str, object], message: str) -> None:
    with make_fetcher() as fetcher, pytest.raises(FetchFailed, match=message):
        fetcher.fetch(request_)


def test_binary_and_latin1_bodies_decode_without_failing(
    server: LocalHTTPServer, fetcher: Fetcher
) -> None:
    @server.route("/binary")
    def binary(req: RequestHandler) -> None:
        req.reply(200, b"\xff\xfe\x00ok", {"Content-Type": "application/octet-stream"})

    @server.route("/latin1")
    def latin1(req: RequestHandler) -> None:
        req.reply(200, "café".encode("latin-1"), {"Content-Type": "text/plain; charset=latin-1"})

    assert fetcher.fetch({"url": url(server, "/binary")})["body"] == "\ufffd\ufffd\x00ok"
    assert fetcher.fetch({"url": url(server, "/latin1")})["body"] == "café"


def test_head_with_a_large_declared_length_is_not_a_cap_breach(
    server: LocalHTTPServer, fetcher: Fetcher
) -> None:
    @server.route("/big-head")
    def big_head(req: RequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(50 * MiB))
        req.end_headers()

    response = fetcher.fetch({"method": "HEAD", "url": url(server, "/big-head")})
    assert response["status"] == 200 and response["body"] == ""
    assert response["headers"]["content-length"] == str(50 * MiB)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("/relative/path", FetchFailed, "an absolute http(s) URL with a host is required"),
        ("api.example.com/x", FetchFailed, "an absolute http(s) URL with a host is required"),
        ("http:///no-host", EgressDenied, "fetch to (no host) denied: empty host"),
    ],
)
def test_relative_or_hostless_urls_are_refused(bad: str, error: type, message: str) -> None:
    with make_fetcher() as fetcher, pytest.raises(error) as info:
        fetcher.fetch({"url": bad})
    assert message in str(info.value)


def test_limits_can_only_be_lowered() -> None:
    limits = FetchLimits().lowered(max_fetches=100, timeout_s=2, max_response_bytes=0)
    assert limits == FetchLimits(max_fetches=50, timeout_s=2, max_response_bytes=0)


def test_cookies_set_by_a_server_are_not_replayed(
    server: LocalHTTPServer, fetcher: Fetcher
) -> None:
    @server.route("/login")
    def login(req: RequestHandler) -> None:
        req.reply(200, b"", {"Set-Cookie": "session=abc; Path=/"})

    login_response = fetcher.fetch({"url": url(server, "/login")})
    assert login_response["headers"]["set-cookie"].startswith("session=abc")
    assert json.loads(fetcher.fetch({"url": url(server, "/echo")})["body"])["cookie"] is None
    echoed = fetcher.fetch({"url": url(server, "/echo"), "headers": {"Cookie": "session=abc"}})
    assert json.loads(echoed["body"])["cookie"] == "session=abc"


def test_fetch_log_keeps_the_full_url_with_secret_values_masked(server: LocalHTTPServer) -> None:
    with make_fetcher(secrets=[SECRET]) as fetcher:
        fetcher.fetch({"url": url(server, f"/hello/{SECRET}?key={SECRET}&page=2")})
        fetcher.fetch({"url": url(server, "/hello"), "query": {"page": "3", "token": SECRET}})
    first, second = fetcher.records
    assert first.url == url(server, "/hello/***?key=***&page=2")
    assert second.url == url(server, "/hello?page=3&token=***")
    assert SECRET not in json.dumps([r.as_dict() for r in fetcher.records])
    assert [s.path for s in server.seen] == [
        f"/hello/{SECRET}?key={SECRET}&page=2",
        f"/hello?page=3&token={SECRET}",
    ]
