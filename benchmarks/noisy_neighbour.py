"""Noisy neighbour: tenant A floods its webhook URL while tenant B sends one webhook a second
and the admin API is polled, on one real ``crm-host serve`` with the default 2 sandbox
workers (so A's share is 1 worker).

Phases, each a fixed number of seconds, all in the same run and the same server:

1. **baseline** — no flood: B's webhooks and the admin polls alone.
2. **sleep flood** — ``--clients`` clients re-send to A's URL as soon as they have an answer
   (after a refusal, ``--flood-pause`` seconds later); A's module *sleeps* 4.9 s per call,
   its wall limit being 5 s.
3. **CPU flood** — the same, A's module spins the CPU for 4.5 s (limit 5 s). No target: the
   machine's cores are shared by A's workers, the server and this load generator.

Prints B's and the admin API's p50/p99 per phase, their ratio to the baseline, and what A
received (status counts, whether every refusal carried ``Retry-After``, A's slowest answer).

    .venv/bin/python benchmarks/noisy_neighbour.py          # --clients 50 --seconds 12

Loopback only, free ports, the server is stopped at the end; it finishes by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.webhook_throughput import ADMIN, server  # noqa: E402

SCRIPT = """\
import time


def CRM_Marketing_ParseWebhookRequest(request):
    if settings["mode"] == "sleep":
        time.sleep(4.9)
    elif settings["mode"] == "cpu":
        end = time.time() + 4.5
        while time.time() < end:
            pass
    return {"actions": []}


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "x-" + request["campaignId"]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    raise NotImplementedError
"""

MANIFEST = {
    "id": "neighbour",
    "name": "Neighbour",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "description": "noisy neighbour benchmark",
    "egress": [],
    "settings": {
        "type": "object",
        "properties": {"mode": {"enum": ["none", "sleep", "cpu"]}},
        "required": ["mode"],
    },
    "limits": {"timeout_s": 5},
}

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Phase:
    name: str
    b_ms: list[float] = field(default_factory=list)
    b_status: Counter[int] = field(default_factory=Counter)
    admin_ms: list[float] = field(default_factory=list)
    a_status: Counter[int] = field(default_factory=Counter)
    a_refused_without_retry_after: int = 0
    a_slowest_ms: float = 0.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def set_up(url: str) -> dict[str, str]:
    """Tenants a and b with the module enabled; returns their webhook URLs."""
    hooks = {}
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as admin:
        admin.post(
            "/api/v1/modules", json={"manifest": MANIFEST, "script": SCRIPT}
        ).raise_for_status()
        for tenant in ("tenant-a", "tenant-b"):
            admin.post("/api/v1/tenants", json={"id": tenant, "name": tenant}).raise_for_status()
            enabled = admin.put(
                f"/api/v1/tenants/{tenant}/modules/neighbour", json={"settings": {"mode": "none"}}
            )
            enabled.raise_for_status()
            hooks[tenant] = enabled.json()["webhookUrl"]
        for _ in range(3):  # warm up: the first calls start the workers and fill caches
            for hook in hooks.values():
                httpx.post(hook, json=[], timeout=60).raise_for_status()
            admin.get("/api/v1/tenants").raise_for_status()
    return hooks


def set_mode(url: str, mode: str) -> None:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as admin:
        admin.patch(
            "/api/v1/tenants/tenant-a/modules/neighbour", json={"settings": {"mode": mode}}
        ).raise_for_status()


async def b_sender(client: httpx.AsyncClient, hook: str, phase: Phase, until: float) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await client.post(hook, json=[])
        phase.b_ms.append((time.perf_counter() - started) * 1000)
        phase.b_status[response.status_code] += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))


async def admin_poller(client: httpx.AsyncClient, url: str, phase: Phase, until: float) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await client.get(url + "/api/v1/tenants", headers=AUTH)
        response.raise_for_status()
        phase.admin_ms.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.1)


async def flooder(
    client: httpx.AsyncClient, hook: str, phase: Phase, until: float, pause: float
) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            response = await client.post(hook, json=[], timeout=max(0.1, until - time.monotonic()))
        except httpx.TimeoutException:
            return  # the phase is over; the server finishes the call on its own
        phase.a_slowest_ms = max(phase.a_slowest_ms, (time.perf_counter() - started) * 1000)
        phase.a_status[response.status_code] += 1
        if response.status_code in (429, 503):
            if "retry-after" not in response.headers:
                phase.a_refused_without_retry_after += 1
            await asyncio.sleep(pause)


async def flood(hook: str, clients: int, seconds: float, pause: float) -> Phase:
    phase = Phase("flood")
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(flooder(client, hook, phase, until, pause) for _ in range(clients)))
    return phase


def flood_process(hook: str, clients: int, seconds: float, pause: float, out: Any) -> None:
    """The flood, in a process of its own: its event loop's lag must not count in the
    latencies measured for B and the admin."""
    phase = asyncio.run(flood(hook, clients, seconds, pause))
    out.put((dict(phase.a_status), phase.a_refused_without_retry_after, phase.a_slowest_ms))


async def measure(name: str, url: str, hooks: dict[str, str], seconds: float) -> Phase:
    phase = Phase(name)
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(
            b_sender(client, hooks["tenant-b"], phase, until),
            admin_poller(client, url, phase, until),
        )
    return phase


def run_phase(
    name: str, url: str, hooks: dict[str, str], seconds: float, clients: int, pause: float
) -> Phase:
    if not clients:
        return asyncio.run(measure(name, url, hooks, seconds))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    flooding = context.Process(
        target=flood_process, args=(hooks["tenant-a"], clients, seconds + 1, pause, results)
    )
    flooding.start()
    time.sleep(1)  # the flood is under way before B's first request
    phase = asyncio.run(measure(name, url, hooks, seconds))
    statuses, without_retry_after, slowest = results.get(timeout=60)
    flooding.join(10)
    phase.a_status.update(statuses)
    phase.a_refused_without_retry_after = without_retry_after
    phase.a_slowest_ms = slowest
    return phase


def report(phases: list[Phase]) -> None:
    base = phases[0]
    base_b99, base_admin99 = percentile(base.b_ms, 99), percentile(base.admin_ms, 99)
    print(
        f"{'phase':<12} {'B n':>4} {'B p50':>7} {'B p99':>7} {'B p99x':>7} "
        f"{'adm n':>5} {'adm p50':>8} {'adm p99':>8} {'admx':>6}  A statuses (slowest ms)"
    )
    for phase in phases:
        b99, admin99 = percentile(phase.b_ms, 99), percentile(phase.admin_ms, 99)
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(phase.a_status.items())) or "-"
        print(
            f"{phase.name:<12} {len(phase.b_ms):>4} {percentile(phase.b_ms, 50):>7.1f} "
            f"{b99:>7.1f} {b99 / base_b99:>7.2f} {len(phase.admin_ms):>5} "
            f"{percentile(phase.admin_ms, 50):>8.1f} {admin99:>8.1f} {admin99 / base_admin99:>6.2f}"
            f"  {statuses} ({phase.a_slowest_ms:.0f})"
        )
        if phase.b_status.keys() - {200}:
            print(f"    B answered {dict(phase.b_status)}")
        if phase.a_refused_without_retry_after:
            print(f"    {phase.a_refused_without_retry_after} refusals without Retry-After")
    flood = phases[1]
    print()
    print("targets (sleep flood):")
    print(f"  B p99 <= 2 x baseline: {percentile(flood.b_ms, 99) <= 2 * base_b99}")
    print(f"  admin p99 <= 100 ms:   {percentile(flood.admin_ms, 99) <= 100}")
    refused = flood.a_status[503] + flood.a_status[429]
    print(
        f"  A gets 503 + Retry-After: {refused > 0 and not flood.a_refused_without_retry_after} "
        f"({refused} refusals, slowest answer {flood.a_slowest_ms:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="A's flooding clients")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each phase")
    parser.add_argument(
        "--flood-pause", type=float, default=0.05, help="A's pause after a refusal (s)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, server("sandboxed", Path(tmp)) as url:
        hooks = set_up(url)
        phases: list[Phase] = []
        for name, mode, clients in (
            ("baseline", "none", 0),
            ("sleep flood", "sleep", args.clients),
            ("cpu flood", "cpu", args.clients),
        ):
            set_mode(url, mode)
            phases.append(run_phase(name, url, hooks, args.seconds, clients, args.flood_pause))
            if clients:
                time.sleep(5)  # let A's last running call end before the next phase
    report(phases)


if __name__ == "__main__":
    main()
