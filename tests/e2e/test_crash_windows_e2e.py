"""Crash windows of a campaign on two nodes sharing one database (issue 17): two real
``crm-host serve`` processes send a campaign with the SendGrid example module to the
SendGrid emulator; while one chosen request is held at the emulator, the node whose job
holds the campaign's lease is SIGKILLed, and the other, still running node takes the job
over. The nodes share a PostgreSQL database (their jobs run on the job engine) or a SQLite
file of one machine (their jobs run on the in-process lease loop).

* mid-batch: a PrepareCampaign batch the service already applied, but the host never
  recorded, is prepared again by the other node (at-least-once, the documented contract),
  and the emulator still holds every recipient once in the campaign's list;
* CreateCampaign: killed before, during (the request lost, or applied with the answer lost)
  and after the creating call. The module as shipped declares CreateCampaign idempotent, so
  the other node calls it again and exactly one single send exists and is scheduled.
  The same script without the declaration leaves the campaign Draft, flagged *needs
  attention*, with nothing created again, until an admin resolves it (API and CLI).

Node start-ups dominate the cost, so the tests share one database, emulator and pair of
nodes (module-scoped): each test queues its own campaign, kills the node holding it at its
window, and starts a replacement once the other node has taken over, so the next test again
runs on two. Tenant ``acme`` runs the module as shipped (1.0.0); tenant ``beta`` the same
script as 1.0.1 without the declaration.

Every window runs on PostgreSQL. On SQLite only the take-over differs (the lease loop instead
of the job engine; what the job does at a window is the same code), so the SQLite pair runs
the mid-batch window and one CreateCampaign window, which keeps the suite minutes long.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.runner import RunningServer, serve
from emulators.sendgrid import SendGridState, create_app
from tests.e2e.cluster import HostCluster, host_cluster
from tests.e2e.emulator_gate import Gate, Hold
from tests.e2e.test_campaign_e2e import CAMPAIGN, wait_until

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
API_KEY = "SG.emulator-api-key"
CONTACTS = 30
BATCH = 10


@dataclass(frozen=True)
class AtTheKill:
    """What the database and the service held when the node was killed: the job cannot move
    while its request is held, so this is read just before the kill."""

    row: tuple[Any, ...]
    """The campaign's (stage, status, batches_done)."""
    single_sends: int
    listed: int
    """Recipients in the campaign's list at the service."""


@dataclass
class Fleet:
    """The shared emulator and the two ``serve`` nodes on the shared database."""

    cluster: HostCluster
    state: SendGridState
    gate: Gate
    emulator: RunningServer
    gamma_key: str = ""
    """The API key of tenant ``gamma``, which has nothing: a tenant, not an admin."""

    def kill_at(self, hold: Hold, campaign_id: str) -> AtTheKill:
        """SIGKILL the node holding ``campaign_id``'s job while ``hold`` is held at the
        emulator, let the emulator go on, and wait until the other node has taken the job
        over (its log names the dead holder); then start a replacement node for the next
        test. Returns what the kill left."""
        assert hold.arrived.wait(60), f"{hold.method} {hold.path} never arrived"
        holder, owner = self.cluster.holder(campaign_id), self.cluster.lease_owner(campaign_id)
        assert holder is not None and owner is not None, "no node of the cluster holds the job"
        left = AtTheKill(
            self.row(campaign_id), len(self.single_sends(campaign_id)), self.listed(campaign_id)
        )
        self.cluster.kill(holder)
        hold.release.set()
        self.gate.hold = None
        (survivor,) = self.cluster.nodes
        assert self.cluster.taken_over(campaign_id, owner) is survivor
        self.cluster.serve(wait=False)
        return left

    def admin(self) -> httpx.Client:
        return self.cluster.nodes[0].client()

    def campaign(self, tenant: str, campaign_id: str) -> dict[str, Any]:
        with self.admin() as admin:
            shown = admin.get(f"/api/v1/tenants/{tenant}/campaigns/{campaign_id}")
            assert shown.status_code == 200, shown.text
            return dict(shown.json())

    def queue(self, tenant: str, hold: Hold) -> str:
        """Hold ``hold`` at the emulator and queue a campaign to everyone on two running
        nodes; its id."""
        assert len(self.cluster.ready()) == 2
        self.gate.hold = hold
        with self.admin() as admin:
            created = admin.post(
                f"/api/v1/tenants/{tenant}/campaigns",
                json={**CAMPAIGN, "module": "sendgrid", "batchSize": BATCH},
            )
            assert created.status_code == 202, created.text
            return str(created.json()["id"])

    def single_sends(self, campaign_id: str) -> list[dict[str, Any]]:
        category = f"crm-campaign-{campaign_id}"
        return [s for s in self.state.single_sends.values() if category in s["categories"]]

    def campaign_list(self, campaign_id: str) -> str:
        (list_id,) = [i for i, item in self.state.lists.items() if campaign_id in item["name"]]
        return list_id

    def members(self, list_id: str) -> list[str]:
        contacts = self.state.contacts.values()
        return sorted(c["email"] for c in contacts if list_id in c["list_ids"])

    def listed(self, campaign_id: str) -> int:
        lists = [i for i, item in self.state.lists.items() if campaign_id in item["name"]]
        return sum(len(self.members(list_id)) for list_id in lists)

    def row(self, campaign_id: str) -> tuple[Any, ...]:
        rows = self.cluster.query(
            "SELECT stage, status, batches_done FROM campaigns WHERE id = :id", id=campaign_id
        )
        return tuple(rows[0])


