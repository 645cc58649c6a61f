"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.pool import SandboxPool


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    """Warm sandbox workers shared by every test that runs modules through a Host
    (``Host(..., sandbox=pool)``): starting workers per test would dominate the suite."""
    with SandboxPool(size=2) as shared:
        yield shared
