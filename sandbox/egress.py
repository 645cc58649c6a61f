"""Egress policy: which hosts a sandboxed script may reach with ``fetch()``, and at which IP.

A script names destinations in its manifest (``egress``: exact hosts, ``*.example.com``
wildcards, IPv4 literals and bracketed IPv6 literals, each optionally ``:port``). Only those
may be reached. Loopback, private, link-local, metadata and other non-public addresses are
refused even then, unless the platform admin waives the refusal for them (the caller's
allow-list: hosts, ``host:port``s and CIDRs; where it is configured is the caller's business)
— for on-premises services and tests. The admin's list is a waiver, never a grant: a destination
the manifest does not declare stays unreachable whatever the admin allows, so one module
cannot ride on what the admin opened for another.

Why so many steps: SSRF is won or lost on the details. A URL is judged on the host the
connection will actually go to, not on how it is spelt, so the policy

1. accepts only ``http``/``https`` and refuses credentials in the authority
   (``http://api.example.com@127.0.0.1/`` reads like one host and connects to another);
2. normalises the host (lowercase, trailing dot, IDNA) before comparing it to patterns;
3. treats every IPv4 spelling the C resolver accepts (``2130706433``, ``0177.0.0.1``,
   ``0x7f.1``, ``127.1``) as the address it denotes — a literal IP is never matched by a
   hostname pattern (steps 2 and 3, and the address classes, are :mod:`sandbox.addresses`);
4. resolves names once, checks EVERY address the name resolves to (one private answer among
   public ones is enough to refuse), and returns one of them as the *pinned* IP that the
   transport connects to, so a second lookup cannot be rebound to an internal address.

The policy is pure and synchronous; :mod:`sandbox.fetch` applies it per request and per
redirect hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sandbox.addresses import (
    IPAddress,
    IPNetwork,
    classify_address,
    host_ip,
    is_metadata_address,
    normalise_host,
)
from sandbox.errors import EgressDenied

#: ``resolver(host, port) -> addresses`` (IP strings, in preference order).
Resolver = Callable[[str, int], Sequence[str]]

ALLOWED_SCHEMES: Mapping[str, int] = {"http": 80, "https": 443}

# Host names that serve cloud instance credentials. They are refused by name, before any
# lookup, because some resolve only inside the cloud and would otherwise look harmless here.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)


#: Domains reserved for names that never resolve to public addresses (RFC 6761, RFC 6762,
#: RFC 8375, ICANN's private-use ``.internal``).
PRIVATE_NAME_SUFFIXES: Mapping[str, str] = {
    "localhost": "a loopback host name",
    "local": "a link-local (mDNS) host name",
    "internal": "a private-use host name",
    "home.arpa": "a home-network host name",
}

#: How the refusal of an internal address the admin could open (never a metadata one) says
#: so; a host may name its own setting (:attr:`EgressPolicy.waiver_hint`).
DEFAULT_WAIVER_HINT = "the platform admin can waive it with the host's egress allow-list"

#: Appended to a refusal of an undeclared destination that the admin's list covers.
_WAIVER_ONLY = (
    "; the platform allow-list only waives the address check for destinations the manifest declares"
)


class UnresolvableHost(LookupError):
    """The resolver gave no usable address for a host (a network failure, not a denial)."""

    def __init__(self, host: str, detail: str):
        super().__init__(f"could not resolve host {host}: {detail}")
        self.host = host


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with ``socket.getaddrinfo``; unique addresses, in the system's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(host, str(exc)) from exc
    seen: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if address not in seen:
            seen.append(address)
    return seen


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class HostPattern:
    """One ``egress`` entry: ``api.x.com``, ``*.x.com`` (any depth of subdomain, never the
    bare ``x.com``), an IP literal, each with an optional ``:port`` that pins the port."""

    host: str  # normalised; for a wildcard, the suffix after "*."
    wildcard: bool = False
    ip: IPAddress | None = None
    port: int | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        raw = text.strip()
        if not raw or "/" in raw or "@" in raw or any(c.isspace() for c in raw):
            raise ValueError(f"invalid egress host pattern {text!r}: expected host[:port]")
        host, port = _split_host_port(raw)
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        if "*" in host:
            raise ValueError(f"invalid egress host pattern {text!r}: '*' only as '*.domain'")
        try:
            host = normalise_host(host)
            ip = host_ip(host)
        except ValueError as exc:
            raise ValueError(f"invalid egress host pattern {text!r}: {exc}") from exc
        if wildcard and (ip is not None or "." not in host):
            raise ValueError(
                f"invalid egress host pattern {text!r}: a wildcard needs a domain with at "
                "least two labels, like *.example.com"
            )
        if ip is not None:
            host = str(ip)
        return cls(host=host, wildcard=wildcard, ip=ip, port=port, text=raw)

    def matches(self, host: str, ip: IPAddress | None, port: int) -> bool:
        """Does a normalised ``host`` (``ip`` when it is a literal) on ``port`` match?"""
        if self.port is not None and self.port != port:
            return False
        if ip is not None or self.ip is not None:
            return self.ip is not None and ip is not None and _same_ip(self.ip, ip)
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def waiver_reason(self) -> str | None:
        """Why this entry names a destination that is refused unless the platform admin
        waives the refusal (a loopback/private/... IP literal, ``localhost``, a name of a
        private-use or metadata domain), else ``None``. Names are judged by what they are
        reserved for; where a public-looking name resolves is only known at fetch time."""
        if self.ip is not None:
            reason = classify_address(self.ip)
            return None if reason is None else f"{self.ip} is {_article(reason)} {reason}"
        if not self.wildcard and self.host in METADATA_HOSTNAMES:
            return f"{self.host} is a cloud metadata host name"
        for suffix, what in PRIVATE_NAME_SUFFIXES.items():
            if self.host == suffix or self.host.endswith("." + suffix):
                return f"{self.text} is {what}"
        return None

    def matches_host(self, host: str, ip: IPAddress | None) -> bool:
        """Like :meth:`matches` but ignoring the port (to explain a port mismatch)."""
        return HostPattern(self.host, self.wildcard, self.ip, None, self.text).matches(host, ip, 0)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiouAEIOU" else "a"


def _same_host_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address that ``ip`` *is* (IPv4-mapped), for allow-list matching.

    Only the mapped form is the same host: the kernel connects ``::ffff:a.b.c.d`` over IPv4.
    The other embedding forms route elsewhere (a NAT64 or 6to4 gateway), so a CIDR naming
    the IPv4 address must not open them."""
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.ipv4_mapped
    return None


