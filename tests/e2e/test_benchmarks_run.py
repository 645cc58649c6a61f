"""Every benchmark still runs, with tiny sizes: a benchmark is only run by hand on a quiet
machine, so without this a change to the host's wiring breaks one silently (it happened: a
benchmark built a Host without opening it and failed on an empty database). Nothing here
looks at a figure; each run must exit 0 and print its table. The benchmarks that take
``--database-url`` also run on the suite's PostgreSQL cluster, and must leave no database of
theirs behind there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import TEMPLATE, Cluster

ROOT = Path(__file__).resolve().parents[2]

RUNS = {
    "sandbox_overhead": (["--calls", "20", "--kills", "1"], "kill-and-replace"),
    "campaign_prepare": (
        ["--sizes", "300", "--batch-size", "100", "--concurrent", "2"],
        "2 campaigns of 300 contacts at once",
    ),
    "tenant_switch": (
        ["--calls", "10", "--tenants", "4", "--switches", "3", "--versions", "1"],
        "round-robin over 4 tenants",
    ),
    "webhook_throughput": (["--clients", "2", "--seconds", "0.5"], "sandboxed"),
    "tenants_scale": (
        [
            "--tenants",
            "25",
            "--cold-contacts",
            "2",
            "--webhooks",
            "6",
            "--rounds",
            "2",
            "--warm-up",
            "2",
        ],
        "25 / 10 tenants: wall x",
    ),
}
ON_POSTGRESQL = ("campaign_prepare", "tenants_scale")


def run(name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_benchmark_runs_to_its_table(name: str) -> None:
    args, expected = RUNS[name]
    done = run(name, args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ON_POSTGRESQL)
def test_the_benchmark_runs_on_postgresql(name: str, postgres_cluster: Cluster) -> None:
    args, expected = RUNS[name]
    server = ["--database-url", postgres_cluster.url("postgres"), "--database-template", TEMPLATE]
    done = run(name, [*args, *server])
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
    assert done.stdout.startswith("postgresql"), done.stdout[:300]
    assert "Traceback" not in done.stderr
    with postgres_cluster.admin() as connection:
        left = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'crm_bench%'"
        ).fetchall()
    assert left == []
