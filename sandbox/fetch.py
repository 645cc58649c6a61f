"""The ``fetch()`` shim: HTTP for sandboxed scripts, through an SSRF-proof httpx transport.

Every request — the first one and each redirect hop — goes through the
:class:`~sandbox.transport.PinnedTransport`, which asks the egress policy for a verdict and
connects to the pinned IP only; response bodies are read by :mod:`sandbox.response_body`.

:class:`Fetcher` is what a worker gives one invocation: JSON-compatible dicts in and out,
manual redirects (each hop re-checked), a per-call deadline, a streamed response-size cap
that never buffers more than the cap (compressed bodies included), a per-invocation call
cap, and a record of every request for the invocation log.

Redirects across origins carry nothing the next origin was not meant to see: only the
headers of :data:`CROSS_ORIGIN_HEADERS` go on, never one whose value contains a secret of
the invocation, and a 307/308 that would replay a body or a credential to another origin is
not followed at all — the script gets the 3xx and decides itself.
"""

from __future__ import annotations

import http
import json as jsonlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from sandbox.egress import EgressPolicy, Resolver, UnresolvableHost
from sandbox.errors import EgressDenied, FetchFailed, LimitExceeded, SandboxError
from sandbox.invocation import redact_text
from sandbox.response_body import CappedBody, decode_text, raw_chunks
from sandbox.transport import PinnedTransport

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
USER_AGENT = "crm-module-host-fetch/1"
# Headers the shim owns: a script may not point Host elsewhere, frame the body itself, or
# ask for an encoding the size cap cannot decode incrementally.
_OWNED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "accept-encoding",
    }
)
#: The only request headers a redirect to another origin carries (what a browser would send
#: unprompted); everything else — Authorization, Cookie, X-Api-Key, ... — stays behind.
CROSS_ORIGIN_HEADERS = frozenset(
    {"accept", "accept-language", "accept-encoding", "user-agent", "content-type"}
)
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_REPLAYING_STATUSES = frozenset({307, 308})
TOO_MANY_REQUESTS = 429
#: Response headers a 429's record keeps: the standard hint, the widespread ``X-RateLimit-*``
#: family (SendGrid, GitHub, ...) and the IETF draft's ``RateLimit-*`` fields.
RATE_LIMIT_HEADERS = (
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
)
_MAX_RATE_LIMIT_VALUE = 100  # characters of one kept header value


@dataclass(frozen=True)
class FetchLimits:
    """Per-invocation fetch limits (SPEC §5 defaults; a manifest may only lower them)."""

    max_fetches: int = 50
    timeout_s: float = 10.0
    max_response_bytes: int = 10 * 1024 * 1024

    def lowered(
        self,
        *,
        max_fetches: int | None = None,
        timeout_s: float | None = None,
        max_response_bytes: int | None = None,
    ) -> FetchLimits:
        """These limits, lowered (never raised) by the given values."""
        return FetchLimits(
            max_fetches=_lower(self.max_fetches, max_fetches),
            timeout_s=_lower(self.timeout_s, timeout_s),
            max_response_bytes=_lower(self.max_response_bytes, max_response_bytes),
        )


def _lower(current: Any, asked: Any) -> Any:
    return current if asked is None else min(current, asked)


def _rate_limit_headers(headers: httpx.Headers) -> dict[str, str]:
    """The rate-limit headers of a 429 response, lower-cased names, values cut short."""
    kept = (name for name in RATE_LIMIT_HEADERS if name in headers)
    return {name: headers[name][:_MAX_RATE_LIMIT_VALUE] for name in kept}


@dataclass
class FetchRecord:
    """One HTTP request (each redirect hop is its own record) for the fetch log: the
    invocation log, ``module run --show-log`` and recordings all show these fields.

    ``url`` is the full URL with the invocation's secret values masked (path and query
    included, also percent-encoded), so an API key in a query string never reaches a log."""

    method: str
    url: str
    host: str
    status: int | None = None
    bytes: int = 0
    ms: float = 0.0
    error: str | None = None
    rate_limit: dict[str, str] | None = None
    """On a 429 only: the response's rate-limit headers (:data:`RATE_LIMIT_HEADERS`), so
    whoever runs the invocation can honour ``Retry-After`` without seeing the response."""

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self.rate_limit is None:  # the usual case: keep the log's rows as they were
            del values["rate_limit"]
        return values


