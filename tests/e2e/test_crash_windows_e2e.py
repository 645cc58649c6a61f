"""Crash windows of a campaign, through real processes: the real ``crm-host serve`` sends a
campaign with the SendGrid example module to the SendGrid emulator, and is SIGKILLed while
one chosen request is held at the emulator; a second ``serve`` on the same database takes
the job over.

* mid-batch: a PrepareCampaign batch the service already applied, but the host never
  recorded, is prepared again on restart (at-least-once, the documented contract), and the
  emulator still holds every recipient once in the campaign's list;
* CreateCampaign: killed before, during (the request lost, or applied with the answer lost)
  and after the creating call. The module as shipped declares CreateCampaign idempotent, so
  the restarted host calls it again and exactly one single send exists and is scheduled.
  The same script without the declaration leaves the campaign Draft, flagged *needs
  attention*, with nothing created again, until an admin resolves it (API and CLI).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.runner import RunningServer, serve
from emulators.sendgrid import SendGridState, create_app
from tests.cli_runner import Cli
from tests.e2e.server import RunningHost, running_host
from tests.e2e.test_campaign_e2e import query, wait_until

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
API_KEY = "SG.emulator-api-key"
CONTACTS = 30
BATCH = 10


@dataclass
class Hold:
    """Hold the ``nth`` request matching ``method`` and ``path`` at the emulator: before the
    service sees it (``applied=False``: it never acts on it) or after it acted and before
    its answer leaves (``applied=True``)."""

    method: str
    path: str
    nth: int = 1
    applied: bool = False
    seen: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, scope: dict[str, Any]) -> bool:
        if scope["method"] != self.method or not re.fullmatch(self.path, scope["path"]):
            return False
        self.seen += 1
        return self.seen == self.nth


class Gate:
    """ASGI middleware in front of the emulator that holds one request (see :class:`Hold`)."""

    def __init__(self, app: Any):
        self.app = app
        self.hold: Hold | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        hold = self.hold
        if scope["type"] != "http" or hold is None or not hold.matches(scope):
            await self.app(scope, receive, send)
            return
        if not hold.applied:
            hold.arrived.set()
            await asyncio.to_thread(hold.release.wait)
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        messages: list[dict[str, Any]] = []

        async def keep(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        hold.arrived.set()
        await asyncio.to_thread(hold.release.wait)
        for message in messages:
            await send(message)


@dataclass
class Service:
    state: SendGridState
    gate: Gate
    server: RunningServer


@pytest.fixture
def service() -> Iterator[Service]:
    state = SendGridState()
    gate = Gate(create_app(state))
    with serve(gate) as server:
        yield Service(state, gate, server)
        if gate.hold is not None:
            gate.hold.release.set()


def package(service: Service, *, idempotent: bool) -> dict[str, Any]:
    """The SendGrid example module, allowed to reach the emulator; without its idempotent
    declaration when ``idempotent`` is False (the same script: only the manifest differs)."""
    manifest = json.loads((MODULE_DIR / "manifest.json").read_text())
    assert manifest["idempotent"] == {"CRM_Marketing_CreateCampaign": True}
    manifest["egress"] = [*manifest["egress"], service.server.netloc]
    if not idempotent:
        del manifest["idempotent"]
    return {"manifest": manifest, "script": (MODULE_DIR / "module.py").read_text()}


@contextmanager
def host(workdir: Path, service: Service) -> Iterator[RunningHost]:
    with running_host(
        workdir,
        CRM_HOST_EGRESS_ALLOW=service.server.netloc,
        CRM_HOST_CAMPAIGN_POLL_SECONDS="0.2",
    ) as server:
        yield server


def start_campaign(server: RunningHost, service: Service, *, idempotent: bool) -> str:
    """Upload and enable the module, add the contacts, queue the campaign; its id."""
    with server.client() as admin:
        uploaded = admin.post("/api/v1/modules", json=package(service, idempotent=idempotent))
        assert uploaded.status_code == 201, uploaded.text
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).is_success
        settings = {
            "api_key": API_KEY,
            "api_base_url": service.server.url,
            "sender_id": 1,
            "suppression_group_id": 7,
        }
        enabled = admin.put("/api/v1/tenants/acme/modules/sendgrid", json={"settings": settings})
        assert enabled.status_code == 200, enabled.text
        contacts = [
            {"id": f"c{i:03d}", "name": f"C {i}", "email": f"u{i}@example.test"}
            for i in range(CONTACTS)
        ]
        assert admin.post("/api/v1/tenants/acme/contacts", json=contacts).is_success
        created = admin.post(
            "/api/v1/tenants/acme/campaigns",
            json={
                "module": "sendgrid",
                "name": "Launch",
                "type": "Email",
                "subject": "We launched",
                "senderName": "Acme",
                "senderEmail": "news@acme.test",
                "html": "<p>Hello</p>",
                "contactIds": "all",
                "batchSize": BATCH,
            },
        )
        assert created.status_code == 202, created.text
        return str(created.json()["id"])


def kill_at(server: RunningHost, service: Service, hold: Hold) -> None:
    """SIGKILL ``serve`` while ``hold`` is held at the emulator (no shutdown: its lease
    stays, as after a crash), then let the emulator go on."""
    assert hold.arrived.wait(60), f"{hold.method} {hold.path} never arrived"
    server.process.kill()
    server.process.wait()
    hold.release.set()


def campaign_of(server: RunningHost, campaign_id: str) -> dict[str, Any]:
    with server.client() as admin:
        shown = admin.get(f"/api/v1/tenants/acme/campaigns/{campaign_id}")
        assert shown.status_code == 200, shown.text
        return dict(shown.json())


def campaign_list(state: SendGridState, campaign_id: str) -> str:
    (list_id,) = [i for i, item in state.lists.items() if campaign_id in item["name"]]
    return list_id


def members(state: SendGridState, list_id: str) -> list[str]:
    return sorted(c["email"] for c in state.contacts.values() if list_id in c["list_ids"])


EVERYONE = sorted(f"u{i}@example.test" for i in range(CONTACTS))
PREPARE_PUT = "PUT /v3/marketing/contacts"


# --- a batch in flight -------------------------------------------------------------------


def test_batch_in_flight_is_prepared_again_and_each_recipient_is_in_the_list_once(
    tmp_path: Path, service: Service
) -> None:
    # ExportContacts makes 3 PUTs (one per chunk), then PrepareCampaign one per batch: hold
    # the second batch's PUT after SendGrid applied it, so the host never records the batch.
    hold = service.gate.hold = Hold("PUT", "/v3/marketing/contacts", nth=5, applied=True)
    with host(tmp_path, service) as server:
        campaign_id = start_campaign(server, service, idempotent=True)
        kill_at(server, service, hold)
    db = tmp_path / "host.db"
    assert query(db, "SELECT batches_done, stage FROM campaigns") == [(1, "preparing")]
    list_id = campaign_list(service.state, campaign_id)
    assert len(members(service.state, list_id)) == 2 * BATCH  # the service has batch 2

    with host(tmp_path, service) as server:
        wait_until(lambda: campaign_of(server, campaign_id)["status"] == "Sending")
        shown = campaign_of(server, campaign_id)
    assert shown["progress"]["batches"] == CONTACTS // BATCH and shown["attention"] is None
    state = service.state
    put_bodies = [r for r in state.requests if r == PREPARE_PUT]
    # 3 export chunks + 3 batches + the batch in flight again
    assert len(put_bodies) == 3 + CONTACTS // BATCH + 1
    assert members(state, list_id) == EVERYONE  # each recipient once, all of them
    assert len(state.contacts) == CONTACTS
    assert [s["send_to"]["list_ids"] for s in state.single_sends.values()] == [[list_id]]
    assert query(db, "SELECT COUNT(*), MIN(status) FROM deliveries") == [(CONTACTS, "Sent")]


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


def interrupt_create(tmp_path: Path, service: Service, window: str, *, idempotent: bool) -> str:
    (method, path), applied, existing = WINDOWS[window]
    hold = service.gate.hold = Hold(method, path, applied=applied)
    with host(tmp_path, service) as server:
        campaign_id = start_campaign(server, service, idempotent=idempotent)
        kill_at(server, service, hold)
    rows = query(tmp_path / "host.db", "SELECT stage, status FROM campaigns")
    assert rows == [("creating", "Draft")]
    assert len(service.state.single_sends) == existing
    return campaign_id


@pytest.mark.parametrize("window", list(WINDOWS))
def test_declared_module_is_asked_again_and_one_single_send_exists(
    tmp_path: Path, service: Service, window: str
) -> None:
    campaign_id = interrupt_create(tmp_path, service, window, idempotent=True)
    with host(tmp_path, service) as server:
        wait_until(lambda: campaign_of(server, campaign_id)["status"] == "Sending")
        shown = campaign_of(server, campaign_id)
    (single,) = service.state.single_sends.values()
    assert single["status"] == "scheduled"
    assert single["send_to"]["list_ids"] == [campaign_list(service.state, campaign_id)]
    assert shown["externalId"] == single["id"] and shown["attention"] is None
    assert shown["error"] is None and shown["progress"]["stage"] == "done"


def test_undeclared_module_needs_attention_and_not_created_creates_it_once(
    tmp_path: Path, service: Service
) -> None:
    campaign_id = interrupt_create(tmp_path, service, "before", idempotent=False)
    cli = Cli.in_dir(tmp_path)
    with host(tmp_path, service) as server:
        wait_until(lambda: campaign_of(server, campaign_id)["attention"] is not None)
        shown = campaign_of(server, campaign_id)
        assert (shown["status"], shown["progress"]["stage"]) == ("Draft", "creating")
        assert "CRM_Marketing_CreateCampaign" in shown["attention"]["reason"]
        assert shown["error"] is None and not service.state.single_sends
        status = cli.run("campaign", "status", "acme", campaign_id)
        assert status.returncode == 0 and "needs attention since" in status.stdout

        both = cli.run(
            "campaign",
            "resolve",
            "acme",
            campaign_id,
            "--not-created",
            "--external-id",
            "x",
        )
        assert both.returncode == 2 and both.stderr.count("\n") == 1, both.stderr
        assert "--external-id" in both.stderr
        resolved = cli.run("campaign", "resolve", "acme", campaign_id, "--not-created")
        assert resolved.returncode == 0, resolved.stderr
        assert "marked not created" in resolved.stdout
        wait_until(lambda: campaign_of(server, campaign_id)["status"] == "Sending")
        shown = campaign_of(server, campaign_id)
        again = cli.run("campaign", "resolve", "acme", campaign_id, "--not-created")
        assert again.returncode == 1 and "does not need attention" in again.stderr
    (single,) = service.state.single_sends.values()
    assert shown["externalId"] == single["id"] and shown["attention"] is None
    assert single["status"] == "scheduled"


@pytest.mark.parametrize("window", ["during, answer lost", "after"])
def test_undeclared_module_needs_attention_and_the_admin_enters_the_service_id(
    tmp_path: Path, service: Service, window: str
) -> None:
    campaign_id = interrupt_create(tmp_path, service, window, idempotent=False)
    (single,) = service.state.single_sends.values()
    with host(tmp_path, service) as server, server.client() as admin:
        url = f"/api/v1/tenants/acme/campaigns/{campaign_id}"
        wait_until(lambda: admin.get(url).json()["attention"] is not None)
        assert admin.get(url).json()["status"] == "Draft"
        neither = admin.post(url + "/resolve", json={})
        assert neither.status_code == 422 and "externalId" in neither.text
        assert admin.get(url).json()["attention"] is not None  # nothing changed

        resolved = admin.post(url + "/resolve", json={"externalId": single["id"]})
        assert resolved.status_code == 200, resolved.text
        shown = resolved.json()
        assert (shown["status"], shown["externalId"]) == ("Sending", single["id"])
        assert shown["attention"] is None and shown["progress"]["stage"] == "done"
        assert admin.post(url + "/resolve", json={"notCreated": True}).status_code == 409
        deliveries = admin.get(url + "/deliveries", params={"limit": 100}).json()["items"]
        assert {d["status"] for d in deliveries} == {"Sent"} and len(deliveries) == CONTACTS
        assert httpx.get(server.url + "/healthz").status_code == 200
    assert len(service.state.single_sends) == 1  # nothing was created again
