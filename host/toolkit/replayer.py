"""``module run --replay`` and ``module test``: the network, answered from a recording.

Why a resolver and a transport, not a fetch function: the real Fetcher still validates the
script's request, the egress policy still judges every hop — on the *recorded* addresses,
which :meth:`Replayer.resolve` answers instead of DNS — and the response still goes through
the size cap and the redirect rules. A recording whose host the manifest does not declare is
refused with ``egress_denied``; one recorded against a loopback or private address is
refused unless the admin's allow-list (``--allow-host``, ``CRM_HOST_EGRESS_ALLOW``) waives
it, exactly as a live call would be. Matching rules: :mod:`host.toolkit.recording`.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from host.toolkit.recording import Exchange, Recording, ReplayMismatch, masked_request
from sandbox.addresses import normalise_host
from sandbox.errors import ScriptError
from sandbox.invocation import ERROR_KINDS, FetchNetwork
from sandbox.transport import pinned_hop

#: What a host without recorded addresses resolves to on replay: a public address (the
#: deprecated 6to4 relay anycast, RFC 7526), so only the manifest's egress list judges it.
#: Nothing ever connects to it: the replay transport answers every request itself.
UNRECORDED_ADDRESS = "192.88.99.1"


class Replayer:
    """Answers one run's requests from a recording; each exchange answers once."""

    def __init__(self, recording: Recording, secrets: Sequence[str], source: str = "recording"):
        self.recording = recording
        self.source = source
        self.secrets = [s for s in secrets if s]
        self._used = [False] * len(recording.exchanges)
        #: requests nothing matched, as "METHOD URL" (a script may swallow the error)
        self.misses: list[str] = []

    def network(self) -> FetchNetwork:
        """No DNS and no connection: recorded addresses and recorded responses."""
        return FetchNetwork(resolver=self.resolve, transport_factory=lambda: ReplayTransport(self))

    def unused(self) -> list[Exchange]:
        return [e for e, used in zip(self.recording.exchanges, self._used, strict=True) if not used]

    # -- the resolver --------------------------------------------------------------------

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses recorded for ``host:port``: those of the next unused exchange with
        that host (DNS may have answered differently between hops), else of any. A host
        with no recorded addresses (a format 1 file, an exchange written by hand, a request
        the recording lacks) is judged on its name alone: :data:`UNRECORDED_ADDRESS`."""
        candidates = [
            (used, exchange)
            for used, exchange in zip(self._used, self.recording.exchanges, strict=True)
            if exchange.addresses and _host_port(exchange) == (host, port)
        ]
        if not candidates:
            return [UNRECORDED_ADDRESS]
        candidates.sort(key=lambda pair: pair[0])  # unused first, in recorded order
        return list(candidates[0][1].addresses or ())

    # -- the transport -------------------------------------------------------------------

    def answer(self, request: httpx.Request) -> httpx.Response:
        hop = pinned_hop(request)
        masked = masked_request(request, str(hop.url), self.secrets)
        method, url, body = masked["method"], masked["url"], masked["body"]
        for i, exchange in enumerate(self.recording.exchanges):
            if not self._used[i] and exchange.matches(method, url, body):
                self._used[i] = True
                if exchange.error is not None:
                    raise _recorded_error(exchange.error, request)
                assert exchange.response is not None
                return _response(exchange.response, request)
        self.misses.append(f"{method} {url}")
        raise ReplayMismatch(self._mismatch_message(method, url))

    def _mismatch_message(self, method: str, url: str) -> str:
        if any(e.same_target(method, url) for e in self.unused()):
            hint = " (an exchange has this method and URL but another body)"
        else:
            hint = self._unused_hint()
        return f"unmatched request: {self.source} has no response for {method} {url}{hint}"

    def _unused_hint(self) -> str:
        unused = self.unused()
        listed = ", ".join(e.describe() for e in unused[:5]) or "none"
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        return f"; unused exchanges: {listed}{more}"


class ReplayTransport(httpx.BaseTransport):
    """The inner transport of a replay: every checked, pinned request goes to the Replayer."""

    def __init__(self, replayer: Replayer):
        self.replayer = replayer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.replayer.answer(request)


def _host_port(exchange: Exchange) -> tuple[str, int] | None:
    try:
        url = httpx.URL(str(exchange.request.get("url", "")))
        host = normalise_host(url.host)
    except (httpx.InvalidURL, ValueError):
        return None
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return (host, port) if port else None


def _recorded_error(error: dict[str, str], request: httpx.Request) -> Exception:
    """A connection failure as the live transport raised it (the Fetcher words it the same
    way), or an older recording's error as its kind."""
    message = error.get("message", "failed")
    raised = getattr(httpx, str(error.get("exception", "")), None)
    if isinstance(raised, type) and issubclass(raised, httpx.TransportError):
        return raised(message, request=request)
    return ERROR_KINDS.get(str(error.get("kind", "")), ScriptError)(message)


def _response(recorded: dict[str, object], request: httpx.Request) -> httpx.Response:
    headers = recorded.get("headers")
    headers = {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
    body = recorded.get("body")
    text = body if isinstance(body, str) else ""
    status = recorded["status"]
    assert isinstance(status, int)
    response = httpx.Response(status, headers=headers, request=request)
    charset = response.charset_encoding or "utf-8"
    try:
        content = text.encode(charset, errors="replace")
    except LookupError:
        content = text.encode("utf-8", errors="replace")
    return httpx.Response(status, headers=headers, content=content, request=request)
