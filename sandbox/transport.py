"""The SSRF-proof httpx transport under :class:`~sandbox.fetch.Fetcher`: policy, then pinned IP.

Why a transport and not checks in the caller: every request httpx sends — the first one
and each redirect hop — passes through :class:`PinnedTransport`, which asks the
:class:`~sandbox.egress.EgressPolicy` for a verdict and a pinned IP, then connects to that
IP and nowhere else. The Host header and the TLS SNI / certificate check still use the
name from the URL (httpcore's ``sni_hostname`` request extension), so HTTPS keeps working
while a second DNS lookup — the one a rebinding attacker would answer with 127.0.0.1 —
never happens.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sandbox.egress import EgressPolicy, EgressTarget, Resolver, UnresolvableHost
from sandbox.errors import SandboxError

#: The request extension under which the inner transport finds the :class:`PinnedHop`.
PINNED_HOP = "crm_pinned_hop"

_default_ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class PinnedHop:
    """What the policy decided for one request, handed to the inner transport with it.

    A transport that records traffic keeps ``url`` (what the script asked for, not the
    pinned IP) and ``target.addresses`` (what the name resolved to), so a replay can answer
    the same request and the policy can judge the same addresses again."""

    url: httpx.URL
    target: EgressTarget


def pinned_hop(request: httpx.Request) -> PinnedHop:
    """The hop a request reaching an inner transport belongs to (set by PinnedTransport)."""
    hop = request.extensions.get(PINNED_HOP)
    if not isinstance(hop, PinnedHop):
        raise TypeError("the request did not come through PinnedTransport")
    return hop


def connecting_transport_factory(verify: Any = True) -> Callable[[], httpx.BaseTransport]:
    """Transports that really connect (to the pinned IP they are given, no proxy, no
    environment). They share one SSL context (loading the CA bundle costs ~50 ms)."""
    context: ssl.SSLContext | None = verify if isinstance(verify, ssl.SSLContext) else None

    def make() -> httpx.BaseTransport:
        nonlocal context
        global _default_ssl_context
        if context is None:
            if verify is True:
                if _default_ssl_context is None:
                    _default_ssl_context = httpx.create_ssl_context(trust_env=False)
                context = _default_ssl_context
            else:
                context = httpx.create_ssl_context(verify=verify, trust_env=False)
        # No proxy and no environment: the connection goes to the pinned IP itself.
        return httpx.HTTPTransport(verify=context, trust_env=False, retries=0)

    return make


class PinnedTransport(httpx.BaseTransport):
    """Checks every request against the policy and connects to the pinned IP only.

    The request reaching the inner transport has the pinned IP as its URL host, the original
    ``Host`` header, ``sni_hostname`` set to the original name, so certificates are
    verified for the name the script asked for, and its :class:`PinnedHop` (see
    :func:`pinned_hop`). The inner transport is what a caller swaps: one that records
    exchanges, or one that answers from a recording — the policy runs the same either way.
    Inner transports are kept per (scheme, host, port) so a TLS connection verified for one
    name is never reused for another name that happens to share the IP.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver | None = None,
        inner_factory: Callable[[], httpx.BaseTransport] | None = None,
        verify: Any = True,
    ):
        self.policy = policy
        self.resolver = resolver or policy.resolver
        self._inner_factory = inner_factory or connecting_transport_factory(verify)
        self._inners: dict[tuple[str, str, int], httpx.BaseTransport] = {}
        self.resolutions = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        timeout = request.extensions.get("timeout", {}).get("connect")
        target = self.policy.check_target(
            url.scheme,
            url.raw_host.decode("ascii"),
            url.port,
            userinfo=bool(url.userinfo),
            resolver=self._bounded_resolver(timeout),
        )
        extensions = {**request.extensions, PINNED_HOP: PinnedHop(url, target)}
        if target.scheme == "https" and not target.host_is_ip:
            extensions["sni_hostname"] = target.host
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=str(target.ip)),
            headers=request.headers,  # keeps Host: <original name>
            stream=request.stream,
            extensions=extensions,
        )
        key = (target.scheme, target.host, target.port)
        inner = self._inners.get(key)
        if inner is None:
            inner = self._inners[key] = self._inner_factory()
        return inner.handle_request(pinned)

    def _bounded_resolver(self, timeout: float | None) -> Resolver:
        """The resolver, bounded by the connect timeout: ``getaddrinfo`` cannot be
        cancelled, so it runs in a daemon thread that is abandoned when time runs out."""
        resolver = self.resolver

        def resolve(host: str, port: int) -> list[str]:
            self.resolutions += 1
            box: dict[str, Any] = {}

            def run() -> None:
                try:
                    box["answer"] = list(resolver(host, port))
                except BaseException as exc:
                    box["error"] = exc

            worker = threading.Thread(target=run, name=f"resolve {host}", daemon=True)
            worker.start()
            worker.join(timeout)
            if worker.is_alive():
                raise httpx.ConnectTimeout(f"resolving {host} timed out")
            if "error" in box:
                error = box["error"]
                if isinstance(error, UnresolvableHost | SandboxError):
                    raise error
                raise UnresolvableHost(host, str(error)) from error
            return box["answer"]  # type: ignore[no-any-return]

        return resolve

    def close(self) -> None:
        for inner in self._inners.values():
            inner.close()
        self._inners.clear()