def _same_ip(a: IPAddress, b: IPAddress) -> bool:
    return a == b or _same_host_v4(a) == b or a == _same_host_v4(b)


def _split_host_port(raw: str) -> tuple[str, int | None]:
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"invalid host {raw!r}: unclosed '['")
        host, rest = raw[: end + 1], raw[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"invalid host {raw!r}")
        return host, _parse_port(rest[1:], raw)
    if raw.count(":") == 1:
        host, port_text = raw.split(":")
        return host, _parse_port(port_text, raw)
    return raw, None  # a bare name, or a bare IPv6 literal without a port


def _parse_port(text: str, raw: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port in {raw!r}")
    return int(text)


@dataclass(frozen=True)
class AllowRule:
    """One admin allow-list entry: a host pattern (``host``, ``host:port``, ``*.corp``) or
    a CIDR (``10.0.0.0/8``). It opens loopback/private destinations the admin trusts."""

    pattern: HostPattern | None = None
    network: IPNetwork | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        raw = text.strip()
        if "/" in raw:
            try:
                return cls(network=ipaddress.ip_network(raw, strict=False), text=raw)
            except ValueError as exc:
                raise ValueError(f"invalid egress allow-list entry {text!r}: {exc}") from exc
        try:
            return cls(pattern=HostPattern.parse(raw), text=raw)
        except ValueError as exc:
            raise ValueError(f"invalid egress allow-list entry {text!r}: {exc}") from exc

    def covers_host(self, host: str, ip: IPAddress | None, port: int) -> bool:
        """Does this entry name the requested host (or, for a literal IP, cover it)?"""
        if self.pattern is not None:
            return self.pattern.matches(host, ip, port)
        return ip is not None and self.covers_ip(ip)

    def covers_ip(self, ip: IPAddress, port: int | None = None) -> bool:
        """Does this entry cover a resolved address (on ``port``, if the entry has one)?

        Cloud metadata addresses are only covered by an entry that names that very
        address: a broad ``169.254.0.0/16`` (or ``::/0``) written for something else must
        not silently hand out instance credentials."""
        pinned_port = self.pattern.port if self.pattern is not None else None
        if pinned_port is not None and port is not None and pinned_port != port:
            return False
        candidates = [ip] + ([v4] if (v4 := _same_host_v4(ip)) is not None else [])
        for candidate in candidates:
            if self.network is not None and candidate in self.network:
                single = self.network.num_addresses == 1
                if single or not is_metadata_address(candidate):
                    return True
            pattern_ip = self.pattern.ip if self.pattern is not None else None
            if pattern_ip is not None and _same_ip(pattern_ip, candidate):
                return True
        return False


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class EgressTarget:
    """Where an allowed request goes: the host as named and the IP to connect to."""

    scheme: str
    host: str  # normalised host as the URL names it (used for Host header and TLS SNI)
    port: int
    ip: IPAddress  # the pinned address: the transport connects here and nowhere else
    addresses: tuple[IPAddress, ...]
    trusted: Literal["egress", "allow-list"]

    @property
    def host_is_ip(self) -> bool:
        return host_ip(self.host) is not None


@dataclass
class EgressPolicy:
    """Decides, per URL, whether a script may connect, and to which pinned IP.

    ``egress`` comes from the module manifest; ``allow`` from the platform admin.
    """

    egress: Sequence[HostPattern] = ()
    allow: Sequence[AllowRule] = ()
    resolver: Resolver = field(default=system_resolver, repr=False)
    #: appended to the refusal of an internal address (see :data:`DEFAULT_WAIVER_HINT`)
    waiver_hint: str = DEFAULT_WAIVER_HINT

    @classmethod
    def from_config(
        cls,
        patterns: Iterable[str],
        allow: Iterable[str] = (),
        *,
        resolver: Resolver | None = None,
        waiver_hint: str = DEFAULT_WAIVER_HINT,
    ) -> EgressPolicy:
        """Build from manifest ``egress`` strings and admin allow-list strings.

        Raises ``ValueError`` naming the first malformed entry (a configuration error)."""
        return cls(
            egress=tuple(HostPattern.parse(p) for p in patterns),
            allow=tuple(AllowRule.parse(a) for a in allow),
            resolver=resolver or system_resolver,
            waiver_hint=waiver_hint,
        )

    def to_config(self) -> dict[str, list[str]]:
        """JSON-compatible form, to ship the policy to a worker process."""
        return {"egress": [p.text for p in self.egress], "allow": [a.text for a in self.allow]}

    # -- decisions ------------------------------------------------------------------------

    def check(self, url: str, *, resolver: Resolver | None = None) -> EgressTarget:
        """Check a URL string (parsed with :func:`urllib.parse.urlsplit`)."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url.strip())
            port = parts.port
            host = parts.hostname or ""
        except ValueError as exc:
            raise EgressDenied(f"fetch to {url!r} denied: invalid URL ({exc})") from exc
        userinfo = "@" in parts.netloc
        return self.check_target(parts.scheme, host, port, userinfo=userinfo, resolver=resolver)

    def check_target(
        self,
        scheme: str,
        host: str,
        port: int | None,
        *,
        userinfo: bool = False,
        resolver: Resolver | None = None,
    ) -> EgressTarget:
        """Check an already-parsed URL (the transport passes httpx's own parse, so the
        policy judges exactly the host the connection is made for)."""
        scheme = scheme.lower()
        shown = host or "(no host)"
        if scheme not in ALLOWED_SCHEMES:
            raise EgressDenied(
                f"fetch to {shown} denied: scheme {scheme or '(none)'!r} is not allowed "
                "(only http and https)"
            )
        if userinfo:
            raise EgressDenied(
                f"fetch to {shown} denied: credentials in the URL (user@host) are not "
                "allowed; send them in a header"
            )
        try:
            name = normalise_host(host)
            literal = host_ip(name)
        except ValueError as exc:
            raise EgressDenied(f"fetch to {shown} denied: {exc}") from exc
        port = port or ALLOWED_SCHEMES[scheme]
        if literal is not None:
            return self._check_literal(scheme, name, literal, port)
        return self._check_name(scheme, name, port, resolver or self.resolver)

    def _check_literal(self, scheme: str, host: str, ip: IPAddress, port: int) -> EgressTarget:
        spelled = "" if host == str(ip) else f"{host} is {ip}, "
        reason = classify_address(ip)
        waived = reason is not None and any(rule.covers_ip(ip, port) for rule in self.allow)
        if reason is not None and not waived:
            raise EgressDenied(
                (
                    f"fetch to {host} denied: {spelled}{_article(reason)} {reason}"
                    if spelled
                    else f"fetch to {host} denied: {reason}"
                )
                + self._waiver_hint(ip)
            )
        if not any(p.matches(host, ip, port) for p in self.egress):
            reason_text = self._literal_not_listed(ip, port)
            if any(rule.covers_host(host, ip, port) for rule in self.allow):
                reason_text += _WAIVER_ONLY
            raise EgressDenied(f"fetch to {host} denied: {reason_text}")
        return self._target(scheme, host, port, (ip,), "allow-list" if waived else "egress")

    def _check_name(self, scheme: str, host: str, port: int, resolver: Resolver) -> EgressTarget:
        if not any(p.matches(host, None, port) for p in self.egress):
            reason_text = self._not_listed(host, port)
            if any(rule.covers_host(host, None, port) for rule in self.allow):
                reason_text += _WAIVER_ONLY
            raise EgressDenied(f"fetch to {host} denied: {reason_text}")
        # Admin entries naming this host waive the address check wherever it resolves
        # (metadata addresses excepted); CIDR and IP entries waive the addresses they cover.
        named = [
            rule
            for rule in self.allow
            if rule.pattern is not None and rule.covers_host(host, None, port)
        ]
        exact = any(rule.pattern is not None and not rule.pattern.wildcard for rule in named)
        if host in METADATA_HOSTNAMES and not exact:
            raise EgressDenied(f"fetch to {host} denied: cloud metadata host name")
        answers = resolver(host, port)
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                addresses.append(ipaddress.ip_address(str(answer).split("%", 1)[0]))
            except ValueError as exc:
                raise UnresolvableHost(host, f"resolver returned {answer!r}") from exc
        if not addresses:
            raise UnresolvableHost(host, "no addresses")
        waived = False
        for ip in addresses:
            reason = classify_address(ip)
            if reason is None:
                continue
            if named and not is_metadata_address(ip):
                waived = True
                continue
            if any(rule.covers_ip(ip, port) for rule in self.allow):
                waived = True
                continue
            raise EgressDenied(
                f"fetch to {host} denied: it resolves to {ip}, {_article(reason)} {reason}"
                + self._waiver_hint(ip)
            )
        return self._target(
            scheme, host, port, tuple(addresses), "allow-list" if waived else "egress"
        )

    def _waiver_hint(self, ip: IPAddress) -> str:
        """How an admin opens an internal address for a declared destination; metadata
        addresses are never waived, so their refusal says nothing of the kind."""
        return "" if is_metadata_address(ip) else f"; {self.waiver_hint}"

    def _literal_not_listed(self, ip: IPAddress, port: int) -> str:
        same_ip = [p.text for p in self.egress if p.matches_host(str(ip), ip)]
        if same_ip:
            return (
                f"{ip} port {port} is not in the module's egress list "
                f"(listed: {', '.join(same_ip)})"
            )
        names_listed = any(p.ip is None for p in self.egress)
        hint = " (host name patterns never match IP addresses)" if names_listed else ""
        return f"{ip} is an IP address not in the module's egress list{hint}"

    def _not_listed(self, host: str, port: int) -> str:
        same_host = [p.text for p in self.egress if p.matches_host(host, None)]
        if same_host:
            return (
                f"host {host} port {port} is not in the module's egress list "
                f"(listed: {', '.join(same_host)})"
            )
        return f"host {host} is not in the module's egress list"

    @staticmethod
    def _target(
        scheme: str,
        host: str,
        port: int,
        addresses: tuple[IPAddress, ...],
        trusted: Literal["egress", "allow-list"],
    ) -> EgressTarget:
        pinned = addresses[0]
        if isinstance(pinned, ipaddress.IPv6Address) and pinned.ipv4_mapped is not None:
            pinned = pinned.ipv4_mapped  # connect over IPv4 to the host it really is
        return EgressTarget(scheme, host, port, pinned, addresses, trusted)
