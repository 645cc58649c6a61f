"""Who is on the other end of a request, for sign-in limits and the audit log.

The connection's peer is the client, unless the peer is one of ``CRM_HOST_TRUSTED_PROXIES``:
then ``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first
address that is not one is the client. A client cannot forge its way past this by sending
its own ``X-Forwarded-For``: the entries it wrote are to the left of the one the trusted
proxy appended — also when the proxy adds a header line of its own rather than appending to
the client's (HAProxy does): the lines are one list, in order (RFC 9110, 5.3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str]):
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client_of(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The client's address: ``peer`` (the connection) unless a trusted proxy forwarded;
        ``forwarded_for``: every ``X-Forwarded-For`` line of the request, in order."""
        address = peer or "unknown"
        if not self.trusted or not self._is_trusted(address) or not forwarded_for:
            return address
        for hop in reversed(",".join(forwarded_for).split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address  # a malformed chain: trust nothing of it
            if not self._is_trusted(hop):
                return hop
            address = hop
        return address
