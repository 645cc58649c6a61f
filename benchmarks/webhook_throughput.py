"""Webhook throughput: realistic SendGrid-style webhooks (10 and 100 events) POSTed by
concurrent clients to three real servers, one after the other, driven by the same client:

* **floor**: a bare Starlette app that reads the body, checks the signature and, in ONE
  SQLite transaction, stores the raw request, applies the same status updates and writes a
  receipt: what any server doing this work must pay;
* **baseline** (in-process): the host's app with the parser served by a trusted in-process
  plugin (no sandbox);
* **sandboxed**: ``crm-host serve`` running the module in the sandbox pool.

The baseline and sandboxed servers do the same host work per request; only who runs the
parser differs. Ratios to the floor are the host's own cost; sandboxed / in-process is the
sandbox's.

    .venv/bin/python benchmarks/webhook_throughput.py --clients 8 --seconds 10
    .venv/bin/python benchmarks/webhook_throughput.py --database-url postgresql+psycopg://...

With ``--database-url`` (a PostgreSQL server whose user may create databases) every server,
the floor included, gets a fresh database of its own on that server, dropped at the end; the
floor then runs the same statements through psycopg. Everything listens on 127.0.0.1 on free
ports and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host.calls import ModuleResult  # noqa: E402
from host.hookspecs import hookimpl  # noqa: E402

CRM_HOST = Path(sys.executable).with_name("crm-host")
SECRET = "whsec-benchmark-0123456789"
ADMIN = "benchmark-admin-token-0123456789"
RECIPIENTS = 1000

PARSER = """\
import json
import hmac
import hashlib

STATUS = {
    "processed": "Sent", "delivered": "Delivered", "open": "Opened", "click": "Clicked",
    "deferred": "SoftBounced", "bounce": "Bounced", "dropped": "Failed",
    "spamreport": "Complained", "unsubscribe": "Unsubscribed",
}


def CRM_Marketing_ParseWebhookRequest(request):
    raw = request["body"].encode(request["headers"]["x-crm-host-body-encoding"])
    expected = hmac.new(settings["webhook_secret"].encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request["headers"].get("x-signature", "")):
        return {"response": {"status": 401, "body": {"error": "bad signature"}}}
    actions = []
    for event in json.loads(request["body"]):
        kind = event["event"]
        if kind in STATUS:
            actions.append({"type": "UpdateDeliveryStatus", "email": event["email"],
                            "externalId": event["sg_campaign_id"], "status": STATUS[kind]})
        if kind == "unsubscribe":
            actions.append({"type": "Unsubscribe", "email": event["email"],
                            "externalId": {"all": True}})
    return {"actions": actions, "response": {"status": 200, "body": {"received": len(actions)}}}
"""

MODULE_SCRIPT = (
    PARSER
    + """

def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "sg-" + request["campaignId"]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    raise NotImplementedError
"""
)

MANIFEST = {
    "id": "sgmail",
    "name": "SG Mail",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "description": "benchmark webhook parser",
    "egress": ["api.sendgrid.test"],
    "settings": {
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True},
            "webhook_secret": {"type": "string", "writeOnly": True},
        },
        "required": ["api_key", "webhook_secret"],
    },
}


# --- the baseline server: same host, parser served in-process -------------------------------


class InProcessParser:
    """A trusted plugin serving ParseWebhookRequest with the module's own parser code, run as
    plain Python in the server process (fresh globals per call, as in the sandbox)."""

    def __init__(self) -> None:
        self.code = compile(PARSER, "parser.py", "exec")

    @hookimpl
    def crm_marketing_parse_webhook_request(self, call: Any, request: dict[str, Any]) -> Any:
        scope: dict[str, Any] = {"settings": call.settings}
        exec(self.code, scope)
        return ModuleResult(scope["CRM_Marketing_ParseWebhookRequest"](request))


def serve_baseline(port: int) -> None:
    import uvicorn

    from host.api.app import create_app
    from host.config import HostSettings
    from host.platform import Host

    host = Host(HostSettings(), extra_plugins=[("inprocess_parser", InProcessParser())])
    try:
        uvicorn.run(create_app(host), host="127.0.0.1", port=port, log_level="warning")
    finally:
        host.close()


# --- the floor: a bare Starlette app doing the same database work in one transaction ------

FLOOR_SCHEMA = """
CREATE TABLE contacts (tenant_id TEXT, id TEXT, email_key TEXT, status TEXT,
                       soft_bounces INTEGER DEFAULT 0, PRIMARY KEY (tenant_id, id));
