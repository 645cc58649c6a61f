"""A campaign job whose batch calls meet the provider's rate limit, through a real sandboxed
module that fetches from a local service answering 429: it waits (the progress says until
when) and calls the same batch again, gives up past the total bound with a rate_limited
error, and a cancel or stop request ends the wait. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from host.api.app import create_app
from host.db.models import Campaign, Delivery, Invocation
from host.marketing.campaign_job import CampaignProgress, utcnow
from host.marketing.campaigns import CampaignDraft
from host.marketing.contact_rows import ContactRow
from host.marketing.job_runner import new_owner
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, SECRET_KEY, email_manifest, make_host
from tests.host.console_client import signed_in_admin
from tests.host.test_job_engine import wait_until
from tests.sandbox.http_servers import LocalHTTPServer, RequestHandler

SCRIPT = """\
def record(key, value):
    storage.set(key, (storage.get(key) or []) + [value])


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    answer = fetch(settings["base_url"] + "/batch", method="PUT", json={"emails": contacts})
    if answer.status == 429 and settings.get("tolerate_429"):
        record("tolerated", len(contacts))  # handled here: the batch is left to the service
        return None
    if not answer.ok:
        raise RuntimeError("the service answered HTTP " + str(answer.status))
    record("prepare", len(contacts))


