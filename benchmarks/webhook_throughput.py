"""Webhook throughput: realistic 10-event webhooks POSTed by concurrent clients to a real
server, with the module sandboxed (``crm-host serve``) and, as the baseline, the same parser
served by a trusted in-process plugin (no sandbox) in an otherwise identical server.

Both servers do the same host work per request (token lookup, invocation log row, one
transaction applying 10 actions plus a receipt); only who runs the parser differs, so the
ratio is the cost of the sandbox on the webhook path.

    .venv/bin/python benchmarks/webhook_throughput.py --clients 8 --seconds 10

Everything listens on 127.0.0.1 on free ports and is stopped at the end.
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
EVENTS_PER_WEBHOOK = 10

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


# --- harness ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(kind: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
    env.update(
        CRM_HOST_DATABASE_URL=f"sqlite:///{workdir / 'host.db'}",
        CRM_HOST_ADMIN_TOKEN=ADMIN,
        CRM_HOST_PLUGINS="",
        CRM_HOST_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    if kind == "sandboxed":
        command = [str(CRM_HOST), "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, __file__, "--serve-baseline", str(port)]
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


def prepare(url: str, workdir: Path) -> str:
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
    db = Database(f"sqlite:///{workdir / 'host.db'}")
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


def webhook_bodies(count: int, seed: int = 7) -> list[tuple[bytes, str]]:
    """``count`` signed 10-event batches, the same sequence for both servers."""
    rng = random.Random(seed)
    bodies = []
    for n in range(count):
        events = []
        for k in range(EVENTS_PER_WEBHOOK):
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


def measure(kind: str, args: argparse.Namespace) -> Figures:
    with (
        tempfile.TemporaryDirectory(prefix=f"crm-bench-{kind}-") as tmp,
        server(kind, Path(tmp)) as url,
    ):
        hook = prepare(url, Path(tmp))
        warm = webhook_bodies(args.clients * 4, seed=1)
        asyncio.run(load(hook, warm, args.clients, 30))
        return asyncio.run(
            load(hook, webhook_bodies(args.max_requests), args.clients, args.seconds)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    results = {kind: measure(kind, args) for kind in ("baseline", "sandboxed")}
    print(f"{args.clients} clients, {args.seconds:g} s each, {EVENTS_PER_WEBHOOK} events/webhook")
    print(
        f"{'server':<10} {'requests':>8} {'errors':>6} {'req/s':>8} {'events/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for kind, figures in results.items():
        print(
            f"{kind:<10} {figures.requests:>8} {figures.errors:>6} {figures.rps:>8.1f} "
            f"{figures.rps * EVENTS_PER_WEBHOOK:>9.1f} {figures.percentile(50):>8.1f} "
            f"{figures.percentile(99):>8.1f}"
        )
    ratio = results["sandboxed"].rps / results["baseline"].rps
    print(f"sandboxed / baseline throughput: {ratio:.0%} (target >= 60%)")
    print(
        f"median latency: {statistics.median(results['sandboxed'].latencies_ms):.1f} ms sandboxed"
    )


if __name__ == "__main__":
    main()
