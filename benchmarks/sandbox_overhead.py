"""Sandbox overhead: a warm sandboxed call vs the same script in-process vs plain Python.

Run: ``.venv/bin/python benchmarks/sandbox_overhead.py [--calls N]``. Prints a table of
p50/p99 per case, cold-start and kill-and-replace times, all measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.capabilities import InMemoryCapabilities
from sandbox.compiler import compile_script
from sandbox.execution import execute
from sandbox.invocation import Invocation
from sandbox.limits import Limits
from sandbox.pool import SandboxPool

TRIVIAL = "def f():\n    return 1\n"
WEBHOOK = """import json

def f(body):
    events = json.loads(body)
    actions = []
    for event in events:
        actions.append({"type": "UpdateDeliveryStatus", "email": event["email"],
                        "externalId": event["campaign"], "status": event["event"]})
    return {"actions": actions, "response": {"status": 200}}
"""
BODY = json.dumps(
    [
        {"email": f"user{i}@example.com", "campaign": "c-1", "event": "Delivered", "ts": i}
        for i in range(100)
    ]
)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure(call: Callable[[], Any], calls: int, warmup: int = 50) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return percentiles(samples)


def plain(source: str, args: list[Any]) -> Callable[[], Any]:
    def call() -> Any:
        namespace: dict[str, Any] = {}
        exec(code, namespace)  # fresh globals, like the sandbox
        return namespace["f"](*args)

    code = compile(source, "module.py", "exec")
    return call


def in_process(source: str, args: list[Any]) -> Callable[[], Any]:
    compiled = compile_script(source)
    return lambda: execute(compiled, "f", args, {}, InMemoryCapabilities(), None)


def sandboxed(pool: SandboxPool, source: str, args: list[Any]) -> Callable[[], Any]:
    def call() -> Any:
        result = pool.run(Invocation(source=source, function="f", args=args))
        assert result.ok, result.error
        return result.value

    return call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=10)
    options = parser.parse_args()
    rows: list[tuple[str, float, float]] = []
    with SandboxPool(size=2) as pool:
        # a worker freezes what its start-up loaded, so the collection each call runs inside
        # its window walks only the script's objects; do the same here, or the in-process
        # rows would time a full collection of this benchmark's own heap
        gc.collect()
        gc.freeze()
        for name, source, args in (("trivial", TRIVIAL, []), ("webhook-100", WEBHOOK, [BODY])):
            rows.append((f"{name}: plain Python", *measure(plain(source, args), options.calls)))
            rows.append(
                (
                    f"{name}: RestrictedPython in-process",
                    *measure(in_process(source, args), options.calls),
                )
            )
            rows.append(
                (
                    f"{name}: sandboxed (pool.run)",
                    *measure(sandboxed(pool, source, args), options.calls),
                )
            )

        cold: list[float] = []
        for i in range(50):
            source = f"# variant {i} {time.time_ns()}\n{WEBHOOK}"
            started = time.perf_counter()
            assert pool.run(Invocation(source=source, function="f", args=[BODY])).ok
            cold.append((time.perf_counter() - started) * 1e6)
        rows.append(("cold start (new script hash, webhook)", *percentiles(cold)))

        kills: list[float] = []
        replace: list[float] = []
        bomb = Invocation(
            source="def f():\n    while True:\n        pass\n",
            function="f",
            limits=Limits(timeout_s=0.2),
        )
        for _ in range(options.kills):
            result = pool.run(bomb)
            assert result.error is not None and result.error.kind == "timeout"
            returned = time.perf_counter()
            kills.append(result.wall_ms * 1000 - 200_000)
            assert pool.wait_full(10)
            replace.append((time.perf_counter() - returned) * 1e6)
        rows.append(("kill: deadline -> result returned", *percentiles(kills)))
        rows.append(("replace: result -> pool full again", *percentiles(replace)))
        kill_and_replace = [k + r for k, r in zip(kills, replace, strict=True)]
        rows.append(("kill-and-replace (deadline -> full)", *percentiles(kill_and_replace)))

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'p50 µs':>10}  {'p99 µs':>10}")
    for name, p50, p99 in rows:
        print(f"{name:<{width}}  {p50:>10.1f}  {p99:>10.1f}")


if __name__ == "__main__":
    main()
