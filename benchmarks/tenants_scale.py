"""Tenant scale: does webhook dispatch get slower when many tenants exist? The same traffic —
signed-free 10-event webhooks to the same 10 hot (tenant, module) pairs — goes to two hosts
opened side by side in this process: one whose database holds just those 10 tenants, one
holding ``--tenants`` (default 10,000), every tenant with 3 enabled modules and a few
contacts. Dispatch cost per webhook is measured in both, in alternating rounds (so a change in
the machine's load hits both), and the ratio printed. Target: within 10 %.

    .venv/bin/python benchmarks/tenants_scale.py                      # SQLite, 10 vs 10,000
    .venv/bin/python benchmarks/tenants_scale.py --database postgresql

``--database postgresql`` starts a throwaway cluster and stops it at the end;
``--database-url`` uses an existing server instead (``bench_databases.py``).

What is timed: a POST to the real HTTP app (``create_app``, in-process ASGI client) through
the token lookup, the module call, one transaction applying the actions (deliveries moved,
contacts changed), the stored request, the receipt and the invocation log. The parser runs
as a trusted in-process plugin, as in ``webhook_throughput.py``'s baseline: a sandboxed call
costs the same whatever the tenant count (its worker is per (tenant, module, version), the
pool is sized on its own), and its switches between the 10 hot tenants would only add noise.

How the tenants are made, fast but real: the 10 hot tenants and one cold "pattern" tenant go
through the platform's own services (``TenantService.create`` and ``configure``, so their
rows are what the API writes). Every other cold tenant is a copy of the pattern's rows with
its own id, its own API key hash (``new_api_key``), its own webhook token
(``new_webhook_token``) and its settings' secret sealed anew with the host's box, bulk-
inserted with SQLAlchemy Core (``executemany``) in batches; its contacts likewise. After the
copy, one copied tenant is read back through ``TenantService.enablement`` (settings decrypt)
and answers a webhook with 200, so the copies are tenants the host serves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_databases import add_options, databases, kind  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from host.api.app import create_app  # noqa: E402
from host.calls import ModuleResult  # noqa: E402
from host.config import HostSettings  # noqa: E402
from host.db.models import Campaign, Contact, Delivery, Enablement, Tenant  # noqa: E402
from host.hookspecs import hookimpl  # noqa: E402
from host.modules.packages import from_json_body  # noqa: E402
from host.platform import Host  # noqa: E402
from host.secrets import hash_api_key, new_api_key, new_webhook_token  # noqa: E402

MODULES = ("mail-a", "mail-b", "mail-c")
HOT = 10
RECIPIENTS = 200
EVENTS = 10
BATCH = 5_000
STATUSES = ("Delivered", "Opened", "Clicked", "SoftBounced", "Delivered", "Opened")

SCRIPT = """\
def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError  # served by the benchmark's in-process parser


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "x"}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    raise NotImplementedError
"""


def manifest(module_id: str) -> dict[str, Any]:
    return {
        "id": module_id,
        "name": module_id,
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "egress": [],
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "writeOnly": True},
                "region": {"type": "string"},
            },
            "required": ["api_key"],
        },
    }


class InProcessParser:
    """A trusted plugin answering ParseWebhookRequest in the host process: each event of the
    JSON body becomes one UpdateDeliveryStatus action."""

    @hookimpl
    def crm_marketing_parse_webhook_request(self, call: Any, request: dict[str, Any]) -> Any:
        actions = [
            {
                "type": "UpdateDeliveryStatus",
                "email": event["email"],
                "externalId": event["campaign"],
                "status": event["status"],
            }
            for event in json.loads(request["body"])
        ]
        return ModuleResult({"actions": actions, "response": {"status": 200, "body": {}}})


def hot_pairs() -> list[tuple[str, str]]:
    """The 10 hot (tenant, module) pairs: tenant i, and its module i mod 3."""
    return [(f"hot-{i:02d}", MODULES[i % len(MODULES)]) for i in range(HOT)]


def webhook_body(n: int) -> bytes:
    """The n-th webhook's 10 events (the same sequence for both hosts)."""
    return json.dumps(
        [
            {
                "email": f"p{(n * EVENTS + k) * 7919 % RECIPIENTS}@example.test",
                "campaign": "ext-spring",
                "status": STATUSES[(n + k) % len(STATUSES)],
            }
            for k in range(EVENTS)
        ]
    ).encode()


# --- the two hosts ----------------------------------------------------------------------------


