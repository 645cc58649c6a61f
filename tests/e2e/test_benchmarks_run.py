"""Every benchmark still runs, with tiny sizes: a benchmark is only run by hand on a quiet
machine, so without this a change to the host's wiring breaks one silently (it happened: a
benchmark built a Host without opening it and failed on an empty database). Nothing here
looks at a figure; each run must exit 0 and print its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RUNS = {
    "sandbox_overhead": (["--calls", "20", "--kills", "1"], "kill-and-replace"),
    "campaign_prepare": (["--sizes", "300", "--batch-size", "100"], "| 300 |"),
    "tenant_switch": (
        ["--calls", "10", "--tenants", "4", "--switches", "3", "--versions", "1"],
        "round-robin over 4 tenants",
    ),
    "webhook_throughput": (["--clients", "2", "--seconds", "0.5"], "sandboxed"),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_benchmark_runs_to_its_table(name: str) -> None:
    args, expected = RUNS[name]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in done.stderr