CREATE INDEX ix_contacts_email ON contacts (tenant_id, email_key);
CREATE TABLE deliveries (campaign_id TEXT, contact_id TEXT, email_key TEXT, status TEXT,
                         history TEXT, PRIMARY KEY (campaign_id, contact_id));
CREATE INDEX ix_deliveries_email ON deliveries (campaign_id, email_key);
CREATE TABLE requests (id INTEGER PRIMARY KEY, tenant_id TEXT, module_id TEXT, headers TEXT,
                       body BLOB, received_at TEXT);
CREATE TABLE receipts (id INTEGER PRIMARY KEY, tenant_id TEXT, module_id TEXT, status INTEGER,
                       applied INTEGER, skipped TEXT, request_id INTEGER, received_at TEXT);
"""

FLOOR_SCHEMA_POSTGRES = """
CREATE TABLE contacts (tenant_id TEXT, id TEXT, email_key TEXT, status TEXT,
                       soft_bounces INTEGER DEFAULT 0, PRIMARY KEY (tenant_id, id));
CREATE INDEX ix_contacts_email ON contacts (tenant_id, email_key);
CREATE TABLE deliveries (campaign_id TEXT, contact_id TEXT, email_key TEXT, status TEXT,
                         history JSONB, PRIMARY KEY (campaign_id, contact_id));
CREATE INDEX ix_deliveries_email ON deliveries (campaign_id, email_key);
CREATE TABLE requests (id BIGSERIAL PRIMARY KEY, tenant_id TEXT, module_id TEXT,
                       headers TEXT, body BYTEA, received_at TEXT);
CREATE TABLE receipts (id BIGSERIAL PRIMARY KEY, tenant_id TEXT, module_id TEXT,
                       status INTEGER, applied INTEGER, skipped TEXT, request_id BIGINT,
                       received_at TEXT);
"""

FLOOR_STATUS = {
    "processed": "Sent", "delivered": "Delivered", "open": "Opened", "click": "Clicked",
    "deferred": "SoftBounced", "bounce": "Bounced", "dropped": "Failed",
    "spamreport": "Complained", "unsubscribe": "Unsubscribed",
}  # fmt: skip
FLOOR_RANK = {
    "Pending": 0, "Sent": 1, "SoftBounced": 2, "Delivered": 3, "Opened": 4, "Clicked": 5,
    "Failed": 6, "Bounced": 6, "Unsubscribed": 7, "Complained": 8,
}  # fmt: skip
RANK_SQL = "CASE status " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in FLOOR_RANK.items()) + " END"


@dataclass(frozen=True)
class FloorSQL:
    """What differs between the floor's two databases: connecting, opening the write
    transaction, parameter style, appending to a JSON array, and the new row's id."""

    connect: Any
    begin: str
    history_append: str
    insert_request: str
    placeholder: str = "?"

    def sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)


def floor_sql(url: str) -> FloorSQL:
    if url.startswith("sqlite"):
        import sqlite3

        def connect_sqlite() -> Any:
            db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db

        return FloorSQL(
            connect_sqlite,
            "BEGIN IMMEDIATE",
            "json_insert(history, '$[#]', json(?))",
            "INSERT INTO requests (tenant_id, module_id, headers, body, received_at) "
            "VALUES ('acme', 'sgmail', ?, ?, ?)",
        )
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    return FloorSQL(
        lambda: psycopg.connect(dsn, autocommit=True),
        "BEGIN",
        "history || jsonb_build_array(?::jsonb)",
        "INSERT INTO requests (tenant_id, module_id, headers, body, received_at) "
        "VALUES ('acme', 'sgmail', ?, ?, ?) RETURNING id",
        "%s",
    )


