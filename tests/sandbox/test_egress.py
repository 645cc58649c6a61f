"""SSRF cases for :class:`sandbox.egress.EgressPolicy`: every refusal names the host and why.

No network: names resolve through :class:`FakeResolver`. Public addresses used as
"harmless" answers are real global addresses (documentation ranges such as 192.0.2.0/24
are themselves refused as non-public)."""

from __future__ import annotations

import ipaddress

import pytest

from sandbox.addresses import classify_address, parse_ipv4_spelling
from sandbox.egress import (
    AllowRule,
    EgressPolicy,
    HostPattern,
    UnresolvableHost,
)
from sandbox.errors import EgressDenied

PUBLIC = "93.184.216.34"
PUBLIC6 = "2606:2800:220:1:248:1893:25c8:1946"


class FakeResolver:
    """Maps names to address lists; counts calls; unknown names do not resolve."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise UnresolvableHost(host, "unknown name (fake resolver)")
        return self.answers[host]


def policy(
    egress: list[str] | None = None,
    allow: list[str] | None = None,
    answers: dict[str, list[str]] | None = None,
) -> EgressPolicy:
    return EgressPolicy.from_config(
        egress if egress is not None else ["api.example.com"],
        allow or [],
        resolver=FakeResolver(answers or {"api.example.com": [PUBLIC]}),
    )


def denied(p: EgressPolicy, url: str) -> str:
    with pytest.raises(EgressDenied) as info:
        p.check(url)
    assert info.value.kind == "egress_denied"
    return str(info.value)


# --------------------------------------------------------------------------- address classes

LITERAL_CASES = [
    ("http://127.0.0.1/", "fetch to 127.0.0.1 denied: loopback address"),
    ("http://127.8.9.10:8080/", "loopback address"),
    ("http://10.1.2.3/", "fetch to 10.1.2.3 denied: private address"),
    ("http://172.16.5.4/", "private address"),
    ("http://172.31.255.255/", "private address"),
    ("http://192.168.1.1/", "private address"),
    ("http://169.254.169.254/latest/meta-data/", "link-local / cloud metadata address"),
    ("http://169.254.10.10/", "link-local address"),
    ("http://100.64.1.1/", "CGNAT"),
    ("http://100.100.100.200/", "cloud metadata address (Alibaba)"),
    ("http://224.0.0.1/", "multicast address"),
    ("http://240.0.0.1/", "reserved address"),
    ("http://0.0.0.0/", "unspecified address"),
    ("http://0.1.2.3/", '"this network" address'),
    ("http://255.255.255.255/", "broadcast address"),
    ("http://192.0.2.10/", "non-public (special-purpose) address"),
    ("http://[::1]/", "fetch to ::1 denied: loopback address"),
    ("http://[::]/", "unspecified address"),
    ("http://[fe80::1]/", "link-local address"),
    ("http://[ff02::1]/", "multicast address"),
    ("http://[fc00::1]/", "unique-local address"),
    ("http://[fd12:3456::1]/", "unique-local address"),
    ("http://[fec0::1]/", "site-local address"),
    ("http://[fd00:ec2::254]/", "cloud metadata address (AWS)"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped IPv6 address embedding 127.0.0.1, a loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped IPv6 address embedding 127.0.0.1, a loopback"),
    ("http://[::ffff:a9fe:a9fe]/", "embedding 169.254.169.254, a link-local / cloud metadata"),
    ("http://[::127.0.0.1]/", "deprecated IPv4-compatible IPv6 address (embeds 127.0.0.1)"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 IPv6 address embedding 169.254.169.254"),
    ("http://[64:ff9b::10.0.0.1]/", "NAT64 IPv6 address embedding 10.0.0.1, a private"),
    ("http://[2002:c0a8:101::1]/", "6to4 IPv6 address embedding 192.168.1.1, a private"),
    ("http://[2002:7f00:1::1]/", "6to4 IPv6 address embedding 127.0.0.1, a loopback"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo tunnel address"),
    ("http://[fe80::1%25eth0]/", "IPv6 zone identifiers are not allowed"),
]


@pytest.mark.parametrize(("url", "reason"), LITERAL_CASES, ids=[c[0] for c in LITERAL_CASES])
def test_literal_addresses_of_every_class_are_denied(url: str, reason: str) -> None:
    p = policy()
    assert reason in denied(p, url)
    assert p.resolver.calls == []  # type: ignore[attr-defined]  # literals never resolve


SPELLING_CASES = [
    ("http://2130706433/", "2130706433 is 127.0.0.1, a loopback address"),
    ("http://0177.0.0.1/", "0177.0.0.1 is 127.0.0.1, a loopback address"),
    ("http://0x7f.1/", "0x7f.1 is 127.0.0.1, a loopback address"),
    ("http://127.1/", "127.1 is 127.0.0.1, a loopback address"),
    ("http://0x7f000001/", "is 127.0.0.1"),
    ("http://017700000001/", "is 127.0.0.1"),
    ("http://127.0.1/", "127.0.1 is 127.0.0.1"),
    ("http://0xA9.0xFE.0xA9.0xFE/", "is 169.254.169.254, a link-local / cloud metadata"),
    ("http://2852039166/", "2852039166 is 169.254.169.254"),
    ("http://012.0x1.1/", "is 10.1.0.1, a private address"),
    ("http://0/", "0 is 0.0.0.0, an unspecified address"),
    ("http://127.0.0.1./", "fetch to 127.0.0.1 denied: loopback"),
    ("http://999.1.1.1/", "looks like an IP address but is out of range"),
    ("http://4294967296/", "out of range"),
    ("http://08.0.0.1/", "is not octal"),
]


@pytest.mark.parametrize(("url", "reason"), SPELLING_CASES, ids=[c[0] for c in SPELLING_CASES])
def test_every_ipv4_spelling_is_treated_as_the_address_it_denotes(url: str, reason: str) -> None:
    # Literals are judged as addresses, whatever hostname patterns the module lists.
    p = policy(["api.example.com", "localhost", "*.example.com"])
    assert reason in denied(p, url)


def test_ipv4_spelling_parser_agrees_with_inet_aton() -> None:
    assert parse_ipv4_spelling("2130706433") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_ipv4_spelling("0x7f.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_ipv4_spelling("1.2.3") == ipaddress.IPv4Address("1.2.0.3")
    assert parse_ipv4_spelling("api.example.com") is None
    assert parse_ipv4_spelling("1.2.3.example") is None  # last label not numeric: a name
    with pytest.raises(ValueError):
        parse_ipv4_spelling("1.2.3.4.5")


def test_public_addresses_are_not_classified() -> None:
    for text in (PUBLIC, "8.8.8.8", PUBLIC6, "64:ff9b::808:808", "::ffff:8.8.8.8"):
        assert classify_address(ipaddress.ip_address(text)) is None, text


# --------------------------------------------------------------------------- names


def test_name_resolving_to_loopback_is_denied_after_resolution() -> None:
    p = policy(["127.0.0.1.nip.io"], answers={"127.0.0.1.nip.io": ["127.0.0.1"]})
    message = denied(p, "http://127.0.0.1.nip.io/admin")
    assert message == (
        "fetch to 127.0.0.1.nip.io denied: it resolves to 127.0.0.1, a loopback address; "
        "the platform admin can waive it with the host's egress allow-list"
    )


def test_one_private_answer_among_public_ones_is_enough_to_deny() -> None:
    p = policy(answers={"api.example.com": [PUBLIC, "8.8.8.8", "10.0.0.7"]})
    assert "it resolves to 10.0.0.7, a private address" in denied(p, "https://api.example.com/")


def test_name_resolving_to_mapped_or_metadata_ipv6_is_denied() -> None:
    p = policy(answers={"api.example.com": [PUBLIC6, "::ffff:10.0.0.1"]})
    assert "IPv4-mapped IPv6 address embedding 10.0.0.1" in denied(p, "http://api.example.com/")
    p = policy(answers={"api.example.com": ["fd00:ec2::254"]})
    assert "cloud metadata" in denied(p, "http://api.example.com/")


def test_metadata_host_name_is_denied_before_any_lookup() -> None:
    p = policy(["metadata.google.internal"], answers={"metadata.google.internal": [PUBLIC]})
    message = denied(p, "http://metadata.google.internal/computeMetadata/v1/")
    assert message == "fetch to metadata.google.internal denied: cloud metadata host name"
    assert p.resolver.calls == []  # type: ignore[attr-defined]


def test_allowed_name_returns_first_address_as_pinned_ip_after_one_lookup() -> None:
    p = policy(answers={"api.example.com": [PUBLIC, "8.8.8.8"]})
    target = p.check("https://API.Example.com./v3/mail")
    assert target.host == "api.example.com"
    assert str(target.ip) == PUBLIC
    assert target.port == 443 and target.scheme == "https" and target.trusted == "egress"
    assert p.resolver.calls == ["api.example.com"]  # type: ignore[attr-defined]


def test_unresolvable_name_is_a_network_failure_not_a_denial() -> None:
    p = policy(["gone.example.com"], answers={})
    with pytest.raises(UnresolvableHost, match=r"could not resolve host gone\.example\.com"):
        p.check("http://gone.example.com/")


# --------------------------------------------------------------------------- URL shape


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com@127.0.0.1/",
        "http://user:pass@api.example.com/",
        "http://api.example.com:x@127.0.0.1/",
        "http://api.example.com\\@127.0.0.1/",
    ],
)
def test_userinfo_in_the_url_is_refused(url: str) -> None:
    assert "credentials in the URL (user@host) are not allowed" in denied(policy(), url)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://api.example.com:70/_", "ftp://api.example.com/", "dict://x/"],
)
def test_non_http_schemes_are_refused(url: str) -> None:
    scheme = url.split(":", 1)[0]
    assert f"scheme '{scheme}' is not allowed (only http and https)" in denied(policy(), url)


def test_host_not_in_egress_list_is_refused_before_resolution() -> None:
    p = policy()
    message = denied(p, "https://evil.com/steal")
    assert message == "fetch to evil.com denied: host evil.com is not in the module's egress list"
    assert p.resolver.calls == []  # type: ignore[attr-defined]


def test_public_ip_literal_is_never_matched_by_a_hostname_pattern() -> None:
    p = policy(["api.example.com", "*.example.com"])
    assert "host name patterns never match IP addresses" in denied(p, f"http://{PUBLIC}/")
    # ... but an IP listed as such in egress is allowed (still subject to address checks).
    assert str(policy([PUBLIC]).check(f"http://{PUBLIC}/").ip) == PUBLIC
    assert "private address" in denied(policy(["10.0.0.1"]), "http://10.0.0.1/")


# --------------------------------------------------------------------------- patterns


def test_wildcard_matches_subdomains_only() -> None:
    answers = {h: [PUBLIC] for h in ("a.sendgrid.net", "x.y.sendgrid.net", "sendgrid.net")}
    p = policy(["*.sendgrid.net"], answers=answers | {"evilsendgrid.net": [PUBLIC]})
    assert p.check("https://a.sendgrid.net/").host == "a.sendgrid.net"
    assert p.check("https://x.y.sendgrid.net/").host == "x.y.sendgrid.net"
    for url in (
        "https://sendgrid.net/",
        "https://evilsendgrid.net/",
        "https://a.sendgrid.net.evil.com/",
        "https://sendgrid.net.evil.com/",
    ):
        assert "is not in the module's egress list" in denied(p, url)


def test_patterns_with_ports_pin_the_port() -> None:
    p = policy(["api.example.com:8443"])
    assert p.check("https://api.example.com:8443/").port == 8443
    message = denied(p, "https://api.example.com/")
    assert "host api.example.com port 443 is not in the module's egress list" in message
    assert "listed: api.example.com:8443" in message
    assert policy(["api.example.com:443"]).check("https://api.example.com/").port == 443
    assert "port 80" in denied(policy(["api.example.com:443"]), "http://api.example.com/")


def test_patterns_without_port_allow_any_port() -> None:
    assert policy().check("http://api.example.com:8080/").port == 8080


def test_hosts_are_normalised_before_matching() -> None:
    p = policy(["Bücher.Example.", "api.example.com"], answers={"xn--bcher-kva.example": [PUBLIC]})
    assert p.check("http://xn--bcher-kva.example/").host == "xn--bcher-kva.example"
    assert p.check("http://BÜCHER.example/").host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "pattern", ["*", "*.com", "*.0.0.1", "a.*.com", "http://api.example.com", "api.x.com/v1", ""]
)
def test_malformed_patterns_are_configuration_errors(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid egress host pattern"):
        HostPattern.parse(pattern)


# --------------------------------------------------------------------------- admin allow-list
# The admin's list waives the address check for destinations the manifest declares; it never
# adds a destination (SPEC §4).


def test_allow_list_by_cidr_waives_loopback_literals_the_manifest_lists() -> None:
    p = policy(["127.0.0.1", "[::ffff:127.0.0.1]", "10.0.0.1"], allow=["127.0.0.0/8"])
    target = p.check("http://127.0.0.1:9000/")
    assert str(target.ip) == "127.0.0.1" and target.trusted == "allow-list"
    assert str(p.check("http://2130706433:9000/").ip) == "127.0.0.1"  # any spelling
    assert str(p.check("http://[::ffff:127.0.0.1]/").ip) == "127.0.0.1"  # pinned over IPv4
    assert "private address" in denied(p, "http://10.0.0.1/")  # listed, not waived


def test_allow_list_never_grants_a_destination_the_manifest_does_not_declare() -> None:
    answers = {"crm.internal": ["10.1.1.1"], "api.example.com": [PUBLIC]}
    p = policy([], allow=["127.0.0.1", "127.0.0.0/8", "crm.internal", "[::1]"], answers=answers)
    for url, reason in [
        ("http://127.0.0.1:8080/", "127.0.0.1 is an IP address not in the module's egress list"),
        ("http://[::1]/", "::1 is an IP address not in the module's egress list"),
        ("http://crm.internal/", "host crm.internal is not in the module's egress list"),
    ]:
        message = denied(p, url)
        assert reason in message
        assert message.endswith(
            "the platform allow-list only waives the address check for destinations the "
            "manifest declares"
        )
    assert p.resolver.calls == []  # type: ignore[attr-defined]  # refused before any lookup
    p = policy(["api.example.com"], allow=["127.0.0.0/8"], answers=answers)
    assert "host name patterns never match IP addresses" in denied(p, "http://127.0.0.1/")


def test_manifest_ip_literal_needs_the_waiver_only_when_it_is_not_public() -> None:
    assert "loopback address" in denied(policy(["127.0.0.1:8080"]), "http://127.0.0.1:8080/")
    waived = policy(["127.0.0.1:8080"], allow=["127.0.0.1"])
    assert waived.check("http://127.0.0.1:8080/").trusted == "allow-list"
    message = denied(waived, "http://127.0.0.1:8081/")
    assert "127.0.0.1 port 8081 is not in the module's egress list (listed: 127.0.0.1:8080)" in (
        message
    )
    public = policy([f"{PUBLIC}:443"]).check(f"https://{PUBLIC}/")
    assert public.trusted == "egress" and public.port == 443


def test_manifest_bracketed_ipv6_literal_and_port() -> None:
    assert "fetch to ::1 denied: loopback address" in denied(policy(["[::1]"]), "http://[::1]/")
    p = policy(["[::1]:8080"], allow=["::1/128"])
    assert str(p.check("http://[::1]:8080/").ip) == "::1"
    assert "::1 port 80 is not in the module's egress list (listed: [::1]:8080)" in denied(
        p, "http://[::1]/"
    )
    assert str(policy([f"[{PUBLIC6}]"]).check(f"http://[{PUBLIC6}]/").ip) == PUBLIC6


def test_allow_list_by_host_waives_that_name_wherever_it_resolves() -> None:
    answers = {"crm.internal": ["10.1.1.1"], "api.example.com": ["10.1.1.2"]}
    p = policy(["api.example.com", "crm.internal"], allow=["crm.internal"], answers=answers)
    assert str(p.check("http://crm.internal/").ip) == "10.1.1.1"
    assert "resolves to 10.1.1.2, a private address" in denied(p, "http://api.example.com/")


def test_allow_list_by_host_and_port_opens_only_that_port() -> None:
    p = policy(
        ["127.0.0.1", "localhost"],
        allow=["127.0.0.1:8080", "localhost:9000"],
        answers={"localhost": ["127.0.0.1"]},
    )
    assert p.check("http://127.0.0.1:8080/").port == 8080
    assert p.check("http://localhost:9000/").port == 9000
    assert "loopback address" in denied(p, "http://127.0.0.1:8081/")
    assert "resolves to 127.0.0.1, a loopback address" in denied(p, "http://localhost:9001/")


def test_allow_list_cidr_covers_resolved_addresses_of_egress_hosts() -> None:
    p = policy(allow=["10.0.0.0/8"], answers={"api.example.com": ["10.2.3.4"]})
    assert str(p.check("http://api.example.com/").ip) == "10.2.3.4"
    # ... but a CIDR does not put an unlisted name into the egress list
    p = policy(allow=["10.0.0.0/8"], answers={"other.example.com": ["10.2.3.4"]})
    assert "not in the module's egress list" in denied(p, "http://other.example.com/")


def test_broad_cidr_never_opens_cloud_metadata_but_an_exact_entry_does() -> None:
    listed = ["169.254.169.254", "169.254.1.1"]
    assert "cloud metadata" in denied(
        policy(listed, allow=["169.254.0.0/16"]), "http://169.254.169.254/"
    )
    assert "cloud metadata" in denied(
        policy(listed, allow=["0.0.0.0/0"]), "http://169.254.169.254/"
    )
    assert policy(listed, allow=["169.254.0.0/16"]).check("http://169.254.1.1/").trusted == (
        "allow-list"
    )
    assert policy(listed, allow=["169.254.169.254"]).check("http://169.254.169.254/").port == 80


def test_allow_list_entries() -> None:
    """The allow-list arrives as entries from the caller (the host reads its own setting)."""
    p = EgressPolicy.from_config(["api.example.com", "[::1]"], ["127.0.0.0/8", "[::1]:8080"])
    assert p.to_config() == {
        "egress": ["api.example.com", "[::1]"],
        "allow": ["127.0.0.0/8", "[::1]:8080"],
    }
    assert p.check("http://[::1]:8080/").trusted == "allow-list"
    with pytest.raises(ValueError, match="invalid egress allow-list entry"):
        AllowRule.parse("10.0.0.0/33")


def test_ip_port_allow_entries_do_not_open_other_ports_of_resolved_addresses() -> None:
    p = policy(allow=["127.0.0.1:8080"], answers={"api.example.com": ["127.0.0.1"]})
    assert p.check("http://api.example.com:8080/").port == 8080
    assert "resolves to 127.0.0.1, a loopback" in denied(p, "http://api.example.com:22/")


def test_trusted_names_and_wide_ranges_never_reach_metadata_in_any_disguise() -> None:
    for answer in ("169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"):
        p = policy(allow=["api.example.com"], answers={"api.example.com": [answer]})
        assert "cloud metadata" in denied(p, "http://api.example.com/"), answer
    p = policy(["[::ffff:169.254.169.254]"], allow=["::/0", "0.0.0.0/0"])
    assert "cloud metadata" in denied(p, "http://[::ffff:169.254.169.254]/")


WAIVER_HINT = "the platform admin can waive it with the host's egress allow-list"


def test_an_internal_address_refusal_says_how_an_admin_waives_it() -> None:
    assert denied(policy(), "http://10.1.2.3/").endswith(WAIVER_HINT)
    resolving_inside = policy(["api.example.com"], answers={"api.example.com": ["192.168.1.5"]})
    message = denied(resolving_inside, "https://api.example.com/")
    assert "resolves to 192.168.1.5, a private address" in message
    assert message.endswith(WAIVER_HINT)


def test_a_metadata_address_refusal_offers_no_waiver() -> None:
    # the admin's allow-list never opens metadata addresses, so the message must not say so
    assert WAIVER_HINT not in denied(policy(), "http://169.254.169.254/latest/meta-data/")
    assert WAIVER_HINT not in denied(policy(), "http://[fd00:ec2::254]/")
