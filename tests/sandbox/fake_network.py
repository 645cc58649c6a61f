"""A network for tests that never leaves the process: fixed DNS answers and an
``httpx.MockTransport``, plugged in *under* the real Fetcher (``Invocation.network``), so the
egress policy and request validation run exactly as in production."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from sandbox.invocation import FetchNetwork

#: a public address (example.com's) that is never connected to: the transport is a mock
PUBLIC_ADDRESS = "93.184.216.34"


def fake_network(
    answer: Callable[[httpx.Request], httpx.Response], address: str = PUBLIC_ADDRESS
) -> FetchNetwork:
    """Every host name resolves to ``address``; every checked request is answered by
    ``answer`` (it sees the pinned request: the IP in the URL, the name in ``Host``)."""
    return FetchNetwork(
        resolver=lambda host, port: [address],
        transport_factory=lambda: httpx.MockTransport(answer),
    )