def floor_app(url: str) -> Any:
    """The floor: reads the body, checks the signature, and in ONE transaction (``BEGIN
    IMMEDIATE`` on SQLite) stores the raw request, moves each delivery forward (a
    conditional UPDATE by rank), unsubscribes contacts, and writes a receipt. No ORM, no
    plugins, no sandbox, no invocation log: what any server doing this work must pay."""
    import threading
    from datetime import UTC, datetime

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    local = threading.local()
    dialect = floor_sql(url)
    move = dialect.sql(
        f"UPDATE deliveries SET status = ?, history = {dialect.history_append} "
        f"WHERE campaign_id = 'spring' AND email_key = ? AND {RANK_SQL} < ?"
    )
    suppress = dialect.sql(
        "UPDATE contacts SET status = ? WHERE tenant_id = 'acme' AND "
        "email_key = ? AND status = 'Subscribed'"
    )
    store = dialect.sql(dialect.insert_request)
    receipt = dialect.sql(
        "INSERT INTO receipts (tenant_id, module_id, status, applied, skipped, "
        "request_id, received_at) VALUES ('acme', 'sgmail', 200, ?, '[]', ?, ?)"
    )

    def connection() -> Any:
        if not hasattr(local, "db"):
            local.db = dialect.connect()
        return local.db

    def apply(body: bytes, headers: list[tuple[str, str]]) -> tuple[int, int]:
        events = json.loads(body)
        now = datetime.now(UTC).isoformat()
        db = connection()
        applied = skipped = 0
        db.execute(dialect.begin)
        try:
            stored = db.execute(store, (json.dumps(headers), body, now))
            request_id = stored.lastrowid if dialect.placeholder == "?" else stored.fetchone()[0]
            # rows in a fixed order, as the host locks them: no deadlock between batches
            for event in sorted(events, key=lambda event: event["email"]):
                status = FLOOR_STATUS.get(event["event"])
                if status is None:
                    skipped += 1
                    continue
                entry = json.dumps({"status": status, "at": now})
                moved = db.execute(
                    move, (status, entry, event["email"], FLOOR_RANK[status])
                ).rowcount
                if status in ("Unsubscribed", "Bounced", "Complained"):
                    db.execute(suppress, (status, event["email"]))
                applied += 1 if moved else 0
                skipped += 0 if moved else 1
            db.execute(receipt, (applied, request_id, now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return applied, skipped

    def receive(request: Request, body: bytes) -> Response:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-signature", "")):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        applied, _ = apply(body, headers)
        return JSONResponse({"received": applied})

    async def hook(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = await request.body()
        return await run_in_threadpool(receive, request, body)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/hooks/floor", hook, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def prepare_floor(url: str) -> None:
    """The floor's tables with the same contacts, campaign recipients and statuses."""
    dialect = floor_sql(url)
    db = dialect.connect()
    try:
        db.execute("BEGIN")
        schema = FLOOR_SCHEMA if dialect.placeholder == "?" else FLOOR_SCHEMA_POSTGRES
        for statement in filter(str.strip, schema.split(";")):
            db.execute(statement)
        cursor = db.cursor()
        cursor.executemany(
            dialect.sql("INSERT INTO contacts VALUES ('acme', ?, ?, 'Subscribed', 0)"),
            [(f"c{i}", f"p{i}@example.test") for i in range(RECIPIENTS)],
        )
        cursor.executemany(
            dialect.sql("INSERT INTO deliveries VALUES ('spring', ?, ?, 'Sent', '[]')"),
            [(f"c{i}", f"p{i}@example.test") for i in range(RECIPIENTS)],
        )
        db.execute("COMMIT")
    finally:
        db.close()


def serve_floor(port: int) -> None:
    import uvicorn

    url = os.environ["CRM_HOST_DATABASE_URL"]
    uvicorn.run(floor_app(url), host="127.0.0.1", port=port, log_level="warning")


# --- harness ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def database(kind: str, workdir: Path, server_url: str | None) -> Iterator[str]:
    """A fresh database for one server: a SQLite file in ``workdir``, or a database of its
    own on the PostgreSQL server of ``server_url``, dropped afterwards."""
    if server_url is None:
        yield f"sqlite:///{workdir / 'host.db'}"
        return
    import psycopg
    from sqlalchemy import make_url

    name = f"crm_bench_{kind}_{os.getpid()}"
    server = make_url(server_url)
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def server(kind: str, workdir: Path, database_url: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
    env.update(
        CRM_HOST_DATABASE_URL=database_url,
        CRM_HOST_ADMIN_TOKEN=ADMIN,
        CRM_HOST_PLUGINS="",
        CRM_HOST_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    if not database_url.startswith("sqlite"):  # no key file beside a database file
        from cryptography.fernet import Fernet

        env["CRM_HOST_SECRET_KEY"] = Fernet.generate_key().decode()
    if kind == "sandboxed":
        command = [str(CRM_HOST), "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, __file__, f"--serve-{kind}", str(port)]
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "serve.log").read_text(errors="replace"))
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def prepare(url: str, database_url: str) -> str:
    """Module, tenant, contacts, campaign with deliveries; returns the webhook URL."""
    from host.db.engine import Database
    from host.db.models import Campaign, Contact, Delivery

    headers = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as admin:
        admin.post(
            "/api/v1/modules", json={"manifest": MANIFEST, "script": MODULE_SCRIPT}
        ).raise_for_status()
        admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).raise_for_status()
        enabled = admin.put(
            "/api/v1/tenants/acme/modules/sgmail",
            json={"settings": {"api_key": "SG.key", "webhook_secret": SECRET}},
        )
        enabled.raise_for_status()
    db = Database(database_url)
    with db.transaction() as session:
        session.add_all(
            Contact(
                tenant_id="acme",
                id=f"c{i}",
                name=f"P{i}",
                email=f"p{i}@example.test",
                email_key=f"p{i}@example.test",
            )
            for i in range(RECIPIENTS)
        )
        session.add(
            Campaign(
                id="spring",
                tenant_id="acme",
                module_id="sgmail",
                module_version="1.0.0",
                type="Email",
                name="Spring",
                status="Sending",
                stage="done",  # sent by the send job; the webhook tracks it
                external_id="sg-spring",
            )
        )
        session.flush()
        session.add_all(
            Delivery(
                campaign_id="spring",
                contact_id=f"c{i}",
                email_key=f"p{i}@example.test",
                status="Sent",
                history=[],
            )
            for i in range(RECIPIENTS)
        )
    db.dispose()
    return str(enabled.json()["webhookUrl"])


KINDS = ["delivered"] * 5 + ["open"] * 3 + ["click", "bounce", "unsubscribe", "deferred"]


def webhook_bodies(
    count: int, seed: int = 7, events_per_webhook: int = 10
) -> list[tuple[bytes, str]]:
    """``count`` signed batches of ``events_per_webhook`` events, the same sequence for
    every server."""
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        events = []
        for k in range(events_per_webhook):
            i = rng.randrange(RECIPIENTS)
            events.append(
                {
                    "email": f"p{i}@example.test",
                    "event": rng.choice(KINDS),
                    "sg_campaign_id": "sg-spring",
                    "sg_event_id": f"ev-{n}-{k}",
                    "sg_message_id": f"msg-{i}.filter0001",
                    "timestamp": 1767225600 + n,
                    "useragent": "Mozilla/5.0 (benchmark)",
                    "ip": "203.0.113.7",
                }
            )
        body = json.dumps(events).encode()
        bodies.append((body, hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()))
    return bodies


@dataclass
class Figures:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def load(url: str, bodies: list[tuple[bytes, str]], clients: int, seconds: float) -> Figures:
    latencies: list[float] = []
    errors = 0
    cursor = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal cursor, errors
        while time.perf_counter() < deadline and cursor < len(bodies):
            body, signature = bodies[cursor]
            cursor += 1
            started = time.perf_counter()
            answer = await http.post(url, content=body, headers={"x-signature": signature})
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200:
                errors += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return Figures(len(latencies), errors, time.perf_counter() - started, latencies)


def measure(kind: str, args: argparse.Namespace) -> dict[int, Figures]:
    """One server of ``kind``, loaded with each webhook size in turn (the same sequence of
    sizes and bodies for every kind, so every server starts each size in the same state)."""
    with (
        tempfile.TemporaryDirectory(prefix=f"crm-bench-{kind}-") as tmp,
        database(kind, Path(tmp), args.database_url) as database_url,
    ):
        if kind == "floor":
            prepare_floor(database_url)
        with server(kind, Path(tmp), database_url) as url:
            hook = url + "/hooks/floor" if kind == "floor" else prepare(url, database_url)
            return {size: run_size(hook, size, args) for size in args.events}


def run_size(hook: str, size: int, args: argparse.Namespace) -> Figures:
    """A short warm-up, then the measured load of ``size``-event webhooks."""
    warm = webhook_bodies(args.clients * 4, seed=1, events_per_webhook=size)
    asyncio.run(load(hook, warm, args.clients, 30))
    bodies = webhook_bodies(args.max_requests, events_per_webhook=size)
    return asyncio.run(load(hook, bodies, args.clients, args.seconds))


KINDS_OF_SERVER = ("floor", "baseline", "sandboxed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument(
        "--events", type=int, nargs="+", default=[10, 100], help="events per webhook"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (postgresql+psycopg://user@host/db); default: SQLite files",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of all three servers; min/median ratios"
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    backend = "PostgreSQL" if args.database_url else "SQLite"
    ratios: dict[tuple[int, str], list[float]] = {}
    for run in range(1, args.repeat + 1):
        results = {kind: measure(kind, args) for kind in KINDS_OF_SERVER}
        print(
            f"run {run}/{args.repeat}: {backend}, {args.clients} clients, "
            f"{args.seconds:g} s per server and webhook size"
        )
        report(results, args.events)
        for size in args.events:
            floor = results["floor"][size].rps
            for kind in ("sandboxed", "baseline"):
                ratios.setdefault((size, kind), []).append(results[kind][size].rps / floor)
    if args.repeat > 1:
        print(f"ratios to the floor over {args.repeat} runs (min / median):")
        for (size, kind), values in ratios.items():
            name = "in-process" if kind == "baseline" else kind
            print(
                f"{size:>3} events/webhook: {name} / floor "
                f"{min(values):.0%} / {statistics.median(values):.0%}"
            )


def report(results: dict[str, dict[int, Figures]], sizes: list[int]) -> None:
    """One run's table and its ratios (measured in that run: the machine's load moves)."""
    print(
        f"{'server':<10} {'events':>6} {'requests':>8} {'errors':>6} {'req/s':>8} "
        f"{'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for size in sizes:
        for kind in KINDS_OF_SERVER:
            figures = results[kind][size]
            print(
                f"{kind:<10} {size:>6} {figures.requests:>8} {figures.errors:>6} "
                f"{figures.rps:>8.1f} {figures.rps * size:>9.1f} {figures.percentile(50):>8.1f} "
                f"{figures.percentile(99):>8.1f}"
            )
    for size in sizes:
        floor = results["floor"][size].rps
        sandboxed = results["sandboxed"][size].rps
        in_process = results["baseline"][size].rps
        print(
            f"{size:>3} events/webhook: sandboxed / floor {sandboxed / floor:.0%} (target >= 50%), "
            f"in-process / floor {in_process / floor:.0%}, "
            f"sandboxed / in-process {sandboxed / in_process:.0%}"
        )


if __name__ == "__main__":
    main()
