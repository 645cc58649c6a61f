"""Shared fixtures of the sandbox tests: capabilities held in memory, a small world spec, and
``run`` — compile a source and execute one of its functions in-process."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from sandbox.capabilities import InMemoryCapabilities
from sandbox.compiler import compile_script
from sandbox.execution import execute
from sandbox.world import WorldSpec

Run = Callable[..., Any]


@pytest.fixture
def caps() -> InMemoryCapabilities:
    """No network (every fetch is refused), empty storage, one setting."""
    return InMemoryCapabilities(settings={"api_key": "secret-key", "region": "eu"})


@pytest.fixture
def spec() -> WorldSpec:
    return WorldSpec(
        enums={"Status": {"Sent": "Sent", "Draft": "Draft"}},
        record_types={"Stats": {"total": 0, "sent": 0}, "Template": ["externalId", "name"]},
        constants={"PAGE_SIZE": 50, "LIMITS": {"max": 3}},
        namespaces={"crm": ["contacts"]},
    )


@pytest.fixture
def run(caps: InMemoryCapabilities, spec: WorldSpec) -> Run:
    """``run(source, *args, function="f", **kwargs)`` → the function's plain return value."""

    def _run(source: str, *args: Any, function: str = "f", **kwargs: Any) -> Any:
        compiled = compile_script(textwrap.dedent(source))
        return execute(compiled, function, list(args), kwargs, caps, spec)

    return _run


# -- worker pools (tests/sandbox/test_pool.py, test_limits.py, test_isolation.py) -----------


@pytest.fixture(scope="module")
def sandbox_pool():
    """Two warm worker processes shared by one test module; closed (no children left) after."""
    from sandbox.pool import SandboxPool

    with SandboxPool(size=2) as pool:
        yield pool


def _live_parents() -> dict[int, int]:
    """pid → parent pid of every live (non-zombie) process, read from /proc (no psutil)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(entry)] = int(fields[1])
    return parents


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process."""
    me = os.getpid()
    return {pid for pid, parent in _live_parents().items() if parent == me}


def descendant_pids() -> set[int]:
    """Live children of this process and theirs (forked workers are the template's)."""
    parents = _live_parents()
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return int(fh.read().rsplit(b")", 1)[1].split()[1])