def package(emulator: RunningServer, *, idempotent: bool) -> dict[str, Any]:
    """The SendGrid example module, allowed to reach the emulator; without its idempotent
    declaration (as version 1.0.1) when ``idempotent`` is False: the same script, only the
    manifest differs."""
    manifest = json.loads((MODULE_DIR / "manifest.json").read_text())
    assert manifest["idempotent"] == {"CRM_Marketing_CreateCampaign": True}
    manifest["egress"] = [*manifest["egress"], emulator.netloc]
    if not idempotent:
        del manifest["idempotent"]
        manifest["version"] = "1.0.1"
    return {"manifest": manifest, "script": (MODULE_DIR / "module.py").read_text()}


def module_settings(emulator: RunningServer) -> dict[str, Any]:
    """The module's settings for the emulator's account."""
    return {
        "api_key": API_KEY,
        "api_base_url": emulator.url,
        "sender_id": 1,
        "suppression_group_id": 7,
    }


@pytest.fixture(scope="module")
def postgresql_fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """Two nodes on a PostgreSQL database: their jobs run on the job engine, procrastinate."""
    yield from two_nodes(request, request.getfixturevalue("postgres_cluster"))


@pytest.fixture(scope="module")
def sqlite_fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """Two nodes on a SQLite file: their jobs run on the in-process lease loop."""
    yield from two_nodes(request, None)


@pytest.fixture
def fleet(request: pytest.FixtureRequest, backend: str) -> Fleet:
    """The pair of nodes of the test's ``backend``; both pairs live until the module ends,
    so each starts once whatever order the tests run in."""
    found: Fleet = request.getfixturevalue(f"{backend}_fleet")
    return found


def two_nodes(request: pytest.FixtureRequest, postgres: Any) -> Iterator[Fleet]:
    tmp_path_factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    state = SendGridState()
    gate = Gate(create_app(state))
    with (
        serve(gate) as emulator,
        host_cluster(
            tmp_path_factory.mktemp("crash"), postgres, CRM_HOST_EGRESS_ALLOW=emulator.netloc
        ) as cluster,
    ):
        fleet = Fleet(cluster, state, gate, emulator)
        cluster.serve(wait=False)
        cluster.serve(wait=False)
        cluster.ready()
        try:
            with fleet.admin() as admin:
                for idempotent in (True, False):
                    body = package(emulator, idempotent=idempotent)
                    uploaded = admin.post("/api/v1/modules", json=body)
                    assert uploaded.status_code == 201, uploaded.text
                settings = module_settings(emulator)
                contacts = [
                    {"id": f"c{i:03d}", "name": f"C {i}", "email": f"u{i}@example.test"}
                    for i in range(CONTACTS)
                ]
                for tenant, version in (("acme", "1.0.0"), ("beta", "1.0.1")):
                    made = admin.post("/api/v1/tenants", json={"id": tenant, "name": tenant})
                    assert made.status_code == 201, made.text
                    enabled = admin.put(
                        f"/api/v1/tenants/{tenant}/modules/sendgrid",
                        json={"version": version, "settings": settings},
                    )
                    assert enabled.status_code == 200, enabled.text
                    added = admin.post(f"/api/v1/tenants/{tenant}/contacts", json=contacts)
                    assert added.is_success, added.text
                gamma = admin.post("/api/v1/tenants", json={"id": "gamma", "name": "G"})
                assert gamma.status_code == 201, gamma.text
                fleet.gamma_key = gamma.json()["apiKey"]
            yield fleet
        finally:
            if gate.hold is not None:
                gate.hold.release.set()


