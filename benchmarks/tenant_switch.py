"""Tenant switch: what one worker per (tenant, module, version) costs, with the SendGrid
example module (``module_manifests/sendgrid``, ``CRM_Marketing_GetTemplateHTML`` against a
canned SendGrid answer, no network).

Run: ``.venv/bin/python benchmarks/tenant_switch.py [--calls N] [--tenants N] [--size N]
[--spawn]`` (``--spawn``: fresh interpreters instead of the fork server, for comparison).
Prints, all measured in the same run:

- warm-call p50/p99 for one tenant (the baseline);
- the cost of a switch to a tenant whose worker is not warm (a worker forked from the
  template, sent the code the pool compiled once), of a switch to a version no worker has
  seen (compiled in the worker, then once by the parent), and the script's compile time
  alone, reported separately;
- throughput for ``--tenants`` tenants called round-robin with a pool of ``--size`` warm
  workers, as a ratio of the single-tenant throughput, and the memory of a warm worker.
"""

from __future__ import annotations

import argparse
import marshal
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host.calls import ModuleCall
from host.manifest import parse_manifest
from host.module_program import ModuleProgram
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


def invocation(tenant: str, script: str | None = None) -> Invocation:
    call = ModuleCall(
        tenant_id=tenant,
        module_id=PROGRAM.manifest.id,
        version=PROGRAM.manifest.version,
        function="CRM_Marketing_GetTemplateHTML",
        program=PROGRAM if script is None else ModuleProgram.of(PROGRAM.manifest, script),
        settings={"api_key": "SG.benchmark-key", "sender_email": "a@example.com"},
    )
    return module_invocation(call, ["d-1"], egress_allow=(), callbacks={}, storage={},
                             network=SENDGRID)  # fmt: skip


SCRIPT = (MODULE / "module.py").read_text()
PROGRAM = ModuleProgram.of(parse_manifest((MODULE / "manifest.json").read_text()), SCRIPT)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(pool: SandboxPool, inv: Invocation) -> float:
    started = time.perf_counter()
    result = pool.run(inv)
    elapsed = (time.perf_counter() - started) * 1000
    assert result.ok, result.error
    return elapsed


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, and from smaps_rollup the proportional (Pss) and private (USS) share: a forked
    worker shares the template's pages, so RSS overstates what one more worker costs."""
    found = {"rss": 0, "pss": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                found[name.lower()] = int(rest.split()[0])
            elif name in ("Private_Clean", "Private_Dirty"):
                found["uss"] += int(rest.split()[0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2, help="warm workers (host default 2)")
    parser.add_argument("--spares", type=int, default=1, help="warm spares (host default 1)")
    parser.add_argument("--switches", type=int, default=40)
    parser.add_argument("--versions", type=int, default=10, help="switches to unseen versions")
    parser.add_argument("--spawn", action="store_true", help="spawn workers (no fork server)")
    options = parser.parse_args()

    started = time.perf_counter()
    for _ in range(20):
        compiled = compile_script(SCRIPT, "module.py")
    compile_ms = (time.perf_counter() - started) * 1000 / 20
    payload = marshal.dumps(compiled.code)
    started = time.perf_counter()
    for _ in range(200):
        marshal.loads(payload)
    load_ms = (time.perf_counter() - started) * 1000 / 200

    with SandboxPool(
        size=options.size, spares=options.spares, fork_server=not options.spawn
    ) as pool:
        one = invocation("tenant-0")
        for _ in range(30):
            timed(pool, one)
        warm = [timed(pool, one) for _ in range(options.calls)]
        warm_p50, warm_p99 = percentiles(warm)
        single_tput = 1000 / statistics.mean(warm)
        worker = memory_kb(pool.run(one).worker_pid or 0)
        template = memory_kb(pool.template_pid) if pool.template_pid else None

        def switch(inv: Invocation) -> float:
            assert pool.wait_full(30)
            time.sleep(0.05)  # let the spare come back, as between bursts of traffic
            return timed(pool, inv)

        switches = [switch(invocation(f"switch-{i}")) for i in range(options.switches)]
        switch_p50, switch_p99 = percentiles(switches)
        # a version no worker has seen: compiled in the worker, then once by the parent
        versions = [
            switch(invocation(f"version-{i}", f"{SCRIPT}\n# version {i}\n"))
            for i in range(options.versions)
        ]
        version_p50, version_p99 = percentiles(versions)

        tenants = [invocation(f"rr-{i}") for i in range(options.tenants)]
        started = time.perf_counter()
        for inv in tenants:
            timed(pool, inv)
        rr_tput = options.tenants / (time.perf_counter() - started)
        method, compiles = pool.start_method, pool.parent_compiles

    print(f"workers: {method}; pool size {options.size} + {options.spares} spare(s)")
    print(f"{'case':<52} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"{'warm call, one tenant (baseline)':<52} {warm_p50:>9.2f} {warm_p99:>9.2f}")
    print(f"{'switch to a tenant not warm (code shipped, no compile)':<52} "
          f"{switch_p50:>9.2f} {switch_p99:>9.2f}")  # fmt: skip
    print(f"{'switch to a version not seen (compile in worker)':<52} "
          f"{version_p50:>9.2f} {version_p99:>9.2f}")  # fmt: skip
    print(f"{'compile of module.py alone (in-process)':<52} {compile_ms:>9.2f}")
    print(f"{'marshal.loads of its code (what a fresh worker does)':<52} {load_ms:>9.3f}")
    print(f"parent compiles: {compiles} (one per source seen: 1 + {options.versions} versions)")
    print(f"switch / warm p50 ratio: {switch_p50 / warm_p50:.1f}x")
    print(
        f"round-robin over {options.tenants} tenants, pool size {options.size}: "
        f"{rr_tput:.1f} calls/s vs single tenant {single_tput:.1f} calls/s "
        f"= {100 * rr_tput / single_tput:.1f} % (target >= 10 %)"
    )
    print(
        f"memory per warm worker: VmRSS {worker['rss'] / 1024:.1f} MiB, "
        f"Pss {worker['pss'] / 1024:.1f} MiB, private {worker['uss'] / 1024:.1f} MiB"
    )
    if template is not None:
        print(f"template process: VmRSS {template['rss'] / 1024:.1f} MiB (once per pool)")


if __name__ == "__main__":
    main()