def open_host(url: str, target_cache_s: float | None) -> Host:
    cache = {} if target_cache_s is None else {"webhook_target_cache_seconds": target_cache_s}
    settings = HostSettings(
        **cache,
        database_url=url,
        secret_key="benchmark secret key",
        plugins=[],
        public_url="http://127.0.0.1",
        sandbox_workers=1,
    )
    host = Host(
        settings, extra_plugins=[("inprocess_parser", InProcessParser())], load_entry_points=False
    ).open()
    for module_id in MODULES:
        body = {"manifest": manifest(module_id), "script": SCRIPT}
        host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    return host


def enable_through_services(host: Host, tenant_id: str) -> dict[str, str]:
    """A tenant made the way the API makes one; returns its webhook URL path per module."""
    host.tenants.create(tenant_id, tenant_id.title())
    paths = {}
    for module_id in MODULES:
        info = host.tenants.configure(
            tenant_id, module_id, settings={"api_key": f"key-{tenant_id}", "region": "eu"}
        )
        paths[module_id] = info.webhook_url.removeprefix("http://127.0.0.1")
    return paths


def add_hot_data(host: Host, tenant_id: str, module_id: str) -> None:
    """Contacts and a sent campaign whose deliveries the webhooks move."""
    with host.db.transaction() as session:
        session.execute(
            insert(Contact),
            [
                {
                    "tenant_id": tenant_id,
                    "id": f"c{i}",
                    "name": f"P{i}",
                    "email": f"p{i}@example.test",
                    "email_key": f"p{i}@example.test",
                }
                for i in range(RECIPIENTS)
            ],
        )
        session.add(
            Campaign(
                id=f"spring-{tenant_id}",
                tenant_id=tenant_id,
                module_id=module_id,
                module_version="1.0.0",
                type="Email",
                name="Spring",
                status="Sending",
                stage="done",
                external_id="ext-spring",
            )
        )
        session.flush()
        session.execute(
            insert(Delivery),
            [
                {
                    "campaign_id": f"spring-{tenant_id}",
                    "contact_id": f"c{i}",
                    "email_key": f"p{i}@example.test",
                    "status": "Sent",
                    "history": [],
                }
                for i in range(RECIPIENTS)
            ],
        )


def copy_cold_tenants(host: Host, pattern: str, count: int, contacts: int) -> None:
    """``count`` tenants copied from ``pattern``'s rows (see the module docstring)."""
    columns = [c.key for c in Enablement.__table__.columns]
    with host.db.transaction() as session:
        tenant_row = session.get(Tenant, pattern)
        assert tenant_row is not None
        rows = session.scalars(select(Enablement).where(Enablement.tenant_id == pattern)).all()
        template = [{c: getattr(row, c) for c in columns} for row in rows]
        created_at = tenant_row.created_at
    for start in range(0, count, BATCH):
        ids = [f"cold-{n:06d}" for n in range(start, min(count, start + BATCH))]
        tenants = [
            {
                "id": t,
                "name": t.title(),
                "api_key_hash": hash_api_key(new_api_key()),
                "created_at": created_at,
            }
            for t in ids
        ]
        enablements = [
            {
                **row,
                "tenant_id": t,
                "webhook_token": new_webhook_token(),
                "secrets_encrypted": host.box.seal({"api_key": f"key-{t}"}),
            }
            for t in ids
            for row in template
        ]
        people = [
            {
                "tenant_id": t,
                "id": f"c{i}",
                "name": f"P{i}",
                "email": f"p{i}@{t}.test",
                "email_key": f"p{i}@{t}.test",
            }
            for t in ids
            for i in range(contacts)
        ]
        with host.db.transaction() as session:
            session.execute(insert(Tenant), tenants)
            session.execute(insert(Enablement), enablements)
            if people:
                session.execute(insert(Contact), people)


@dataclass
class Setup:
    host: Host
    client: TestClient
    paths: list[str]
    tenants: int
    setup_s: float


def build(args: argparse.Namespace, url: str, tenants: int, stack: ExitStack) -> Setup:
    started = time.perf_counter()
    host = open_host(url, args.target_cache_seconds)
    stack.callback(host.close)
    paths = []
    for tenant_id, module_id in hot_pairs():
        paths.append(enable_through_services(host, tenant_id)[module_id])
        add_hot_data(host, tenant_id, module_id)
    cold = tenants - HOT
    if cold > 0:
        enable_through_services(host, "cold-pattern")
        copy_cold_tenants(host, "cold-pattern", cold - 1, args.cold_contacts)
        check_copies_are_real(host)
    client = stack.enter_context(TestClient(create_app(host)))
    with host.db.transaction() as session:
        counted = session.query(Tenant).count()
    assert counted == max(tenants, HOT), counted
    if cold > 1:
        answer = client.post(copied_url(host, "cold-000000", MODULES[0]), content=b"[]")
        assert answer.status_code == 200, answer.text
    return Setup(host, client, paths, counted, time.perf_counter() - started)


