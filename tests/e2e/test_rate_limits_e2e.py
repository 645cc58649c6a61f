"""Provider rate limits end to end: the real ``crm-host serve`` sends campaigns with the
SendGrid example module to two emulated SendGrid accounts. Tenant ``alpha``'s API key is
rate limited (SendGrid's 429 with ``X-RateLimit-*`` headers): its campaign slows down — the
API shows ``rateLimitedUntil`` while it waits — and still reaches Sent with every recipient
prepared once, while tenant ``beta``'s campaign on the same host, started at the same
moment, finishes first without a single 429. A key whose limit resets later than the
campaign may wait in all (tenant ``gamma``) fails the campaign with a rate_limited reason,
and the host keeps serving. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from emulators.runner import RunningServer, serve
from emulators.sendgrid import SendGridState, create_app
from tests.e2e.server import RunningHost, running_host
from tests.e2e.test_campaign_e2e import wait_until
from tests.host.conftest import SECRET_KEY
from tests.postgres import Cluster

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
CONTACTS = 20
BATCH = 10
TENANTS = ("alpha", "beta", "gamma")
EVERYONE = sorted(f"u{i}@example.test" for i in range(CONTACTS))
MAX_WAIT_S = 30
MAX_TOTAL_S = 20


@dataclass
class Account:
    """One emulated SendGrid account (its own API key) and the tenant that uses it."""

    tenant: str
    key: str
    state: SendGridState
    emulator: RunningServer


@dataclass
class World:
    server: RunningHost
    accounts: dict[str, Account]

    def admin(self) -> httpx.Client:
        return self.server.client()


def campaign_body() -> dict[str, Any]:
    return {
        "module": "sendgrid",
        "name": "Launch",
        "type": "Email",
        "subject": "We launched",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hello</p>",
        "contactIds": "all",
        "batchSize": BATCH,
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The served host's database: a SQLite file, or a fresh database of the test cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('ratelimits-db') / 'host.db'}"
        return
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    url = cluster.database()
    try:
        yield url
    finally:
        cluster.drop(url)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[World]:
    states = {t: SendGridState(api_keys={f"SG.{t}-key"}) for t in TENANTS}
    with (
        serve(create_app(states["alpha"])) as alpha,
        serve(create_app(states["beta"])) as beta,
        serve(create_app(states["gamma"])) as gamma,
    ):
        emulators = {"alpha": alpha, "beta": beta, "gamma": gamma}
        accounts = {t: Account(t, f"SG.{t}-key", states[t], emulators[t]) for t in TENANTS}
        manifest = json.loads((MODULE_DIR / "manifest.json").read_text())
        manifest["egress"] = [*manifest["egress"], *(e.netloc for e in emulators.values())]
        with running_host(
            tmp_path_factory.mktemp("ratelimits"),
            CRM_HOST_DATABASE_URL=database,
            CRM_HOST_SECRET_KEY=SECRET_KEY,
            CRM_HOST_EGRESS_ALLOW=",".join(e.netloc for e in emulators.values()),
            CRM_HOST_CAMPAIGN_POLL_SECONDS="0.2",
            CRM_HOST_CAMPAIGN_RATE_LIMIT_MAX_WAIT_SECONDS=str(MAX_WAIT_S),
            CRM_HOST_CAMPAIGN_RATE_LIMIT_MAX_TOTAL_SECONDS=str(MAX_TOTAL_S),
        ) as server:
            with server.client() as admin:
                script = (MODULE_DIR / "module.py").read_text()
                uploaded = admin.post(
                    "/api/v1/modules", json={"manifest": manifest, "script": script}
                )
                assert uploaded.status_code == 201, uploaded.text
                contacts = [
                    {"id": f"c{i:03d}", "name": f"C {i}", "email": f"u{i}@example.test"}
                    for i in range(CONTACTS)
                ]
                for account in accounts.values():
                    tenant = account.tenant
                    made = admin.post("/api/v1/tenants", json={"id": tenant, "name": tenant})
                    assert made.status_code == 201, made.text
                    enabled = admin.put(
                        f"/api/v1/tenants/{tenant}/modules/sendgrid",
                        json={
                            "settings": {
                                "api_key": account.key,
                                "api_base_url": account.emulator.url,
                                "sender_id": 1,
                                "suppression_group_id": 7,
                            }
                        },
                    )
                    assert enabled.status_code == 200, enabled.text
                    hook = server.url + urlsplit(enabled.json()["webhookUrl"]).path
                    account.state.configure_webhook(hook, signed=False)
                    added = admin.post(f"/api/v1/tenants/{tenant}/contacts", json=contacts)
                    assert added.is_success, added.text
            yield World(server, accounts)


def queue(world: World, tenant: str) -> str:
    with world.admin() as admin:
        created = admin.post(f"/api/v1/tenants/{tenant}/campaigns", json=campaign_body())
        assert created.status_code == 202, created.text
        return str(created.json()["id"])


def shown(world: World, tenant: str, campaign_id: str) -> dict[str, Any]:
    with world.admin() as admin:
        answer = admin.get(f"/api/v1/tenants/{tenant}/campaigns/{campaign_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def members(account: Account, single_send_id: str) -> list[str]:
    """The emails in the single send's list, as often as SendGrid holds them."""
    (list_id,) = account.state.single_sends[single_send_id]["send_to"]["list_ids"]
    contacts = account.state.contacts.values()
    return sorted(c["email"] for c in contacts if list_id in c["list_ids"])