# --------------------------------------------------------------------------- the fetcher


@dataclass
class _Call:
    """A script's request, validated."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    params: dict[str, str] | None
    timeout: float
    deadline: float = field(default=0.0)


class Fetcher:
    """``fetch()`` for one invocation. Not thread-safe; create one per invocation.

    ``resolver`` overrides the policy's resolver; ``transport_factory`` builds the
    transport that actually connects (given pinned requests), ``verify`` is passed to the
    default one (a ``ssl.SSLContext`` for private CAs). ``secrets`` are the invocation's
    secret values (``Invocation.redact``): a header carrying one never crosses origins."""

    def __init__(
        self,
        policy: EgressPolicy,
        limits: FetchLimits | None = None,
        *,
        resolver: Resolver | None = None,
        transport_factory: Callable[[], httpx.BaseTransport] | None = None,
        verify: Any = True,
        clock: Callable[[], float] = time.monotonic,
        secrets: Sequence[str] = (),
    ):
        self.policy = policy
        self.secrets = tuple(s for s in secrets if s)
        self.limits = limits or FetchLimits()
        self.records: list[FetchRecord] = []
        self.calls = 0
        self._clock = clock
        self.transport = PinnedTransport(
            policy, resolver=resolver, inner_factory=transport_factory, verify=verify
        )
        self._client = httpx.Client(
            transport=self.transport,
            trust_env=False,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
            timeout=self.limits.timeout_s,
        )

    # -- public API --------------------------------------------------------------------

    def fetch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Perform one script ``fetch``; see the module docstring for the rules.

        ``request``: ``{method, url, headers, body (str|None), json?, query?, timeout}``.
        Returns ``{status, statusText, headers, url, body}`` (lowercase header names, body
        decoded as text). Raises :class:`EgressDenied`, :class:`LimitExceeded` or
        :class:`FetchFailed`."""
        self.calls += 1
        if self.calls > self.limits.max_fetches:
            if self.calls == self.limits.max_fetches + 1:
                self.records.append(
                    FetchRecord(
                        str(request.get("method") or "GET").upper(),
                        self._shown_url(request.get("url")),
                        _host_of(request.get("url")),
                        error=LimitExceeded.kind,
                    )
                )
            raise LimitExceeded(
                f"fetch limit reached: at most {self.limits.max_fetches} fetch calls per invocation"
            )
        call = self._validate(request)
        call.deadline = self._clock() + call.timeout
        return self._follow(call)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _validate(self, request: Mapping[str, Any]) -> _Call:
        if not isinstance(request, Mapping):
            raise FetchFailed("fetch request must be a mapping")
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise FetchFailed("fetch needs a url (a string)")
        method = str(request.get("method") or "GET").upper()
        if method not in ALLOWED_METHODS:
            raise FetchFailed(f"fetch method {method!r} is not supported")
        raw_headers = request.get("headers") or {}
        if not isinstance(raw_headers, Mapping):
            raise FetchFailed("fetch headers must be a mapping of names to strings")
        headers: dict[str, str] = {}
        for name, value in raw_headers.items():
            if not isinstance(name, str) or not isinstance(value, str | int | float):
                raise FetchFailed(f"invalid header {name!r}: names and values are strings")
            text = str(value)
            if any(c in name + text for c in "\r\n\0") or not name.strip():
                raise FetchFailed(f"invalid header {name!r}: control characters")
            if not (name + text).isascii():
                raise FetchFailed(f"invalid header {name!r}: only ASCII is allowed in headers")
            if name.lower() not in _OWNED_HEADERS:
                headers[name] = text
        body = request.get("body")
        content: bytes | None
        if body is None and request.get("json") is not None:
            try:
                content = jsonlib.dumps(request["json"]).encode()
            except (TypeError, ValueError) as exc:
                raise FetchFailed(f"fetch json is not JSON-serialisable: {exc}") from exc
            if not any(k.lower() == "content-type" for k in headers):
                headers["content-type"] = "application/json"
        elif body is None:
            content = None
        elif isinstance(body, str):
            content = body.encode("utf-8")
        elif isinstance(body, bytes | bytearray):
            content = bytes(body)
        else:
            raise FetchFailed("fetch body must be a string")
        query = request.get("query")
        params = {str(k): str(v) for k, v in query.items()} if isinstance(query, Mapping) else None
        timeout = self.limits.timeout_s
        requested = request.get("timeout")
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int | float):
                raise FetchFailed("fetch timeout must be a positive number of seconds")
            if requested <= 0:
                raise FetchFailed("fetch timeout must be a positive number of seconds")
            timeout = min(float(requested), timeout)
        return _Call(method, url, headers, content, params, timeout)

    def _follow(self, call: _Call) -> dict[str, Any]:
        method, url, headers, body = call.method, call.url, dict(call.headers), call.body
        params = call.params
        for hop in range(MAX_REDIRECTS + 1):
            response, record, started = self._send(method, url, headers, body, params, call)
            record.status = response.status_code
            if response.status_code == TOO_MANY_REQUESTS:
                record.rate_limit = _rate_limit_headers(response.headers)
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return self._finish(response, record, started, call)
            record.ms = round((self._clock() - started) * 1000, 1)
            if hop == MAX_REDIRECTS:
                response.close()
                break
            try:
                next_url = response.url.join(location)
            except httpx.InvalidURL as exc:
                response.close()
                raise FetchFailed(f"invalid redirect location from {record.host}") from exc
            cross_origin = _origin(next_url) != _origin(response.url)
            replays = response.status_code in _REPLAYING_STATUSES
            if cross_origin and replays and (body or self._carries_credentials(headers)):
                # Re-sending the body or a credential to an origin the script did not name
                # is the script's decision, not ours: hand it the 3xx.
                return self._finish(response, record, started, call)
            response.close()
            # 301/302/303 turn into a GET without a body (what browsers do); 307/308 replay.
            if response.status_code in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if not k.lower().startswith("content-")}
            if cross_origin:
                headers = self._cross_origin_headers(headers)
            url, params = str(next_url), None
        raise LimitExceeded(
            f"too many redirects (more than {MAX_REDIRECTS}) from {_host_of(call.url)}"
        )

    def _shown_url(self, url: object) -> str:
        return redact_text(str(url if url is not None else ""), self.secrets)

    def _carries_secret(self, value: str) -> bool:
        return any(secret in value for secret in self.secrets)

    def _carries_credentials(self, headers: Mapping[str, str]) -> bool:
        return any(
            name.lower() in _CREDENTIAL_HEADERS or self._carries_secret(value)
            for name, value in headers.items()
        )

    def _cross_origin_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """What a hop to another origin may carry: the harmless headers, secret-free."""
        return {
            name: value
            for name, value in headers.items()
            if name.lower() in CROSS_ORIGIN_HEADERS and not self._carries_secret(value)
        }

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        params: dict[str, str] | None,
        call: _Call,
    ) -> tuple[httpx.Response, FetchRecord, float]:
        record = FetchRecord(method, self._shown_url(url), _host_of(url))
        self.records.append(record)
        started = self._clock()
        remaining = call.deadline - started
        try:
            if remaining <= 0:
                raise httpx.TimeoutException("deadline passed")
            parsed = httpx.URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                # The client would treat a host-less URL ("file:///etc/passwd") as relative
                # and rewrite it; refuse it here with the policy's reason instead.
                raise httpx.InvalidURL("an absolute http(s) URL with a host is required")
            request = self._client.build_request(
                method, url, headers=headers, content=body, params=params, timeout=remaining
            )
            request.headers["accept-encoding"] = "gzip, deflate"
            record.host = request.url.host or record.host
            record.url = self._shown_url(request.url)
            response = self._client.send(request, stream=True)
            self._client.cookies.clear()  # no ambient state: a script sends cookies itself
            return response, record, started
        except httpx.InvalidURL as exc:
            # httpx refuses some spellings (e.g. 0177.0.0.1) the C resolver would accept;
            # let the policy name what they denote before calling the URL merely invalid.
            self._explain_invalid(url, record)
            record.error = FetchFailed.kind
            raise FetchFailed(f"invalid URL for {record.host}: {exc}") from exc
        except SandboxError as exc:
            # the policy's verdict, or a replay's "nothing recorded for this request"
            self._fail(record, started, exc)
            raise
        except UnresolvableHost as exc:
            self._fail(record, started, exc)
            raise FetchFailed(str(exc)) from exc
        except httpx.UnsupportedProtocol as exc:
            self._fail(record, started, exc)
            raise EgressDenied(f"fetch to {record.host} denied: {exc}") from exc
        except httpx.TimeoutException as exc:
            self._fail(record, started, exc)
            raise FetchFailed(f"fetch to {record.host} timed out after {call.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            self._fail(record, started, exc)
            raise FetchFailed(f"fetch to {record.host} failed: {_describe(exc)}") from exc
        finally:
            record.ms = round((self._clock() - started) * 1000, 1)

    def _finish(
        self, response: httpx.Response, record: FetchRecord, started: float, call: _Call
    ) -> dict[str, Any]:
        cap = self.limits.max_response_bytes
        body = CappedBody(response.headers.get("content-encoding", ""), cap)
        try:
            declared = response.headers.get("content-length", "")
            has_body = response.request.method != "HEAD" and response.status_code not in (204, 304)
            if has_body and declared.isdigit() and int(declared) > cap:
                raise LimitExceeded(
                    f"response from {record.host} is {int(declared)} bytes, over the "
                    f"{cap}-byte limit"
                )
            for chunk in raw_chunks(response):
                if self._clock() > call.deadline:
                    raise FetchFailed(f"fetch to {record.host} timed out after {call.timeout:g}s")
                if not body.feed(chunk):
                    raise LimitExceeded(
                        f"response from {record.host} exceeded the {cap}-byte limit"
                    )
            if not body.finish():
                raise LimitExceeded(f"response from {record.host} exceeded the {cap}-byte limit")
        except (LimitExceeded, FetchFailed) as exc:
            record.error = exc.kind
            raise
        except httpx.TimeoutException as exc:
            record.error = FetchFailed.kind
            raise FetchFailed(f"fetch to {record.host} timed out after {call.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            record.error = FetchFailed.kind
            raise FetchFailed(f"fetch to {record.host} failed: {_describe(exc)}") from exc
        finally:
            response.close()
            record.ms = round((self._clock() - started) * 1000, 1)
            record.bytes = len(body.data)
        headers: dict[str, str] = {}
        for name, value in response.headers.multi_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return {
            "status": response.status_code,
            "statusText": response.reason_phrase or _phrase(response.status_code),
            "headers": headers,
            "url": str(response.url),
            "body": decode_text(bytes(body.data), response.charset_encoding),
        }

    def _explain_invalid(self, url: str, record: FetchRecord) -> None:
        if not url.split(":", 1)[0].isalpha() or ":" not in url:
            return  # a relative URL: nothing to explain, it is just invalid
        try:
            self.policy.check(url, resolver=_no_resolution)
        except EgressDenied:
            record.error = EgressDenied.kind
            raise
        except _UnresolvedName:
            pass

    @staticmethod
    def _fail(record: FetchRecord, started: float, exc: BaseException) -> None:
        if isinstance(exc, SandboxError):
            record.error = exc.kind
        else:
            record.error = FetchFailed.kind


class _UnresolvedName(Exception):
    """Never raised to scripts; see :func:`_no_resolution`."""


def _no_resolution(host: str, port: int) -> list[str]:
    # Used only to explain an unparseable URL: a name there is reported as invalid.
    raise _UnresolvedName(host)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _host_of(url: object) -> str:
    try:
        return httpx.URL(str(url)).host or "(no host)"
    except (httpx.InvalidURL, TypeError):
        from urllib.parse import urlsplit

        try:
            return urlsplit(str(url)).hostname or "(no host)"
        except ValueError:
            return "(invalid url)"


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in text.lower():
        return "connection refused"
    return text


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
