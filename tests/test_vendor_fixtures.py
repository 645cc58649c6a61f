"""The copied vendor samples are complete and unchanged: every file is listed in
``CHECKSUMS.sha256`` with the digest of its bytes, and nothing unlisted lies beside them."""

from __future__ import annotations

import hashlib

from tests.vendor_samples import VENDOR_SAMPLES


def test_every_sample_matches_its_checksum_and_none_is_unlisted() -> None:
    listed = dict(
        reversed(line.split("  ", 1))
        for line in (VENDOR_SAMPLES / "CHECKSUMS.sha256").read_text().splitlines()
    )
    assert len(listed) > 50
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR_SAMPLES / name).read_bytes()).hexdigest() == digest, name
    present = {p.name for p in VENDOR_SAMPLES.iterdir()} - {"CHECKSUMS.sha256"}
    assert present == set(listed)
