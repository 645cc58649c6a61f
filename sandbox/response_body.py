"""Reading a response body under a size cap that holds for compressed bodies too.

A script's ``fetch()`` may be answered with anything, by any server on its egress list: a
gzip bomb, a body without end, bytes in no known charset. The :class:`~sandbox.fetch.Fetcher`
reads the raw stream chunk by chunk into a :class:`CappedBody`, which inflates in bounded
steps and says "too big" before it holds more than the cap, and turns the bytes into text
with :func:`decode_text`, which never fails.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any, Literal

import httpx

from sandbox.errors import FetchFailed


class CappedBody:
    """Accumulates a response body, decoding gzip/deflate itself, never past ``cap`` bytes.

    httpx's own decoders inflate a whole chunk at once; a 64 KiB gzip chunk can become
    tens of MiB. ``zlib``'s ``max_length`` lets us stop at cap + 1 instead."""

    def __init__(self, encoding: str, cap: int):
        self.cap = cap
        self.data = bytearray()
        self.raw_bytes = 0
        encoding = encoding.strip().lower()
        self._mode: Literal["identity", "gzip", "deflate"] = "identity"
        self._inflater: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._mode = "gzip"
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._mode = "deflate"
        self._first = True

    def feed(self, chunk: bytes) -> bool:
        """Add a raw chunk; ``False`` once the decoded body would exceed the cap."""
        self.raw_bytes += len(chunk)
        if self.raw_bytes > self.cap:
            return False
        room = self.cap - len(self.data)
        self.data += (
            chunk[: room + 1] if self._mode == "identity" else self._inflate(chunk, room + 1)
        )
        return len(self.data) <= self.cap

    def finish(self) -> bool:
        if self._inflater is not None:
            self.data += self._inflater.flush()
        return len(self.data) <= self.cap

    def _inflate(self, chunk: bytes, max_length: int) -> bytes:
        try:
            if self._mode == "deflate" and self._first:
                # "deflate" is zlib-wrapped per RFC, raw in practice: try both.
                self._first = False
                self._inflater = zlib.decompressobj()
                try:
                    return bytes(self._inflater.decompress(chunk, max_length))
                except zlib.error:
                    self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            return bytes(self._inflater.decompress(chunk, max_length))
        except zlib.error as exc:
            raise FetchFailed(f"response body is not valid {self._mode}: {exc}") from exc


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode as the response says (UTF-8 otherwise); undecodable bytes become U+FFFD
    instead of failing, so a binary body never crashes the call."""
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_raw()  # as received: a chunk_size would wait to fill it
    except httpx.StreamConsumed:
        yield response.content  # an injected transport (MockTransport) read it already
