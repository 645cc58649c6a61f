"""Tenant switch: what one worker per (tenant, module, version) costs, with the SendGrid
example module (``module_manifests/sendgrid``, ``CRM_Marketing_GetTemplateHTML`` against a
canned SendGrid answer, no network).

Run: ``.venv/bin/python benchmarks/tenant_switch.py [--calls N] [--tenants N] [--size N]``.
Prints, all measured in the same run:

- warm-call p50/p99 for one tenant (the baseline);
- the cost of a switch to a tenant whose worker is not warm, and the script's compile time
  alone (the worker compiles a version it has not seen), reported separately;
- throughput for ``--tenants`` tenants called round-robin with a pool of ``--size`` warm
  workers, as a ratio of the single-tenant throughput, and the memory of a warm worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.calls import ModuleCall
from host.module_runtime import module_invocation
from sandbox.compiler import compile_script
from sandbox.invocation import FetchNetwork, Invocation
from sandbox.pool import SandboxPool

MODULE = Path(__file__).resolve().parent.parent / "module_manifests" / "sendgrid"
TEMPLATE = {
    "id": "d-1",
    "name": "Welcome",
    "versions": [{"id": "v1", "active": 1, "html_content": "<p>Hello {{name}}</p>"}],
}


def fake_sendgrid(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=TEMPLATE)


#: api.sendgrid.com at a public address never connected to: answered in process, under the
#: real Fetcher and its egress policy
SENDGRID = FetchNetwork(
    resolver=lambda host, port: ["93.184.216.34"],
    transport_factory=lambda: httpx.MockTransport(fake_sendgrid),
)


def invocation(tenant: str) -> Invocation:
    manifest = json.loads((MODULE / "manifest.json").read_text())
    call = ModuleCall(
        tenant_id=tenant,
        module_id=manifest["id"],
        version=manifest["version"],
        function="CRM_Marketing_GetTemplateHTML",
        manifest=manifest,
        script=SCRIPT,
        settings={"api_key": "SG.benchmark-key", "sender_email": "a@example.com"},
    )
    return module_invocation(call, ["d-1"], egress_allow=(), callbacks={}, storage={},
                             network=SENDGRID)  # fmt: skip


SCRIPT = (MODULE / "module.py").read_text()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(pool: SandboxPool, inv: Invocation) -> float:
    started = time.perf_counter()
    result = pool.run(inv)
    elapsed = (time.perf_counter() - started) * 1000
    assert result.ok, result.error
    return elapsed


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2, help="warm workers (host default 2)")
    parser.add_argument("--switches", type=int, default=40)
    options = parser.parse_args()

    started = time.perf_counter()
    for _ in range(20):
        compile_script(SCRIPT, "module.py")
    compile_ms = (time.perf_counter() - started) * 1000 / 20

    with SandboxPool(size=options.size) as pool:
        one = invocation("tenant-0")
        for _ in range(30):
            timed(pool, one)
        warm = [timed(pool, one) for _ in range(options.calls)]
        warm_p50, warm_p99 = percentiles(warm)
        single_tput = 1000 / statistics.mean(warm)
        worker_rss = rss_kb(pool.run(one).worker_pid or 0)

        switches = []
        for i in range(options.switches):
            assert pool.wait_full(30)
            time.sleep(0.05)  # let the spare come back, as between bursts of traffic
            switches.append(timed(pool, invocation(f"switch-{i}")))
        switch_p50, switch_p99 = percentiles(switches)

        tenants = [invocation(f"rr-{i}") for i in range(options.tenants)]
        started = time.perf_counter()
        for inv in tenants:
            timed(pool, inv)
        rr_tput = options.tenants / (time.perf_counter() - started)

    print(f"{'case':<46} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"{'warm call, one tenant (baseline)':<46} {warm_p50:>9.2f} {warm_p99:>9.2f}")
    print(
        f"{'switch to a tenant not warm (incl. compile)':<46} {switch_p50:>9.2f} {switch_p99:>9.2f}"
    )
    print(f"{'compile of module.py alone (in-process)':<46} {compile_ms:>9.2f}")
    print(f"{'switch excluding compile (estimate)':<46} {switch_p50 - compile_ms:>9.2f}")
    print(f"switch / warm p50 ratio: {switch_p50 / warm_p50:.1f}x")
    print(
        f"round-robin over {options.tenants} tenants, pool size {options.size}: "
        f"{rr_tput:.1f} calls/s vs single tenant {single_tput:.1f} calls/s "
        f"= {100 * rr_tput / single_tput:.1f} % (target >= 10 %)"
    )
    print(f"memory per warm worker (VmRSS): {worker_rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