def invocations(world: World, tenant: str, function: str, outcome: str) -> list[dict[str, Any]]:
    with world.admin() as admin:
        page = admin.get(
            f"/api/v1/tenants/{tenant}/invocations",
            params={"function": function, "outcome": outcome, "limit": 500},
        )
        assert page.status_code == 200, page.text
        return list(page.json()["items"])


def sent_after_delivery(world: World, account: Account, campaign_id: str) -> dict[str, Any]:
    """Let the emulator send the single send (its events reach the tenant's webhook), then
    the campaign as the API shows it once Sent."""
    external = shown(world, account.tenant, campaign_id)["externalId"]
    account.state.deliver(external)
    wait_until(lambda: shown(world, account.tenant, campaign_id)["status"] == "Sent", 30)
    return shown(world, account.tenant, campaign_id)


def test_a_rate_limited_tenant_slows_down_while_another_goes_at_full_speed(
    world: World,
) -> None:
    alpha, beta = world.accounts["alpha"], world.accounts["beta"]
    # alpha's key: 4 calls per 3 s — its campaign needs several times that
    alpha.state.limit_rate(alpha.key, 4, per_seconds=3)
    try:
        seen_waiting: list[str] = []
        first = queue(world, "alpha")
        second = queue(world, "beta")
        done = threading.Event()

        def watch_alpha() -> None:
            while not done.is_set():
                progress = shown(world, "alpha", first)["progress"]
                if progress["rateLimitedUntil"]:
                    seen_waiting.append(progress["rateLimitedUntil"])
                done.wait(0.1)

        watcher = threading.Thread(target=watch_alpha)
        watcher.start()
        try:
            wait_until(lambda: shown(world, "beta", second)["progress"]["stage"] == "done", 60)
            beta_done = shown(world, "beta", second)
            alpha_then = shown(world, "alpha", first)
            wait_until(
                lambda: shown(world, "alpha", first)["progress"]["stage"] in ("done", "failed"), 90
            )
        finally:
            done.set()
            watcher.join()
    finally:
        alpha.state.limit_rate(alpha.key, None)

    # beta finished first, untouched: no 429, no failed call
    assert alpha_then["progress"]["stage"] != "done", alpha_then
    assert beta.state.throttled == []
    assert beta_done["status"] == "Sending" and beta_done["progress"]["rateLimitedUntil"] is None
    assert invocations(world, "beta", "PrepareCampaign", "script_error") == []

    # alpha met 429s, waited (the API said until when) and still got everywhere
    finished = shown(world, "alpha", first)
    assert finished["progress"]["stage"] == "done", finished
    assert finished["error"] is None and finished["progress"]["rateLimitedUntil"] is None
    assert alpha.state.throttled, "alpha's key was never rate limited"
    assert seen_waiting, "the API never showed the campaign waiting for the rate limit"
    throttled_calls = [
        item
        for function in ("ExportContacts", "PrepareCampaign", "CreateCampaign")
        for item in invocations(world, "alpha", function, "script_error")
    ]
    assert throttled_calls and all(
        any(f["status"] == 429 and "x-ratelimit-reset" in f["rate_limit"] for f in i["fetches"])
        for i in throttled_calls
    )
    # every recipient prepared once: one successful call per batch, each email in the list
    # once, one delivery each, and one single send
    assert len(invocations(world, "alpha", "PrepareCampaign", "ok")) == CONTACTS // BATCH
    assert finished["progress"]["prepared"] == CONTACTS
    assert len(alpha.state.single_sends) == 1
    assert members(alpha, finished["externalId"]) == EVERYONE
    with world.admin() as admin:
        page = admin.get(f"/api/v1/tenants/alpha/campaigns/{first}/deliveries").json()
    assert sorted(i["email"] for i in page["items"]) == EVERYONE

    for account, campaign_id in ((alpha, first), (beta, second)):
        assert sent_after_delivery(world, account, campaign_id)["status"] == "Sent"
    assert members(beta, beta_done["externalId"]) == EVERYONE


def test_a_rate_limit_past_the_total_bound_fails_the_campaign_with_a_clear_reason(
    world: World,
) -> None:
    gamma = world.accounts["gamma"]
    gamma.state.limit_rate(gamma.key, 0, per_seconds=3600)  # resets in an hour
    try:
        campaign_id = queue(world, "gamma")
        wait_until(
            lambda: shown(world, "gamma", campaign_id)["progress"]["stage"] in ("done", "failed")
        )
    finally:
        gamma.state.limit_rate(gamma.key, None)
    failed = shown(world, "gamma", campaign_id)
    assert failed["status"] == "Failed" and failed["externalId"] is None
    error = failed["error"]
    assert error.startswith("rate_limited: 127.0.0.1 answered 429 Too Many Requests"), error
    assert f"at most {MAX_TOTAL_S} s in total" in error
    assert "HTTP 429: too many requests" in error  # the module's own words
    assert failed["progress"]["rateLimitedUntil"] is None
    assert gamma.state.single_sends == {} and gamma.state.contacts == {}
    with world.admin() as admin:  # the host kept serving
        assert admin.get("/api/v1/tenants/gamma/campaigns").status_code == 200
        deliveries = admin.get(f"/api/v1/tenants/gamma/campaigns/{campaign_id}/deliveries")
    assert deliveries.json()["items"] == []