def check_copies_are_real(host: Host) -> None:
    """A copied tenant's enablement reads back through the service, its own secret
    decrypted with the host's key."""
    with host.db.transaction() as session:
        some = session.scalar(select(Tenant.id).where(Tenant.id.like("cold-0%")).limit(1))
    if some is None:
        return
    info = host.tenants.enablement(some, MODULES[1])
    assert info.enabled and info.version == "1.0.0", info
    runtime = host.tenants.runtime(some, MODULES[1])
    assert runtime.settings == {"api_key": f"key-{some}", "region": "eu"}, some


def copied_url(host: Host, tenant_id: str, module_id: str) -> str:
    return host.tenants.enablement(tenant_id, module_id).webhook_url.removeprefix(
        "http://127.0.0.1"
    )


# --- the traffic ------------------------------------------------------------------------------


def send_round(setup: Setup, first: int, count: int) -> tuple[float, float]:
    """``count`` webhooks round-robin over the hot pairs: (wall ms, host CPU ms) per webhook."""
    wall = time.perf_counter()
    cpu = time.process_time()
    for n in range(first, first + count):
        path = setup.paths[n % len(setup.paths)]
        answer = setup.client.post(path, content=webhook_body(n))
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text}")
    return (
        (time.perf_counter() - wall) * 1000 / count,
        (time.process_time() - cpu) * 1000 / count,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants of the large run")
    parser.add_argument("--cold-contacts", type=int, default=5, help="contacts per cold tenant")
    parser.add_argument("--webhooks", type=int, default=200, help="webhooks per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm-up", type=int, default=50, help="webhooks before the rounds")
    parser.add_argument(
        "--target-cache-seconds",
        type=float,
        help="CRM_HOST_WEBHOOK_TARGET_CACHE_SECONDS of both hosts (0: read every webhook's "
        "target from the database); default: the host's default",
    )
    args = parser.parse_args()
    if args.tenants < HOT:
        parser.error(f"--tenants must be at least {HOT} (the hot tenants)")

    with tempfile.TemporaryDirectory(prefix="crm-bench-tenants-") as tmp, ExitStack() as stack:
        small_url, large_url = stack.enter_context(databases(args, Path(tmp), 2))
        small = build(args, small_url, HOT, stack)
        large = build(args, large_url, args.tenants, stack)
        print(
            f"{kind(args)}: setup {small.tenants:,} tenants {small.setup_s:.1f} s, "
            f"{large.tenants:,} tenants {large.setup_s:.1f} s "
            f"({len(MODULES)} modules each, {args.cold_contacts} contacts per cold tenant; "
            f"target cache {small.host.settings.webhook_target_cache_seconds:g} s)",
            flush=True,
        )
        for setup in (small, large):
            send_round(setup, 0, args.warm_up)
        samples: dict[str, list[tuple[float, float]]] = {"small": [], "large": []}
        first = args.warm_up
        for index in range(args.rounds):
            # alternate which host goes first, so neither always follows the other's writes
            order = [("small", small), ("large", large)]
            for name, setup in order if index % 2 == 0 else reversed(order):
                samples[name].append(send_round(setup, first, args.webhooks))
            first += args.webhooks

    print(f"{args.rounds} rounds of {args.webhooks} webhooks ({EVENTS} events) per host")
    print("| tenants | wall ms/webhook (min / median) | host CPU ms/webhook (min / median) |")
    print("|---:|---:|---:|")
    medians = {}
    for name, setup in (("small", small), ("large", large)):
        walls = [w for w, _ in samples[name]]
        cpus = [c for _, c in samples[name]]
        medians[name] = (statistics.median(walls), statistics.median(cpus))
        print(
            f"| {setup.tenants:,} | {min(walls):.2f} / {medians[name][0]:.2f} | "
            f"{min(cpus):.2f} / {medians[name][1]:.2f} |"
        )
    wall_ratio = medians["large"][0] / medians["small"][0]
    cpu_ratio = medians["large"][1] / medians["small"][1]
    verdict = "met" if wall_ratio <= 1.10 else "MISSED"
    print(
        f"{large.tenants:,} / {small.tenants:,} tenants: wall x{wall_ratio:.3f}, "
        f"CPU x{cpu_ratio:.3f} (target: within 10 %: {verdict})"
    )


if __name__ == "__main__":
    main()
