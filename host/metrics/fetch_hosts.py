"""The ``host`` label of a fetch, kept to a bounded set of values.

A module may only reach what its manifest's ``egress`` lists, but a wildcard entry
(``*.api.example.com``) admits any number of names, and a script chooses them (a data
centre per tenant, or a random subdomain per call). Labelling fetches by the name fetched
would let one module create unbounded time series. So the label is the manifest entry the
name matched: a literal entry stays the name itself, every name under a wildcard is the
wildcard, and a fetch that matched no entry (refused by the egress policy) is ``other``.
The set of values is bounded by the uploaded manifests, which only the platform admin adds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sandbox.addresses import host_ip, normalise_host
from sandbox.egress import HostPattern

UNLISTED = "other"


@functools.lru_cache(maxsize=1024)
def _patterns(egress: tuple[str, ...]) -> tuple[HostPattern, ...]:
    patterns = []
    for entry in egress:
        try:
            patterns.append(HostPattern.parse(entry))
        except ValueError:  # a stored manifest was validated; keep going regardless
            continue
    return tuple(patterns)


def fetch_host_label(host: object, egress: Sequence[str]) -> str:
    """The label of a fetch of ``host`` (as the fetch record names it) by a module whose
    manifest lists ``egress``: the entry it matched, without its port."""
    if not isinstance(host, str):
        return UNLISTED
    try:
        name = normalise_host(host)
        ip = host_ip(name)
    except ValueError:
        return UNLISTED
    for pattern in _patterns(tuple(egress)):
        if pattern.matches_host(name, ip):
            return "*." + pattern.host if pattern.wildcard else pattern.host
    return UNLISTED
