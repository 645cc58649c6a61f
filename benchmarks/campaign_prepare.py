"""Benchmark: a campaign to 1,000,000 (and 100,000) contacts through a sandboxed module whose
ExportContacts/PrepareCampaign/CreateCampaign return at once — the host's own cost of the
export → prepare → create flow: keyset reads, sandbox round trips with 1,000 addresses,
per-batch Delivery inserts and commits, the final Pending → Sent update.

Contacts are bulk-inserted with plain SQL for setup speed (not measured): ``executemany`` on
SQLite, ``COPY`` on PostgreSQL. Reports wall time, contacts/s, peak RSS of the host process
(``ru_maxrss``; setup included, so it is an upper bound) and of each sandbox worker
(``VmHWM``), and the time per contact of each size against the smallest (target: 10 times the
contacts in at most 11 times the time).

``--concurrent N`` then runs N campaigns of the largest size at once, one per tenant, on the
server's lease-loop job threads (``CampaignJobRunner.start`` with N threads, what
``CRM_HOST_CAMPAIGN_WORKERS`` sets) and the same 2-worker sandbox pool, and reports each
campaign's time and the aggregate contacts/s.

    .venv/bin/python benchmarks/campaign_prepare.py                 # 100000 and 1000000
    .venv/bin/python benchmarks/campaign_prepare.py --sizes 100000 --concurrent 2
    .venv/bin/python benchmarks/campaign_prepare.py --database postgresql

``--database postgresql`` starts a throwaway cluster and stops it at the end;
``--database-url`` uses an existing server instead (``bench_databases.py``).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_databases import add_options, databases, kind  # noqa: E402

from host.config import HostSettings  # noqa: E402
from host.marketing.campaigns import CampaignDraft  # noqa: E402
from host.marketing.job_runner import new_owner  # noqa: E402
from host.modules.packages import from_json_body  # noqa: E402
from host.platform import Host  # noqa: E402

SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "bench-" + request["campaignId"][:8]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""

MANIFEST = {
    "id": "bench",
    "name": "Bench",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "egress": [],
    "settings": {"type": "object", "properties": {}},
}


CONTACT_COLUMNS = "tenant_id, id, name, email, email_key, phone, status, created_at, updated_at"


def contact_rows(tenant_id: str, count: int) -> Iterator[tuple[Any, ...]]:
    created = datetime.now(UTC) - timedelta(minutes=1)
    for i in range(count):
        email = f"u{i}@{tenant_id}.test"
        yield (tenant_id, f"c{i:08d}", "", email, email, None, "Subscribed", created, created)


def insert_contacts(host: Host, tenant_id: str, count: int) -> None:
    """The tenant's contacts, the columns the contact service writes, in one statement
    stream: ``COPY`` on PostgreSQL, ``executemany`` on SQLite (timestamps as the host's
    ``UTCDateTime`` stores them there: naive UTC text)."""
    raw = host.db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if host.db.engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY contacts ({CONTACT_COLUMNS}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in contact_rows(tenant_id, count):
                    copy.write_row(row)
        else:
            cursor.executemany(
                f"INSERT INTO contacts ({CONTACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (*row[:7], *(t.strftime("%Y-%m-%d %H:%M:%S.%f") for t in row[7:]))
                    for row in contact_rows(tenant_id, count)
                ),
            )
        if host.db.engine.dialect.name == "postgresql":
            # what autovacuum does within a minute of a bulk load; without statistics the
            # keyset reads of the first batches scan and sort every later contact
            cursor.execute("ANALYZE contacts")
        raw.commit()
    finally:
        raw.close()


def worker_peak_kib(pids: list[int]) -> list[int]:
    peaks = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
        except OSError:
            pass
    return peaks


def open_host(url: str) -> Host:
    settings = HostSettings(database_url=url, secret_key="benchmark secret key", plugins=[])
    host = Host(settings, load_entry_points=False).open()
    body = {"manifest": MANIFEST, "script": SCRIPT}
    host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    return host


def add_tenant(host: Host, tenant_id: str, contacts: int) -> float:
    """A tenant with the module enabled and ``contacts`` contacts; returns the setup time."""
    host.tenants.create(tenant_id, tenant_id.title())
    host.tenants.configure(tenant_id, "bench", settings={})
    started = time.perf_counter()
    insert_contacts(host, tenant_id, contacts)
    return time.perf_counter() - started


def draft(batch_size: int) -> CampaignDraft:
    return CampaignDraft(
        module="bench",
        name="Bench",
        type="Email",
        subject="s",
        senderName="n",
        senderEmail="n@bench.test",
        html="<p>x</p>",
        contactIds="all",
        batchSize=batch_size,
    )


def run(url: str, size: int, batch_size: int) -> dict[str, float]:
    """One campaign to ``size`` contacts, its job run in this thread (``crm-host campaign
    send``)."""
    host = open_host(url)
    try:
        setup_s = add_tenant(host, "bench", size)
        host.sandbox.wait_full()
        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        owner = new_owner()
        started = time.perf_counter()
        created = host.campaigns.create("bench", draft(batch_size), claim_for=owner)
        stage = host.campaign_runner.run(created.id, owner=owner)
        wall = time.perf_counter() - started
        shown = host.campaigns.get("bench", created.id, with_stats=False)
        assert stage == "done" and shown.progress.prepared == size, shown
        workers = worker_peak_kib(host.sandbox.worker_pids(include_spares=True))
    finally:
        host.close()
    return {
        "contacts": size,
        "setup_s": setup_s,
        "wall_s": wall,
        "per_s": size / wall,
        "host_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "host_peak_before_mib": rss_before / 1024,
        "worker_peak_mib": max(workers, default=0) / 1024,
        "batches": shown.progress.batches,
    }


def run_concurrent(url: str, size: int, batch_size: int, count: int) -> dict[str, Any]:
    """``count`` campaigns of ``size`` contacts, one per tenant, queued together and run by
    ``count`` job threads (the server's runner); each one's time from the queueing to its
    end (``finished_at`` set), as seen by polling every 50 ms."""
    host = open_host(url)
    try:
        tenants = [f"bench-{n}" for n in range(count)]
        for tenant_id in tenants:
            add_tenant(host, tenant_id, size)
        host.campaign_runner.workers = count
        host.sandbox.wait_full()
        gc.collect()
        started = time.perf_counter()
        queued = {t: host.campaigns.create(t, draft(batch_size)).id for t in tenants}
        host.campaign_runner.start()
        finished: dict[str, float] = {}
        deadline = started + 3600
        while len(finished) < count and time.perf_counter() < deadline:
            for tenant_id, campaign_id in queued.items():
                if tenant_id in finished:
                    continue
                shown = host.campaigns.get(tenant_id, campaign_id, with_stats=False)
                if shown.finished_at is not None:
                    assert shown.error is None and shown.progress.prepared == size, shown
                    finished[tenant_id] = time.perf_counter() - started
            threading.Event().wait(0.05)
        host.campaign_runner.stop()
        assert len(finished) == count, finished
        workers = worker_peak_kib(host.sandbox.worker_pids(include_spares=True))
    finally:
        host.close()
    wall = max(finished.values())
    return {
        "times": [finished[t] for t in tenants],
        "wall_s": wall,
        "per_s": size * count / wall,
        "host_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mib": max(workers, default=0) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--concurrent",
        type=int,
        default=0,
        metavar="N",
        help="then N campaigns of the largest size at once on N job threads",
    )
    add_options(parser)
    args = parser.parse_args()
    runs = len(args.sizes) + (1 if args.concurrent else 0)
    with tempfile.TemporaryDirectory() as tmp, databases(args, Path(tmp), runs) as urls:
        print(f"{kind(args)}, batches of {args.batch_size:,}")
        print(
            "| contacts | batches | wall s | contacts/s | time per contact ÷ smallest's "
            "| host peak RSS MiB | worker peak MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        first: dict[str, float] | None = None
        for url, size in zip(urls, args.sizes, strict=False):
            r = run(url, size, args.batch_size)
            first = first or r
            scaling = (r["wall_s"] / r["contacts"]) / (first["wall_s"] / first["contacts"])
            print(
                f"| {r['contacts']:,} | {r['batches']:,} | {r['wall_s']:.1f} | "
                f"{r['per_s']:,.0f} | {scaling:.2f} | "
                f"{r['host_peak_mib']:.0f} (before the send {r['host_peak_before_mib']:.0f}) | "
                f"{r['worker_peak_mib']:.0f} |",
                flush=True,
            )
        if args.concurrent:
            size = max(args.sizes)
            c = run_concurrent(urls[-1], size, args.batch_size, args.concurrent)
            times = ", ".join(f"{t:.1f}" for t in c["times"])
            print(
                f"{args.concurrent} campaigns of {size:,} contacts at once "
                f"({args.concurrent} job threads, 2 sandbox workers): each done after {times} s; "
                f"{c['per_s']:,.0f} contacts/s in all; host peak RSS {c['host_peak_mib']:.0f} "
                f"MiB, worker peak {c['worker_peak_mib']:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