EVERYONE = sorted(f"u{i}@example.test" for i in range(CONTACTS))


# --- a batch in flight -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_batch_in_flight_is_prepared_again_and_each_recipient_is_in_the_list_once(
    fleet: Fleet,
) -> None:
    # ExportContacts makes 3 PUTs (one per chunk), then PrepareCampaign one per batch: hold
    # the second batch's PUT after SendGrid applied it, so the host never records the batch.
    hold = Hold("PUT", "/v3/marketing/contacts", nth=5, applied=True)
    puts_before = fleet.state.requests.count(PREPARE_PUT)
    campaign_id = fleet.queue("acme", hold)
    left = fleet.kill_at(hold, campaign_id)
    assert left.row == ("preparing", "Draft", 1)
    assert left.listed == 2 * BATCH  # the service has batch 2 already
    list_id = fleet.campaign_list(campaign_id)

    wait_until(lambda: fleet.campaign("acme", campaign_id)["status"] == "Sending")
    shown = fleet.campaign("acme", campaign_id)
    assert shown["progress"]["batches"] == CONTACTS // BATCH and shown["attention"] is None
    # 3 export chunks + 3 batches + the batch in flight, prepared again
    assert fleet.state.requests.count(PREPARE_PUT) - puts_before == 3 + CONTACTS // BATCH + 1
    assert fleet.members(list_id) == EVERYONE  # each recipient once, all of them
    assert len(fleet.state.contacts) == CONTACTS
    (single,) = fleet.single_sends(campaign_id)
    assert single["send_to"]["list_ids"] == [list_id] and single["status"] == "scheduled"
    deliveries = fleet.cluster.query(
        "SELECT COUNT(*), MIN(status), MAX(status) FROM deliveries WHERE campaign_id = :id",
        id=campaign_id,
    )
    assert [tuple(row) for row in deliveries] == [(CONTACTS, "Sent", "Sent")]


PREPARE_PUT = "PUT /v3/marketing/contacts"


# --- CreateCampaign ----------------------------------------------------------------------

SEARCH = ("POST", "/v3/marketing/singlesends/search")
CREATE = ("POST", "/v3/marketing/singlesends")
SCHEDULE = ("PUT", "/v3/marketing/singlesends/[^/]+/schedule")
WINDOWS = {
    # name: (request held, held after the service applied it, single sends at the kill)
    "before": (SEARCH, False, 0),
    "during, request lost": (CREATE, False, 0),
    "during, answer lost": (CREATE, True, 1),
    "after": (SCHEDULE, False, 1),
}


