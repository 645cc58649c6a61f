"""Benchmark: a campaign to 1,000,000 (and 100,000) contacts through a sandboxed module whose
ExportContacts/PrepareCampaign/CreateCampaign return at once — the host's own cost of the
export → prepare → create flow: keyset reads, sandbox round trips with 1,000 addresses,
per-batch Delivery inserts and commits, the final Pending → Sent update.

Contacts are bulk-inserted with plain SQL for setup speed (not measured). Reports wall time,
contacts/s, peak RSS of the host process (``ru_maxrss``; setup included, so it is an upper
bound) and of each sandbox worker (``VmHWM``).

    .venv/bin/python benchmarks/campaign_prepare.py                 # 100000 and 1000000
    .venv/bin/python benchmarks/campaign_prepare.py --sizes 100000
"""

from __future__ import annotations

import argparse
import gc
import resource
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def insert_contacts(db: Path, count: int) -> None:
    created = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(db) as connection:
        connection.executemany(
            "INSERT INTO contacts (tenant_id, id, name, email, email_key, phone, status, "
            "created_at, updated_at) VALUES ('bench', ?, '', ?, ?, NULL, 'Subscribed', ?, ?)",
            (
                (f"c{i:08d}", f"u{i}@example.test", f"u{i}@example.test", created, created)
                for i in range(count)
            ),
        )


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


def run(size: int, batch_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        settings = HostSettings(
            database_url=f"sqlite:///{db}", secret_key="benchmark secret key", plugins=[]
        )
        host = Host(settings, load_entry_points=False).open()
        try:
            body = {"manifest": MANIFEST, "script": SCRIPT}
            host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
            host.tenants.create("bench", "Bench")
            host.tenants.configure("bench", "bench", settings={})
            started = time.perf_counter()
            insert_contacts(db, size)
            setup_s = time.perf_counter() - started
            host.sandbox.wait_full()
            gc.collect()
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            owner = new_owner()
            draft = CampaignDraft(
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
            started = time.perf_counter()
            created = host.campaigns.create("bench", draft, claim_for=owner)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    print("| contacts | batches | wall s | contacts/s | host peak RSS MiB | worker peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        r = run(size, args.batch_size)
        print(
            f"| {r['contacts']:,} | {r['batches']:,} | {r['wall_s']:.1f} | {r['per_s']:,.0f} | "
            f"{r['host_peak_mib']:.0f} (before the send {r['host_peak_before_mib']:.0f}) | "
            f"{r['worker_peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
