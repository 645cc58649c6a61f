"""Origins of the host: which authority (``host[:port]``) a request was addressed to.

A module's webhook reply is content a third party wrote. When
``CRM_HOST_WEBHOOK_BASE_URL`` names an origin of its own, that content is never served on the
origin of the API, ``/docs`` and the console, so a browser cannot be made to treat it as the
host's own pages. Routing is by the request's ``Host`` header compared with the base URL's
authority: host names compared in lower case, and a ``Host`` without a port matches only a
base URL on its scheme's default port.

Same host name, different ports (``https://crm.example.com`` and
``https://crm.example.com:8443``) are two origins to a browser's same-origin policy and to this
routing, because ``Host`` carries the port. They are **not** separated for cookies: cookies
ignore ports, so a cookie of the console's origin is also sent to the webhook port and reaches
the module in the request headers. Use a different host name (ideally not a subdomain of the
console's cookie domain) when cookies matter; a different port only separates scripts.
Identical authorities are refused: the API would answer nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Authority:
    """The host name and port of a base URL, normalised (lower case, no trailing dot)."""

    host: str
    port: int
    default_port: bool
    """The port is the scheme's default, so a ``Host`` header may leave it out (a proxy
    terminating TLS forwards ``Host: hooks.example.com`` for ``https://hooks.example.com``)."""

    def matches(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` header names this authority. An absent or
        malformed header never does."""
        parsed = _parse_host_header(host_header)
        if parsed is None:
            return False
        host, port = parsed
        if host != self.host:
            return False
        return self.default_port if port is None else port == self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"


def _normal_host(host: str) -> str:
    return host.lower().rstrip(".")


def _parse_host_header(value: str | None) -> tuple[str, int | None] | None:
    if not value:
        return None
    try:
        parts = urlsplit(f"//{value.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path:
        return None
    return _normal_host(parts.hostname), port


def authority_of(url: str) -> Authority:
    """``https://Hooks.Example.com/x`` → ``Authority("hooks.example.com", 443, True)``.

    Raises :class:`ValueError` (with the reason) for a URL that cannot be a base: not
    http(s), no host, credentials, a query or a fragment.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} must not have a query or a fragment")
    default = DEFAULT_PORTS[scheme]
    actual = default if port is None else port
    return Authority(_normal_host(parts.hostname), actual, actual == default)


def check_separate_origins(public_url: str, webhook_base_url: str | None) -> None:
    """Raise :class:`ValueError` when the webhook base would take over the API's origin."""
    if webhook_base_url is None:
        return
    try:
        public = authority_of(public_url)
    except ValueError:
        return  # the public URL is free-form; nothing to compare with
    webhook = authority_of(webhook_base_url)
    if (public.host, public.port) == (webhook.host, webhook.port):
        raise ValueError(
            f"CRM_HOST_WEBHOOK_BASE_URL ({webhook_base_url}) must name another host or port "
            f"than CRM_HOST_PUBLIC_URL ({public_url}); on one authority the API would answer "
            "nowhere"
        )