def CRM_Marketing_CreateCampaign(request):
    answer = fetch(settings["base_url"] + "/create", method="POST", json={})
    if not answer.ok:
        raise RuntimeError("the service answered HTTP " + str(answer.status))
    return {"externalId": "ext-" + request["campaignId"][:8]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""

SETTINGS_SCHEMA = {
    "type": "object",
    "properties": {"base_url": {"type": "string"}, "tolerate_429": {"type": "boolean"}},
}
CONTACTS = 30
BATCH = 10
ADMIN = f"Bearer {ADMIN_TOKEN}"


@dataclass
class Service:
    """The provider: answers the next scripted statuses (429 with headers) per path, then
    200; keeps the emails of every batch it accepted."""

    server: LocalHTTPServer
    plan: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    accepted: list[list[str]] = field(default_factory=list)
    throttled: list[str] = field(default_factory=list)

    def throttle(self, path: str, times: int, **headers: str) -> None:
        self.plan[path] = [headers] * times

    def answer(self, req: RequestHandler) -> None:
        path = req.path.split("?")[0]
        queued = self.plan.get(path)
        if queued:
            self.throttled.append(path)
            req.reply(429, b'{"errors": [{"message": "too many requests"}]}', queued.pop(0))
            return
        if path == "/batch":
            self.accepted.append(json.loads(req.body)["emails"])
        req.reply(200, b"{}", {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with LocalHTTPServer() as server:
        provider = Service(server)
        server.route("/batch")(provider.answer)
        server.route("/create")(provider.answer)
        yield provider


@pytest.fixture
def provider(service: Service) -> Service:
    service.plan.clear()
    service.accepted.clear()
    service.throttled.clear()
    return service


def open_host(db_path: Path, pool: SandboxPool, service: Service, **settings: Any) -> Host:
    host = make_host(db_path, sandbox=pool, egress_allow=["127.0.0.1"], **settings)
    manifest = email_manifest(
        id="limited",
        egress=[f"127.0.0.1:{service.server.port}"],
        settings=SETTINGS_SCHEMA,
        idempotent={"CRM_Marketing_CreateCampaign": True},
    )
    host.registry.upload(
        from_json_body({"manifest": manifest, "script": SCRIPT}, max_script_bytes=64 * 1024)
    )
    host.tenants.create("acme", "Acme")
    host.tenants.configure("acme", "limited", settings={"base_url": service.server.url("")})
    host.contacts.upsert(
        "acme",
        [
            ContactRow(f"rows[{i}]", f"C {i}", id=f"c{i:03d}", email=f"u{i}@example.test")
            for i in range(CONTACTS)
        ],
    )
    return host


@pytest.fixture
def host(db_path: Path, pool: SandboxPool, provider: Service) -> Iterator[Host]:
    instance = open_host(db_path, pool, provider)
    yield instance
    instance.close()


def queue(host: Host) -> str:
    draft = CampaignDraft(
        module="limited",
        name="Spring",
        type="Email",
        subject="Hello",
        senderName="Acme",
        senderEmail="news@acme.test",
        html="<p>Hi</p>",
        contactIds="all",
        batchSize=BATCH,
    )
    return host.campaigns.create("acme", draft).id


def run(host: Host, campaign_id: str, **kwargs: Any) -> str:
    owner = new_owner()
    assert host.campaign_runner.claim(campaign_id, owner=owner) == campaign_id
    return str(host.campaign_runner.run(campaign_id, owner=owner, **kwargs))


def row(host: Host, campaign_id: str) -> Campaign:
    with host.db.transaction() as session:
        found = session.get(Campaign, campaign_id)
        assert found is not None
        return found


def deliveries(host: Host, campaign_id: str) -> list[str]:
    with host.db.transaction() as session:
        query = select(Delivery.contact_id).where(Delivery.campaign_id == campaign_id)
        return sorted(session.scalars(query))


def prepare_outcomes(host: Host) -> list[tuple[str, list[Any]]]:
    with host.db.transaction() as session:
        rows = session.execute(
            select(Invocation.outcome, Invocation.fetches)
            .where(Invocation.function == "CRM_Marketing_PrepareCampaign")
            .order_by(Invocation.id)
        )
        return [(outcome, list(fetches or [])) for outcome, fetches in rows]


EVERYONE = sorted(f"u{i}@example.test" for i in range(CONTACTS))


def test_a_throttled_batch_waits_and_is_prepared_once(host: Host, provider: Service) -> None:
    provider.throttle("/batch", 2, **{"Retry-After": "1", "X-RateLimit-Remaining": "0"})
    campaign_id = queue(host)
    seen: list[CampaignProgress] = []
    assert run(host, campaign_id, on_progress=seen.append) == "done"

    shown = row(host, campaign_id)
    assert (shown.status, shown.batches_done, shown.prepared) == ("Sending", 3, CONTACTS)
    assert shown.rate_limited_until is None and shown.rate_limit_waited_s == 2.0
    # the service accepted every batch once, and every recipient has one delivery
    assert sorted(e for batch in provider.accepted for e in batch) == EVERYONE
    assert len(deliveries(host, campaign_id)) == CONTACTS
    assert provider.throttled == ["/batch", "/batch"]
    # while it waited the progress said until when, on the batch that was throttled
    waiting = [p for p in seen if p.rate_limited_until is not None]
    assert [p.batches for p in waiting] == [0, 0]
    assert seen[-1].rate_limited_until is None
    # the invocation log shows the throttled calls with the service's headers
    outcomes = prepare_outcomes(host)
    assert [o for o, _ in outcomes] == ["script_error", "script_error", "ok", "ok", "ok"]
    assert outcomes[0][1][0]["status"] == 429
    assert outcomes[0][1][0]["rate_limit"] == {"retry-after": "1", "x-ratelimit-remaining": "0"}


def test_past_the_total_bound_the_campaign_fails_naming_the_rate_limit(
    db_path: Path, pool: SandboxPool, provider: Service
) -> None:
    host = open_host(
        db_path, pool, provider, campaign_rate_limit_max_total_seconds=5
    )  # the service asks for a minute at once: more than the campaign may wait in all
    try:
        provider.throttle("/batch", 1, **{"Retry-After": "60"})
        campaign_id = queue(host)
        assert run(host, campaign_id) == "failed"
        shown = row(host, campaign_id)
        assert shown.status == "Failed" and shown.external_id is None
        assert shown.error is not None and shown.error.startswith("rate_limited: 127.0.0.1")
        assert "429 Too Many Requests" in shown.error and "at most 5 s in total" in shown.error
        assert "the service answered HTTP 429" in shown.error  # the module's own error
        assert shown.rate_limit_waited_s == 0 and shown.rate_limited_until is None
        assert deliveries(host, campaign_id) == [] and provider.accepted == []
    finally:
        host.close()


def test_a_cancel_request_ends_the_wait(host: Host, provider: Service) -> None:
    provider.throttle("/batch", 1, **{"Retry-After": "120"})
    campaign_id = queue(host)

    def cancel_while_waiting(progress: CampaignProgress) -> None:
        if progress.rate_limited_until is not None:
            host.campaigns.cancel("acme", campaign_id)

    ended: list[str] = []
    job = threading.Thread(
        target=lambda: ended.append(run(host, campaign_id, on_progress=cancel_while_waiting))
    )
    job.start()
    job.join(60)  # liveness only: the service asked for 120 s
    assert not job.is_alive() and ended == ["cancelled"]
    shown = row(host, campaign_id)
    assert (shown.status, shown.lease_owner, shown.rate_limited_until) == ("Cancelled", None, None)
    assert provider.accepted == [] and deliveries(host, campaign_id) == []


def test_a_stop_request_ends_the_wait_and_the_campaign_resumes(
    host: Host, provider: Service, db_path: Path
) -> None:
    provider.throttle("/batch", 1, **{"Retry-After": "120"})
    campaign_id = queue(host)
    stop = threading.Event()

    def stop_while_waiting(progress: CampaignProgress) -> None:
        if progress.rate_limited_until is not None:
            stop.set()

    assert run(host, campaign_id, stop=stop, on_progress=stop_while_waiting) == "preparing"
    shown = row(host, campaign_id)
    assert shown.lease_owner is None and shown.rate_limit_waited_s == 120
    view = host.campaigns.get("acme", campaign_id, with_stats=False)
    assert view.progress.rate_limited_until is not None  # the service's limit still holds
    # the API, the console and the CLI say so (no lifespan: no job thread resumes it here)
    app = create_app(host)
    answer = TestClient(app).get(
        f"/api/v1/tenants/acme/campaigns/{campaign_id}", headers={"Authorization": ADMIN}
    )
    assert answer.status_code == 200, answer.text
    until = answer.json()["progress"]["rateLimitedUntil"]
    assert until == view.progress.rate_limited_until.isoformat()
    console = signed_in_admin(app)
    base = f"/console/tenants/acme/campaigns/{campaign_id}"
    page = console.http.get(base)
    assert page.status_code == 200, page.text
    assert f"next batch at {view.progress.rate_limited_until:%Y-%m-%d %H:%M:%S} UTC" in page.text
    assert console.http.get(base + "/progress").json()["progress"]["rateLimitedUntil"] == until
    cli = Cli.in_dir(db_path.parent, CRM_HOST_SECRET_KEY=SECRET_KEY)
    status = cli.run("campaign", "status", "acme", campaign_id)
    assert status.returncode == 0, status.stderr
    assert "stage preparing (rate limited by the service until " in status.stdout
    assert run(host, campaign_id) == "done"  # the service has nothing queued any more
    assert sorted(e for batch in provider.accepted for e in batch) == EVERYONE


def test_a_module_that_handles_429_itself_is_not_second_guessed(
    host: Host, provider: Service
) -> None:
    host.tenants.configure(
        "acme", "limited", settings={"base_url": provider.server.url(""), "tolerate_429": True}
    )
    provider.throttle("/batch", 1, **{"Retry-After": "120"})
    campaign_id = queue(host)
    assert run(host, campaign_id) == "done"
    shown = row(host, campaign_id)
    assert shown.rate_limit_waited_s == 0 and shown.batches_done == 3
    assert dict(host.module_storage.load("acme", "limited"))["tolerated"] == [BATCH]


def test_a_throttled_create_is_called_again_only_when_declared_idempotent(
    host: Host, provider: Service
) -> None:
    provider.throttle("/create", 1, **{"Retry-After": "1"})
    campaign_id = queue(host)
    assert run(host, campaign_id) == "done"
    assert provider.throttled == ["/create"] and row(host, campaign_id).external_id

    # the same script without the declaration: a failed create may have made something
    manifest = email_manifest(
        id="limited",
        version="1.0.1",
        egress=[f"127.0.0.1:{provider.server.port}"],
        settings=SETTINGS_SCHEMA,
    )
    host.registry.upload(
        from_json_body({"manifest": manifest, "script": SCRIPT}, max_script_bytes=64 * 1024)
    )
    host.tenants.configure(
        "acme", "limited", version="1.0.1", settings={"base_url": provider.server.url("")}
    )
    provider.throttle("/create", 1, **{"Retry-After": "1"})
    second = queue(host)
    assert run(host, second) == "failed"
    shown = row(host, second)
    assert shown.error is not None and "the service answered HTTP 429" in shown.error
    assert shown.rate_limit_waited_s == 0 and shown.external_id is None


def end_the_wait(host: Host, campaign_id: str) -> None:
    """Move the clock of a parked campaign's wait to now, for both of its schedulers: the
    campaign row the job threads read, and on PostgreSQL the job engine's retry time."""
    with host.db.transaction() as session:
        session.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(rate_limited_until=utcnow())
        )
        if host.uses_job_engine:
            session.execute(
                text(
                    "UPDATE procrastinate_jobs SET scheduled_at = now() "
                    "WHERE queueing_lock = :lock AND status = 'todo'"
                ),
                {"lock": f"campaign:{campaign_id}"},
            )


def test_a_campaign_waiting_for_its_rate_limit_holds_no_job_thread(
    db_path: Path, pool: SandboxPool, provider: Service
) -> None:
    """One job thread (one worker slot on PostgreSQL) for every tenant: while acme's
    campaign waits out its service's Retry-After, beta's campaign, queued after it, runs to
    Sent on that thread; acme's then resumes and prepares each recipient once."""
    host = open_host(db_path, pool, provider, campaign_workers=1, campaign_poll_seconds=0.2)
    try:
        host.tenants.create("beta", "Beta")
        host.tenants.configure("beta", "limited", settings={"base_url": provider.server.url("")})
        host.contacts.upsert("beta", [ContactRow("rows[0]", "B", id="b0", email="b0@example.test")])
        provider.throttle("/batch", 1, **{"Retry-After": "600"})
        host.start()
        waiting = queue(host)
        wait_until(lambda: row(host, waiting).rate_limited_until is not None, "acme's wait")
        beta = host.campaigns.create("beta", beta_draft()).id
        wait_until(lambda: row(host, beta).status == "Sending", "beta's campaign sent")
        parked = row(host, waiting)
        assert parked.rate_limited_until is not None and parked.lease_owner is None
        assert (parked.stage, parked.batches_done) == ("preparing", 0)
        assert provider.throttled == ["/batch"]

        end_the_wait(host, waiting)
        wait_until(lambda: row(host, waiting).status == "Sending", "acme's campaign sent")
        done = row(host, waiting)
        assert (done.batches_done, done.prepared, done.rate_limited_until) == (3, CONTACTS, None)
        accepted = sorted(e for batch in provider.accepted for e in batch)
        assert accepted == sorted([*EVERYONE, "b0@example.test"])  # each recipient once
    finally:
        host.close()


def beta_draft() -> CampaignDraft:
    return CampaignDraft(
        module="limited",
        name="Beta news",
        type="Email",
        subject="Hello",
        senderName="Beta",
        senderEmail="news@beta.test",
        html="<p>Hi</p>",
        contactIds="all",
    )
