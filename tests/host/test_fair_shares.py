"""Fair shares through the HTTP app: a tenant whose sandbox share is full gets 503 +
Retry-After on its webhook and 429 on its API (and nothing runs, is stored or logged), while
other tenants and the admin share carry on; the optional per-URL rate limit answers 429.
The share is held through the host's own Python API (``host.shares.slot``), exactly as a
long-running call of that tenant holds it, so no test depends on timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.api.app import create_app
from host.db.models import Campaign, Invocation, Template, WebhookReceipt
from host.errors import ServiceBusy
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, EMAIL_SCRIPT, email_manifest, json_body, make_host
from tests.host.test_campaign_job import (
    add_contacts,
    campaign,
    draft,
    run_in_process,
    setup_tenant,
)
from tests.sandbox.http_servers import LocalHTTPServer

SCRIPT = EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n",
    'def CRM_Marketing_ParseWebhookRequest(request):\n    return {"actions": []}\n',
)
assert SCRIPT != EMAIL_SCRIPT
KEYS: dict[str, str] = {}


def build_host(tmp_path: Path, pool: SandboxPool, **overrides: Any) -> Host:
    settings: dict[str, Any] = {"sandbox_wait_s": 0, **overrides}
    host = make_host(tmp_path / "host.db", sandbox=pool, **settings)
    host.registry.upload(
        from_json_body(json_body(email_manifest(), SCRIPT), max_script_bytes=10**5)
    )
    for tenant in ("acme", "globex"):
        _, KEYS[tenant] = host.tenants.create(tenant, tenant.title())
        host.tenants.configure(tenant, "sendmail", settings={"api_key": "k" * 12})
    return host


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = build_host(tmp_path, pool)
    yield instance
    instance.close()


def client_of(host: Host) -> TestClient:
    return TestClient(create_app(host), raise_server_exceptions=False)


def hook(host: Host, tenant: str) -> str:
    url = host.tenants.enablement(tenant, "sendmail").webhook_url
    return url.removeprefix(host.settings.public_url)


def count(host: Host, model: Any, tenant: str) -> int:
    with host.db.transaction() as session:
        return int(
            session.scalar(select(func.count()).select_from(model).where(model.tenant_id == tenant))
            or 0
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_full_share_is_503_on_the_webhook_and_429_on_the_api_others_carry_on(host: Host) -> None:
    with client_of(host) as client, host.shares.slot("acme", "sendmail"):
        refused = client.post(hook(host, "acme"), json=[])
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "busy"

        api = client.post(
            "/api/v1/tenants/acme/modules/sendmail/templates/import", headers=bearer(KEYS["acme"])
        )
        assert api.status_code == 429, api.text
        assert int(api.headers["retry-after"]) >= 1
        assert api.json()["error"] == "busy"

        # nothing ran for acme: no invocation, no receipt, no template
        assert count(host, Invocation, "acme") == 0
        assert count(host, WebhookReceipt, "acme") == 0
        assert count(host, Template, "acme") == 0

        # another tenant, the admin API and /healthz are served meanwhile
        assert client.post(hook(host, "globex"), json=[]).status_code == 200
        other = client.post(
            "/api/v1/tenants/globex/modules/sendmail/templates/import",
            headers=bearer(KEYS["globex"]),
        )
        assert other.status_code == 200 and other.json()["imported"] == 3
        assert client.get("/api/v1/tenants", headers=bearer(ADMIN_TOKEN)).status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}

    with client_of(host) as client:  # the slot released, acme is served again
        assert client.post(hook(host, "acme"), json=[]).status_code == 200
    assert count(host, Invocation, "acme") == 1


def test_admin_work_has_its_own_capped_share(tmp_path: Path, pool: SandboxPool) -> None:
    host = build_host(tmp_path, pool, sandbox_workers=4, sandbox_tenant_max_concurrent=1)
    stats = "CRM_Marketing_GetCampaignStats"
    try:
        with host.shares.slot("acme", "sendmail"):
            with pytest.raises(ServiceBusy):
                host.invoker.call("acme", "sendmail", stats, campaignExternalId="x")
            with host.shares.admin_work():
                value = host.invoker.call("acme", "sendmail", stats, campaignExternalId="x")
                assert value.total == 3
                # holding the admin share's one slot, the next admin call is refused
                # although two of the four slots are free: that is the admin cap
                with host.shares.slot("globex", "sendmail"), pytest.raises(ServiceBusy):
                    host.invoker.call("acme", "sendmail", stats, campaignExternalId="x")
            # and it never took from the tenants' share
            value = host.invoker.call("globex", "sendmail", stats, campaignExternalId="x")
            assert value.total == 3
    finally:
        host.close()


def test_webhook_rate_limit_per_url(tmp_path: Path, pool: SandboxPool) -> None:
    host = build_host(tmp_path, pool, webhook_rate_per_s=0.001, webhook_rate_burst=2)
    try:
        with client_of(host) as client:
            url = hook(host, "acme")
            assert [client.post(url, json=[]).status_code for _ in range(2)] == [200, 200]
            limited = client.post(url, json=[])
            assert limited.status_code == 429, limited.text
            assert limited.json()["error"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            assert count(host, WebhookReceipt, "acme") == 2  # the module was not called
            # other URLs have their own bucket; a wrong token is not a URL at all
            assert client.post(hook(host, "globex"), json=[]).status_code == 200
            wrong = url.rsplit("/", 1)[0] + "/not-the-token"
            assert client.post(wrong, json=[]).status_code == 404
    finally:
        host.close()


def test_rate_limit_is_off_by_default(host: Host) -> None:
    with client_of(host) as client:
        url = hook(host, "acme")
        assert {client.post(url, json=[]).status_code for _ in range(12)} == {200}


def test_busy_stats_serve_the_cached_value_marked_stale(host: Host) -> None:
    with host.db.transaction() as session:
        session.add(
            Campaign(
                id="cmp1",
                tenant_id="acme",
                module_id="sendmail",
                module_version="1.0.0",
                type="Email",
                name="Sale",
                request={},
                audience={"all": True},
                status="Sending",
                stage="done",
                external_id="ext-1",
            )
        )
    url = "/api/v1/tenants/acme/campaigns/cmp1/stats"
    with client_of(host) as client:
        with host.shares.slot("acme", "sendmail"):
            uncached = client.get(url, headers=bearer(KEYS["acme"]))
            assert uncached.status_code == 429 and uncached.json()["error"] == "busy"
        fresh = client.get(url, headers=bearer(KEYS["acme"])).json()
        assert fresh["values"]["total"] == 3 and fresh["stale"] is False
        with host.shares.slot("acme", "sendmail"):
            busy = client.get(url, params={"refresh": "true"}, headers=bearer(KEYS["acme"]))
        assert busy.status_code == 200, busy.text
        assert busy.json()["values"] == fresh["values"] and busy.json()["stale"] is True
        # not recorded as a module failure: the next view is fresh again
        again = client.get(url, params={"refresh": "true"}, headers=bearer(KEYS["acme"]))
        assert again.json()["stale"] is False and again.json()["error"] is None


def test_a_tenant_call_waiting_for_the_sandbox_holds_no_admin_thread(
    tmp_path: Path, pool: SandboxPool
) -> None:
    """The tenant API's only thread waits for acme's share; the admin API and /healthz are
    answered meanwhile, and the waiting call completes once the share frees."""
    # the call waits (up to a minute) until the test frees the share
    host = build_host(tmp_path, pool, tenant_api_threads=1, sandbox_wait_s=60)
    answers: list[int] = []
    try:
        with client_of(host) as client:
            with host.shares.slot("acme", "sendmail"):
                waiting = threading.Thread(
                    target=lambda: answers.append(
                        client.post(
                            "/api/v1/tenants/acme/modules/sendmail/templates/import",
                            headers=bearer(KEYS["acme"]),
                        ).status_code
                    )
                )
                waiting.start()
                deadline = time.monotonic() + 30
                while host.shares.admission.snapshot()["tenant:acme"]["waiting"] == 0:
                    assert time.monotonic() < deadline, "the tenant call never queued"
                    time.sleep(0.01)
                admin = client.get("/api/v1/tenants", headers=bearer(ADMIN_TOKEN))
                assert admin.status_code == 200
                assert client.get("/healthz").status_code == 200
                assert answers == []  # still waiting: the admin did not queue behind it
            waiting.join(30)
        assert answers == [200]
    finally:
        host.close()


FETCHING_SCRIPT = SCRIPT.replace(
    'def CRM_Marketing_ParseWebhookRequest(request):\n    return {"actions": []}\n',
    "def CRM_Marketing_ParseWebhookRequest(request):\n"
    '    fetch(settings["url"])\n'
    '    return {"actions": []}\n',
)


class HeldCall:
    """acme's webhook call, held inside the sandbox: its module fetches from a local service
    that answers only when the test releases it, so the call holds its worker, its sandbox
    slot and its place in flight for exactly as long as the test wants."""

    def __init__(self, host: Host, client: TestClient, service: LocalHTTPServer):
        self.entered, self.release = threading.Event(), threading.Event()
        self.answers: list[int] = []

        @service.route("/slow")
        def slow(handler: Any) -> None:
            self.entered.set()
            self.release.wait(30)
            handler.reply(200, b"{}")

        @service.route("/fast")
        def fast(handler: Any) -> None:
            handler.reply(200, b"{}")

        self.thread = threading.Thread(
            target=lambda: self.answers.append(client.post(hook(host, "acme"), json=[]).status_code)
        )

    def __enter__(self) -> HeldCall:
        self.thread.start()
        assert self.entered.wait(30), "acme's call never reached the service"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(30)


def fetching_host(
    tmp_path: Path, pool: SandboxPool, service: LocalHTTPServer, **overrides: Any
) -> Host:
    settings: dict[str, Any] = {"sandbox_wait_s": 0, "egress_allow": ["127.0.0.1"], **overrides}
    host = make_host(tmp_path / "host.db", sandbox=pool, **settings)
    manifest = email_manifest(
        egress=[f"127.0.0.1:{service.port}"],
        settings={"type": "object", "properties": {"url": {"type": "string"}}},
    )
    host.registry.upload(
        from_json_body(json_body(manifest, FETCHING_SCRIPT), max_script_bytes=10**5)
    )
    for tenant, path in (("acme", "/slow"), ("globex", "/fast")):  # only acme's call is held
        host.tenants.create(tenant, tenant.title())
        host.tenants.configure(tenant, "sendmail", settings={"url": service.url(path)})
    return host


def test_no_idle_worker_before_the_deadline_is_busy_not_a_module_failure(tmp_path: Path) -> None:
    """A one-worker pool whose worker is held by acme's call: globex's call is admitted (its
    share is free) but finds no idle worker before the pool's deadline, and answers 503
    instead of waiting without one."""
    with (
        LocalHTTPServer() as service,
        SandboxPool(size=1, spares=0, acquire_timeout_s=0) as small,
    ):
        host = fetching_host(tmp_path, small, service)
        try:
            with client_of(host) as client, HeldCall(host, client, service) as held:
                refused = client.post(hook(host, "globex"), json=[])
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "busy"
            assert int(refused.headers["retry-after"]) >= 1
            assert held.answers == [200]
            assert count(host, Invocation, "globex") == 0  # it never ran: not logged
            assert count(host, Invocation, "acme") == 1
        finally:
            host.close()


def test_a_webhook_url_over_its_in_flight_cap_is_refused_at_the_door(
    tmp_path: Path, pool: SandboxPool
) -> None:
    """With one request allowed in flight per URL, acme's second request is refused at once
    (it never reaches the sandbox's queue), while globex's URL is unaffected."""
    with LocalHTTPServer() as service:
        host = fetching_host(tmp_path, pool, service, webhook_max_inflight=1, sandbox_wait_s=30)
        try:
            with client_of(host) as client, HeldCall(host, client, service) as held:
                refused = client.post(hook(host, "acme"), json=[])
                assert host.shares.admission.snapshot()["tenant:acme"]["waiting"] == 0
                other = client.post(hook(host, "globex"), json=[])
                assert held.answers == []  # acme's first call is still in flight
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "busy"
            assert "in progress" in refused.json()["message"]
            assert int(refused.headers["retry-after"]) >= 1
            assert held.answers == [200] and other.status_code == 200
            assert count(host, Invocation, "acme") == 1  # the refused request never ran
        finally:
            host.close()


def test_campaign_job_waits_for_its_share_and_a_stop_leaves_it_resumable(
    tmp_path: Path, pool: SandboxPool
) -> None:
    """While acme's share is full, its campaign job neither fails nor calls the module; a stop
    during the wait leaves it resumable, and it completes once the share frees."""
    host = make_host(tmp_path / "host.db", sandbox=pool, sandbox_wait_s=0.2)
    try:
        setup_tenant(host)
        add_contacts(host, 3)
        created = host.campaigns.create("acme", draft())
        stop = threading.Event()
        stages: list[str] = []
        with host.shares.slot("acme", "rec"):
            job = threading.Thread(
                target=lambda: stages.append(run_in_process(host, created.id, stop=stop))
            )
            job.start()
            deadline = time.monotonic() + 30
            while not host.shares.admission.snapshot().get("tenant:acme", {}).get("waiting"):
                assert time.monotonic() < deadline, "the job never asked for a slot"
                time.sleep(0.01)
            stop.set()
            job.join(30)
        row = campaign(host, created.id)
        assert stages == [row.stage] and row.stage == "exporting"
        assert row.status != "Failed" and row.error is None and row.lease_owner is None
        assert count(host, Invocation, "acme") == 0  # the module was never called
        assert run_in_process(host, created.id) == "done"
        assert campaign(host, created.id).external_id is not None
    finally:
        host.close()
