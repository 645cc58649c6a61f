"""Where the vendors' published samples are: ``shared/vendor-samples`` beside the checkout
(as every session and CI lay it out)."""

from __future__ import annotations

from pathlib import Path

VENDOR_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "vendor-samples"
