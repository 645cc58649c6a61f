"""The parent ↔ worker wire: length-prefixed compact JSON frames over two pipes.

Why this shape:

* **JSON in both directions, never pickle.** The worker runs untrusted code, so anything it
  sends is hostile input; ``pickle.loads`` on it would hand the script the parent. JSON of
  plain data is also all the boundary needs (SPEC: JSON-compatible values only). The parent
  decodes with a frame-size cap, rejects ``NaN``/``Infinity`` and treats any malformed frame
  as a protocol violation that gets the worker killed.
* **4-byte big-endian length + payload.** One ``os.write`` per message and no delimiter
  scanning; a warm call is two small frames each way, which keeps the round trip in the tens
  of microseconds (see BENCHMARKS.md).
* **Deadlines on the parent side only.** The parent polls the worker's pipe with the time
  left of the invocation and writes non-blocking, so a worker that stops reading or writing
  can never stall the calling thread past its deadline. The worker side blocks: the parent is
  trusted.
"""

from __future__ import annotations

import errno
import json
import os
import select
import struct
import time
from typing import Any

HEADER = struct.Struct("!I")
#: largest frame the parent accepts from a worker (a result value, a fetch request, the log)
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024


class ChannelError(Exception):
    """The worker end misbehaved or went away."""


class ChannelClosed(ChannelError):
    """End of file: the worker process exited or closed its pipe."""


class ChannelTimeout(ChannelError):
    """Nothing (complete) arrived before the deadline."""


class ProtocolViolation(ChannelError):
    """A frame that is too large, not JSON, or not an object: the worker is not trusted."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode(message: dict[str, Any]) -> bytes:
    """One frame: header + compact UTF-8 JSON (strict: no NaN/Infinity)."""
    payload = json.dumps(
        message, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes | bytearray) -> dict[str, Any]:
    return decode_text(_payload_text(payload))


def _payload_text(payload: bytes | bytearray) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolViolation(f"malformed frame: {type(exc).__name__}") from None


def decode_text(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolViolation(f"malformed frame: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolViolation("frame is not a JSON object")
    return message


#: bytes read at a time while no large frame is pending (small frames are the hot path)
_READ_BYTES = 1 << 16


class FrameReader:
    """Parent side: reads frames from a worker's pipe with a deadline and a size cap.

    Small frames are read in chunks; once a header announces a frame that is not complete
    yet, one buffer of exactly its size is allocated and the pipe is read straight into it.
    The payload is then decoded to text and released before the JSON is parsed, so the
    parent holds about twice the frame size for one result (bytes, then text), never the
    copies a growing buffer and its slices would make.
    """

    def __init__(self, fd: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.fd = fd
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._payload: bytearray | None = None
        self._filled = 0
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLPRI)

    def _frame_from_buffer(self) -> dict[str, Any] | None:
        if self._payload is not None:
            if self._filled < len(self._payload):
                return None
            text = _payload_text(self._payload)
            self._payload = None
            return decode_text(text)
        if len(self._buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buffer)
        if size > self.max_frame_bytes:
            raise ProtocolViolation(f"frame of {size} bytes exceeds {self.max_frame_bytes}")
        end = HEADER.size + size
        if len(self._buffer) >= end:
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            return decode_payload(payload)
        # incomplete: everything buffered belongs to this frame (the worker sends one frame
        # and waits), so it moves into the frame's own buffer and the rest is read there
        self._payload = bytearray(size)
        self._filled = len(self._buffer) - HEADER.size
        self._payload[: self._filled] = memoryview(self._buffer)[HEADER.size :]
        self._buffer = bytearray()
        return None

    def _read_some(self) -> int:
        if self._payload is not None:
            return os.readv(self.fd, [memoryview(self._payload)[self._filled :]])
        chunk = os.read(self.fd, _READ_BYTES)
        self._buffer += chunk
        return len(chunk)

    def pending(self) -> bool:
        """Whether the worker has said anything not yet read (bytes buffered or waiting in
        the pipe, or end of file) — between invocations it must be silent."""
        return bool(self._buffer) or bool(self._poll.poll(0))

    def read(self, deadline: float | None) -> dict[str, Any]:
        """Next frame; ``deadline`` is a ``time.monotonic()`` value (None = wait forever)."""
        while True:
            frame = self._frame_from_buffer()
            if frame is not None:
                return frame
            if deadline is None:
                timeout_ms = None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChannelTimeout()
                timeout_ms = max(1, int(remaining * 1000 + 0.999))
            if not self._poll.poll(timeout_ms):
                continue  # loop re-checks the deadline
            try:
                received = self._read_some()
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if not received:
                raise ChannelClosed("worker closed its pipe")
            if self._payload is not None:
                self._filled += received


def write_frame(fd: int, data: bytes, deadline: float | None) -> None:
    """Parent side: write a whole frame to a non-blocking fd, giving up at ``deadline``."""
    view = memoryview(data)
    poller: select.poll | None = None
    while view:
        try:
            written = os.write(fd, view)
            view = view[written:]
            continue
        except BlockingIOError:
            pass
        except BrokenPipeError:
            raise ChannelClosed("worker closed its pipe") from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise ChannelClosed("worker closed its pipe") from None
            raise
        if poller is None:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
        timeout_ms = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeout()
            timeout_ms = max(1, int(remaining * 1000 + 0.999))
        poller.poll(timeout_ms)


# -- worker side: blocking, trusted peer -------------------------------------------------


def read_exact(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise ChannelClosed("parent closed the pipe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame_blocking(fd: int) -> dict[str, Any]:
    (size,) = HEADER.unpack(read_exact(fd, HEADER.size))
    message = json.loads(read_exact(fd, size))
    if not isinstance(message, dict):
        raise ProtocolViolation("frame is not a JSON object")
    return message


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
