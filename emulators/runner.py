"""Serve any ASGI app on 127.0.0.1 in a background thread, for tests and ``crm-host demo``.

Shared by every emulator in this package (and usable for any other ASGI app)::

    from emulators.runner import serve

    with serve(create_app(state)) as server:      # a free port, ready when entered
        httpx.get(server.url + "/v3/marketing/lists")
    # stopped (and its port released) here

The socket is bound *before* uvicorn starts (port 0 → the kernel picks a free port), so there
is no window in which another process can take the port between "find a free port" and
"listen on it". ``serve`` returns only once uvicorn reports it is started, and on exit asks
it to stop and joins the thread, so a test leaves no server or thread behind.

Nothing here knows about a particular service; an emulator module only provides an ASGI app.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

LOOPBACK = "127.0.0.1"


@dataclass
class RunningServer:
    """A server started by :func:`serve`: where it listens, and how to stop it early."""

    host: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def netloc(self) -> str:
        """``host:port`` — what an egress allow-list entry for this server looks like."""
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


@contextmanager
def serve(
    app: Any, *, host: str = LOOPBACK, port: int = 0, timeout: float = 10.0
) -> Iterator[RunningServer]:
    """Run ``app`` (any ASGI app) on ``host:port`` (0 = a free port) until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator:{bound_port}", daemon=True
    )
    thread.start()
    running = RunningServer(host, bound_port, server, thread)
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{bound_port} did not start")
            time.sleep(0.01)
        yield running
    finally:
        running.stop(timeout)
        sock.close()
