"""Where the vendors' published samples are: ``tests/fixtures/vendor`` in this repository.

They are published vendor data (webhook payloads, signature vectors, API notes), copied byte for
byte with their ``INDEX.md`` (origin and expected CRM effect of each file) and
``CHECKSUMS.sha256``; ``test_vendor_fixtures.py`` proves the bytes still match the checksums."""

from __future__ import annotations

from pathlib import Path

VENDOR_SAMPLES = Path(__file__).resolve().parent / "fixtures" / "vendor"
