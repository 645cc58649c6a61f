"""Fixtures shared by the whole suite."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sandbox.pool import SandboxPool


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    """Warm sandbox workers shared by every test that runs modules through a Host
    (``Host(..., sandbox=pool)``): starting workers per test would dominate the suite."""
    with SandboxPool(size=2) as shared:
        yield shared


@pytest.fixture(autouse=True, scope="module")
def _frozen_heap() -> None:
    """What earlier test modules left in this long-lived process is frozen out of the
    collector, as a worker freezes its preload: the sandbox's in-window collection is a full
    ``gc.collect()``, and tests that execute scripts in this process would otherwise scan the
    whole suite's heap on every call (seconds each, late in a run)."""
    gc.collect()
    gc.freeze()