def interrupt_create(fleet: Fleet, tenant: str, window: str) -> str:
    (method, path), applied, existing = WINDOWS[window]
    hold = Hold(method, path, applied=applied)
    campaign_id = fleet.queue(tenant, hold)
    left = fleet.kill_at(hold, campaign_id)
    assert left.row == ("creating", "Draft", CONTACTS // BATCH)
    assert left.single_sends == existing
    return campaign_id


@pytest.mark.parametrize(
    ("backend", "window"),
    [("sqlite", "during, answer lost"), *(("postgresql", window) for window in WINDOWS)],
)
def test_declared_module_is_asked_again_and_one_single_send_exists(
    fleet: Fleet, window: str
) -> None:
    campaign_id = interrupt_create(fleet, "acme", window)
    wait_until(lambda: fleet.campaign("acme", campaign_id)["status"] == "Sending")
    shown = fleet.campaign("acme", campaign_id)
    (single,) = fleet.single_sends(campaign_id)
    assert single["status"] == "scheduled"
    assert single["send_to"]["list_ids"] == [fleet.campaign_list(campaign_id)]
    assert shown["externalId"] == single["id"] and shown["attention"] is None
    assert shown["error"] is None and shown["progress"]["stage"] == "done"


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.timeout(300)  # five CLI processes besides the two nodes and a take-over
def test_undeclared_module_needs_attention_and_not_created_creates_it_once(
    fleet: Fleet,
) -> None:
    campaign_id = interrupt_create(fleet, "beta", "before")
    cli = fleet.cluster.cli()
    wait_until(lambda: fleet.campaign("beta", campaign_id)["attention"] is not None)
    shown = fleet.campaign("beta", campaign_id)
    assert (shown["status"], shown["progress"]["stage"]) == ("Draft", "creating")
    assert "CRM_Marketing_CreateCampaign" in shown["attention"]["reason"]
    assert shown["error"] is None and not fleet.single_sends(campaign_id)
    status = cli.run("campaign", "status", "beta", campaign_id)
    assert status.returncode == 0 and "needs attention since" in status.stdout
    resume = cli.run("campaign", "run", "beta", campaign_id)
    assert resume.returncode == 1 and "needs attention" in resume.stderr
    assert not fleet.single_sends(campaign_id)  # neither the server nor the CLI created it
    with fleet.admin() as admin:
        cancel = admin.post(f"/api/v1/tenants/beta/campaigns/{campaign_id}/cancel")
    assert cancel.status_code == 409 and "needs attention" in cancel.text

    both = cli.run(
        "campaign", "resolve", "beta", campaign_id, "--not-created", "--external-id", "x"
    )
    assert both.returncode == 2 and both.stderr.count("\n") == 1, both.stderr
    assert "--external-id" in both.stderr
    resolved = cli.run("campaign", "resolve", "beta", campaign_id, "--not-created")
    assert resolved.returncode == 0, resolved.stderr
    assert "marked not created" in resolved.stdout
    wait_until(lambda: fleet.campaign("beta", campaign_id)["status"] == "Sending")
    shown = fleet.campaign("beta", campaign_id)
    with fleet.admin() as admin:
        again = admin.post(
            f"/api/v1/tenants/beta/campaigns/{campaign_id}/resolve", json={"notCreated": True}
        )
    assert again.status_code == 409 and "does not need attention" in again.text
    (single,) = fleet.single_sends(campaign_id)
    assert shown["externalId"] == single["id"] and shown["attention"] is None
    assert single["status"] == "scheduled"


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("window", ["during, answer lost", "after"])
def test_undeclared_module_needs_attention_and_the_admin_enters_the_service_id(
    fleet: Fleet, window: str
) -> None:
    campaign_id = interrupt_create(fleet, "beta", window)
    (single,) = fleet.single_sends(campaign_id)
    url = f"/api/v1/tenants/beta/campaigns/{campaign_id}"
    with fleet.admin() as admin:
        wait_until(lambda: admin.get(url).json()["attention"] is not None)
        assert admin.get(url).json()["status"] == "Draft"
        with fleet.cluster.nodes[0].client(fleet.gamma_key) as as_tenant:
            refused = as_tenant.post(
                url.replace("/beta/", "/gamma/") + "/resolve", json={"notCreated": True}
            )
        assert refused.status_code == 403  # admin only

        neither = admin.post(url + "/resolve", json={})
        assert neither.status_code == 422 and "externalId" in neither.text
        taken = admin.post(url + "/resolve", json={"externalId": "x" * 256})
        assert taken.status_code == 422
        assert admin.get(url).json()["attention"] is not None  # nothing changed

        resolved = admin.post(url + "/resolve", json={"externalId": single["id"]})
        assert resolved.status_code == 200, resolved.text
        shown = resolved.json()
        assert (shown["status"], shown["externalId"]) == ("Sending", single["id"])
        assert shown["attention"] is None and shown["progress"]["stage"] == "done"
        assert admin.post(url + "/resolve", json={"notCreated": True}).status_code == 409
        deliveries = admin.get(url + "/deliveries", params={"limit": 100}).json()["items"]
        assert {d["status"] for d in deliveries} == {"Sent"} and len(deliveries) == CONTACTS
    assert len(fleet.single_sends(campaign_id)) == 1  # nothing was created again
