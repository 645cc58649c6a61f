"""``module run --record``: a transport under the real Fetcher that keeps every exchange.

Why a transport: the request reaching it has passed the egress policy and the Fetcher's
validation exactly as on the server, and it carries its :class:`~sandbox.transport.PinnedHop`
— the URL the script asked for and the addresses the host name resolved to, which the file
keeps so a replay is judged on the same addresses without DNS. The response body is teed
while the Fetcher reads it (under its size cap and deadline), never read ahead, and stored
decoded, as text, with every secret masked (see :mod:`host.toolkit.recording`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence

import httpx

from host.toolkit.recording import Exchange, Recording, mask_headers, masked_request
from sandbox.invocation import FetchNetwork, redact_text
from sandbox.response_body import decode_text
from sandbox.transport import connecting_transport_factory, pinned_hop

#: headers describing the wire form of a body, which the file keeps decoded
_WIRE_HEADERS = frozenset({"content-encoding", "transfer-encoding"})


class Recorder:
    """Keeps the exchanges of one run in :attr:`recording`; :meth:`network` is what the
    invocation connects through."""

    def __init__(
        self,
        secrets: Sequence[str],
        connect: Callable[[], httpx.BaseTransport] | None = None,
    ):
        self.secrets = [s for s in secrets if s]
        self.recording = Recording()
        self._connect = connect or connecting_transport_factory()

    def network(self) -> FetchNetwork:
        """Real DNS and real connections, each exchange kept on the way."""
        return FetchNetwork(transport_factory=lambda: RecordingTransport(self._connect(), self))


class RecordingTransport(httpx.BaseTransport):
    """Forwards each pinned request to ``inner`` and records the exchange in ``recorder``."""

    def __init__(self, inner: httpx.BaseTransport, recorder: Recorder):
        self.inner = inner
        self.recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        hop = pinned_hop(request)
        secrets = self.recorder.secrets
        exchange = Exchange(
            masked_request(request, str(hop.url), secrets),
            addresses=[str(a) for a in hop.target.addresses],
        )
        self.recorder.recording.exchanges.append(exchange)
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError as exc:
            exchange.error = {
                "kind": "script_error",
                "exception": type(exc).__name__,
                "message": redact_text(str(exc) or type(exc).__name__, secrets),
            }
            raise
        tee = _TeeStream(response, exchange, hop.url, secrets)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=tee,
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class _TeeStream(httpx.SyncByteStream):
    """The response's raw stream, copied as it is read; on close the exchange gets its
    response, with the body decoded and masked."""

    def __init__(
        self, response: httpx.Response, exchange: Exchange, url: httpx.URL, secrets: list[str]
    ):
        self.response = response
        self.exchange = exchange
        self.url = url
        self.secrets = secrets
        self.raw = bytearray()
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.response.stream:  # type: ignore[union-attr]
            self.raw += chunk
            yield chunk
        self.complete = True

    def close(self) -> None:
        self.response.close()
        headers = self.response.headers
        body = decode_text(_decoded(bytes(self.raw), headers), self.response.charset_encoding)
        kept: dict[str, str] = {}
        for name, value in headers.multi_items():
            key = name.lower()
            if key in _WIRE_HEADERS or (key == "content-length" and self.complete and self.raw):
                continue  # a body kept whole gets its length again on replay
            kept[key] = f"{kept[key]}, {value}" if key in kept else value
        self.exchange.response = {
            "status": self.response.status_code,
            "statusText": self.response.reason_phrase,
            "headers": mask_headers(kept, self.secrets),
            "url": redact_text(str(self.url), self.secrets),
            "body": redact_text(body, self.secrets),
        }


def _decoded(raw: bytes, headers: httpx.Headers) -> bytes:
    """The body as the script saw it (the Fetcher inflates gzip/deflate itself)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(raw)
        if encoding == "deflate":
            try:
                return zlib.decompress(raw)
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS)
    except zlib.error:
        return b""
    return raw
