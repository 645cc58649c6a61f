"""What a host string denotes, and whether the address it reaches may be reached from a sandbox.

SSRF is won or lost on spelling: a URL must be judged on the address the connection will
actually go to, not on how the host is written. So

* :func:`normalise_host` brings every host to one form (lowercase, no trailing dot, IDNA), the
  form egress patterns and URLs are compared in;
* :func:`parse_ipv4_spelling` reads every IPv4 spelling the C resolver accepts
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) as the address it denotes, so a
  literal IP can never pass for a host name;
* :func:`classify_address` names why an address is off limits (loopback, private,
  link-local, cloud metadata, ...), judging IPv6 forms that carry an IPv4 address (mapped,
  compatible, NAT64, 6to4) by the address they carry, because that is where packets end up.

Pure functions over strings and :mod:`ipaddress` objects; :mod:`sandbox.egress` decides with
them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Addresses of cloud instance-metadata services (they hand out credentials).
METADATA_ADDRESSES: Mapping[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "link-local / cloud metadata address",
    ipaddress.ip_address("169.254.170.2"): "link-local / cloud metadata address (ECS)",
    ipaddress.ip_address("fd00:ec2::254"): "unique-local / cloud metadata address (AWS)",
    ipaddress.ip_address("100.100.100.200"): "CGNAT / cloud metadata address (Alibaba)",
}

_N = ipaddress.ip_network
# Ordered: the first matching network names the reason shown to the integrator.
_V4_CLASSES: Sequence[tuple[IPNetwork, str]] = (
    (_N("255.255.255.255/32"), "broadcast address"),
    (_N("0.0.0.0/32"), "unspecified address"),
    (_N("0.0.0.0/8"), '"this network" address'),
    (_N("127.0.0.0/8"), "loopback address"),
    (_N("10.0.0.0/8"), "private address"),
    (_N("172.16.0.0/12"), "private address"),
    (_N("192.168.0.0/16"), "private address"),
    (_N("169.254.0.0/16"), "link-local address"),
    (_N("100.64.0.0/10"), "CGNAT (shared address space) address"),
    (_N("224.0.0.0/4"), "multicast address"),
    (_N("240.0.0.0/4"), "reserved address"),
)
_V6_CLASSES: Sequence[tuple[IPNetwork, str]] = (
    (_N("::/128"), "unspecified address"),
    (_N("::1/128"), "loopback address"),
    (_N("fe80::/10"), "link-local address"),
    (_N("fec0::/10"), "site-local address"),
    (_N("fc00::/7"), "unique-local address"),
    (_N("ff00::/8"), "multicast address"),
    (_N("2001::/32"), "Teredo tunnel address"),
    (_N("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_N("100::/64"), "discard-only address"),
)
_NAT64 = _N("64:ff9b::/96")
_V4_COMPATIBLE = _N("::/96")


# --------------------------------------------------------------------------- host spelling


def parse_ipv4_spelling(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host string denotes under ``inet_aton`` rules, else ``None``.

    The C resolver (and browsers, per the WHATWG URL standard) read ``2130706433``,
    ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` as 127.0.0.1; a policy that saw only a "name"
    there would let a script walk around every IP check. Raises ``ValueError`` for a host
    that *looks* numeric (its last label is a number) but is out of range, since such a
    host is neither a valid name nor a valid address.
    """
    labels = host.split(".")
    if not labels or not _is_numeric_label(labels[-1]):
        return None
    if len(labels) > 4 or not all(_is_numeric_label(label) for label in labels):
        raise ValueError(f"{host} looks like an IP address but is not a valid one")
    values = [_parse_number(label, host) for label in labels]
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 256 ** (4 - len(head)):
        raise ValueError(f"{host} looks like an IP address but is out of range")
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _is_numeric_label(label: str) -> bool:
    if label[:2] in ("0x", "0X"):
        return all(c in "0123456789abcdefABCDEF" for c in label[2:])
    return label != "" and label.isascii() and label.isdigit()


def _parse_number(label: str, host: str) -> int:
    if label[:2] in ("0x", "0X"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        if any(c in "89" for c in label):
            raise ValueError(f"{host} looks like an IP address but {label} is not octal")
        return int(label, 8)
    return int(label, 10)


def normalise_host(host: str) -> str:
    """Lowercase, drop brackets and one trailing dot, IDNA-encode; ``ValueError`` if invalid.

    Patterns and URLs go through the same function so ``API.Example.com.`` and
    ``bücher.de`` compare equal to ``api.example.com`` and ``xn--bcher-kva.de``.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:  # an IPv6 literal; zone ids are refused (they name a local interface)
        if "%" in text:
            raise ValueError(f"IPv6 zone identifiers are not allowed ({host})")
        return str(ipaddress.IPv6Address(text))
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty host")
    if not text.isascii():
        try:
            import idna

            text = idna.encode(text, uts46=True).decode("ascii")
        except (ImportError, UnicodeError, ValueError):
            try:
                text = text.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise ValueError(f"invalid host name {host!r}") from exc
    text = text.lower()
    if len(text) > 253 or any(label == "" or len(label) > 63 for label in text.split(".")):
        raise ValueError(f"invalid host name {host!r}")
    if any(not (c.isalnum() or c in "-_.") for c in text):
        raise ValueError(f"invalid host name {host!r}")
    return text


def host_ip(host: str) -> IPAddress | None:
    """The address a *normalised* host literally denotes (any IPv4 spelling, or IPv6)."""
    if ":" in host:
        return ipaddress.IPv6Address(host)
    return parse_ipv4_spelling(host)


# --------------------------------------------------------------------------- address classes


def classify_address(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be reached from a sandbox, or ``None`` for a public address.

    IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
    the address they carry, because that is where the packets end up.
    """
    if ip in METADATA_ADDRESSES:
        return METADATA_ADDRESSES[ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            form, v4 = embedded
            inner = classify_address(v4)
            if form == "IPv4-compatible":
                return f"deprecated IPv4-compatible IPv6 address (embeds {v4})"
            if inner is not None:
                return f"{form} IPv6 address embedding {v4}, a {inner}"
            return None
        table = _V6_CLASSES
    else:
        table = _V4_CLASSES
    for network, reason in table:
        if ip in network:
            return reason
    if ip.is_multicast:
        return "multicast address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_reserved:
        return "reserved address"
    if ip.is_private or not ip.is_global:
        return "non-public (special-purpose) address"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _V4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_metadata_address(ip: IPAddress) -> bool:
    """A cloud metadata address, also when carried inside an IPv6 address."""
    if ip in METADATA_ADDRESSES:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        return embedded is not None and embedded[1] in METADATA_ADDRESSES
    return False
