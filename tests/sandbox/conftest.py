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


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process, read from /proc (no psutil)."""
    me = os.getpid()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != b"Z":
            found.add(int(entry))
    return found
