"""Several nodes on one PostgreSQL database, end to end (issue 14): two web-only
``crm-host serve`` nodes and two ``crm-host worker`` processes send a 20,000-contact campaign
with the SendGrid example module to the SendGrid emulator. The worker running the job is
SIGKILLed in the middle of a PrepareCampaign batch the service already applied, and the other
worker finishes the campaign. SendGrid's signed Event Webhook batches for every recipient are
then posted alternately to the two serve nodes, two at a time, and some again to the other
node, and every count is checked: deliveries per status on both nodes, the contacts the
events unsubscribed, bounced or marked complained, each recipient prepared once per batch
except the one batch in flight at the kill, one single send in the service, the same stats
on both nodes, and each webhook batch applied once.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.runner import RunningServer, serve
from emulators.sendgrid import SendGridState, create_app
from tests.e2e.cluster import HostCluster, Worker, host_cluster
from tests.e2e.emulator_gate import Gate, Hold
from tests.e2e.test_campaign_e2e import CAMPAIGN, wait_until
from tests.e2e.test_crash_windows_e2e import module_settings, package
from tests.postgres import Cluster as Postgres

CONTACTS = 20_000
BATCH = 1_000
EVENTS_PER_POST = 500
REPLAY_EVERY = 10
"""Every 10th webhook batch is posted a second time, to the other serve node."""

OUTCOME_OF_RESIDUE = {0: "bounce", 1: "dropped", 2: "unsubscribe", 3: "spamreport"}
OUTCOME_OF_RESIDUE |= dict.fromkeys((4, 5, 6), "open") | dict.fromkeys((7, 8), "click")
"""Recipient ``i`` meets ``OUTCOME_OF_RESIDUE[i % 50]`` (others: delivered)."""
DELIVERY_STATUS = {
    "delivered": "Delivered",
    "open": "Opened",
    "click": "Clicked",
    "bounce": "Bounced",
    "dropped": "Failed",
    "unsubscribe": "Unsubscribed",
    "spamreport": "Complained",
}
"""The delivery status each outcome's events end at (the highest rank they reach)."""
SUBSCRIBER_STATUS = {"bounce": "Bounced", "unsubscribe": "Unsubscribed", "spamreport": "Complained"}
"""What an outcome makes of the contact (the default suppression policy); others stay."""


def email(i: int) -> str:
    return f"u{i:05d}@example.test"


def outcome(i: int) -> str:
    return OUTCOME_OF_RESIDUE.get(i % 50, "delivered")


@dataclass
class CountingSendGrid(SendGridState):
    """The emulated account, also keeping who each contacts upsert named and into which
    lists: the campaign's list gets one upsert per PrepareCampaign call."""

    upserts: list[tuple[list[str], list[str]]] = field(default_factory=list)

    def upsert_contacts(self, contacts: Any, list_ids: Any) -> str:
        job = super().upsert_contacts(contacts, list_ids)
        emails = [str(c.get("email", "")).lower() for c in contacts if isinstance(c, dict)]
        with self.lock:
            self.upserts.append((list(list_ids or []), emails))
        return job


def set_up(cluster: HostCluster, state: CountingSendGrid, emulator: RunningServer) -> str:
    """The module, tenant ``acme`` with it enabled (signed webhooks required) and the
    contacts, through the first node's API; the webhook URL's path."""
    with cluster.nodes[0].client() as admin:
        body = package(emulator, idempotent=True)
        uploaded = admin.post("/api/v1/modules", json=body)
        assert uploaded.status_code == 201, uploaded.text
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).is_success
        settings = {**module_settings(emulator), "webhook_public_key": state.public_key()}
        enabled = admin.put("/api/v1/tenants/acme/modules/sendgrid", json={"settings": settings})
        assert enabled.status_code == 200, enabled.text
        contacts = [
            {"id": f"c{i:05d}", "name": f"C {i}", "email": email(i)} for i in range(CONTACTS)
        ]
        for start in range(0, CONTACTS, 5_000):
            added = admin.post("/api/v1/tenants/acme/contacts", json=contacts[start:][:5_000])
            assert added.is_success, added.text
    state.signed = True
    return str(enabled.json()["webhookUrl"]).removeprefix(cluster.nodes[0].url)


def queue_campaign(cluster: HostCluster) -> str:
    with cluster.nodes[1].client() as admin:
        created = admin.post(
            "/api/v1/tenants/acme/campaigns",
            json={**CAMPAIGN, "module": "sendgrid", "batchSize": BATCH},
        )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def post_webhooks(
    cluster: HostCluster, state: CountingSendGrid, hook_path: str, events: list[dict[str, Any]]
) -> tuple[int, int]:
    """Post ``events`` in batches, batch ``k`` to serve node ``k % 2``, two at a time; then
    every REPLAY_EVERY-th batch again, to the other node. (batches, replays) posted."""
    batches = [events[i : i + EVENTS_PER_POST] for i in range(0, len(events), EVENTS_PER_POST)]
    nodes = cluster.nodes

    def post(node_index: int, batch: list[dict[str, Any]]) -> int:
        body, headers = state.webhook_request(batch)
        url = nodes[node_index % len(nodes)].url + hook_path
        return httpx.post(url, content=body, headers=headers, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=2) as posters:
        statuses = list(posters.map(post, range(len(batches)), batches))
    assert statuses == [200] * len(batches)
    replayed = batches[::REPLAY_EVERY]
    again = [post(k * REPLAY_EVERY + 1, batch) for k, batch in enumerate(replayed)]
    assert again == [200] * len(replayed)
    return len(batches), len(replayed)


@pytest.mark.timeout(900)  # 4 processes, 20,000 recipients, ~90 webhook batches
def test_two_web_nodes_and_two_workers_send_20000_and_apply_each_webhook_once(
    tmp_path: Path, postgres_cluster: Postgres
) -> None:
    state = CountingSendGrid()
    gate = Gate(create_app(state))
    with (
        serve(gate) as emulator,
        host_cluster(
            tmp_path,
            postgres_cluster,
            CRM_HOST_EGRESS_ALLOW=emulator.netloc,
            CRM_HOST_SERVE_RUNS_JOBS="false",
        ) as cluster,
    ):
        cluster.serve(wait=False)
        cluster.serve(wait=False)
        workers = [cluster.worker(), cluster.worker()]
        cluster.ready()
        hook_path = set_up(cluster, state, emulator)

        # hold the 8th PrepareCampaign batch (after 20 export chunks) once SendGrid applied it
        hold = Hold("PUT", "/v3/marketing/contacts", nth=CONTACTS // BATCH + 8, applied=True)
        gate.hold = hold
        campaign_id = queue_campaign(cluster)
        try:
            assert hold.arrived.wait(300), "the 8th batch never reached the service"
            holder, owner = cluster.holder(campaign_id), cluster.lease_owner(campaign_id)
            assert isinstance(holder, Worker) and owner is not None  # web nodes run no job
            (batches_done,) = cluster.query(
                "SELECT batches_done FROM campaigns WHERE id = :id", id=campaign_id
            )[0]
            assert batches_done == 7
            cluster.kill(holder)
        finally:
            hold.release.set()
            gate.hold = None
        (other,) = [w for w in workers if w is not holder]
        assert cluster.taken_over(campaign_id, owner, timeout=120) is other

        url = f"/api/v1/tenants/acme/campaigns/{campaign_id}"
        with cluster.nodes[0].client() as admin:
            wait_until(lambda: admin.get(url).json()["progress"]["stage"] == "done", 600)
            shown = admin.get(url).json()
        assert shown["status"] == "Sending" and shown["attention"] is None
        assert shown["progress"]["batches"] == CONTACTS // BATCH

        # the service: one single send, to the campaign's list, which holds everyone once
        category = f"crm-campaign-{campaign_id}"
        (single,) = [s for s in state.single_sends.values() if category in s["categories"]]
        assert shown["externalId"] == single["id"] and single["status"] == "scheduled"
        (list_id,) = single["send_to"]["list_ids"]
        everyone = {email(i) for i in range(CONTACTS)}
        members = [c["email"] for c in state.contacts.values() if list_id in c["list_ids"]]
        assert len(members) == CONTACTS and set(members) == everyone
        # each recipient was prepared once, but the batch in flight at the kill twice
        prepared = [emails for lists, emails in state.upserts if lists == [list_id]]
        assert len(prepared) == CONTACTS // BATCH + 1
        times = Counter(e for emails in prepared for e in emails)
        assert set(times) == everyone
        assert Counter(times.values()) == {1: CONTACTS - BATCH, 2: BATCH}
        assert set(prepared[7]) == set(prepared[8])  # the 8th batch, sent again

        outcomes = {email(i): outcome(i) for i in range(CONTACTS)}
        events = state.deliver(single["id"], outcomes, post=False)
        posted, replays = post_webhooks(cluster, state, hook_path, events)

        expected = Counter(DELIVERY_STATUS[o] for o in outcomes.values())
        rows = cluster.query(
            "SELECT status, COUNT(*) FROM deliveries WHERE campaign_id = :id GROUP BY status",
            id=campaign_id,
        )
        assert dict(rows) == expected  # type: ignore[arg-type]
        # what the events did to the contacts (unsubscribes, complaints, hard bounces)
        subscribers = cluster.query("SELECT status, COUNT(*) FROM contacts GROUP BY status")
        moved = Counter(SUBSCRIBER_STATUS.get(o, "Subscribed") for o in outcomes.values())
        assert dict(subscribers) == moved  # type: ignore[arg-type]
        views = []
        for node in cluster.nodes:
            with node.client() as admin:
                for status, count in expected.items():
                    if count <= 1000:  # one page of the deliveries API
                        page = admin.get(
                            url + "/deliveries", params={"status": status, "limit": 1000}
                        ).json()
                        assert len(page["items"]) == count and page["next"] is None, status
                stats = admin.get(url + "/stats", params={"refresh": node is cluster.nodes[0]})
                assert stats.status_code == 200, stats.text
                receipts = admin.get("/api/v1/tenants/acme/webhooks/receipts?limit=1000")
                views.append((admin.get(url).json(), stats.json(), receipts.json()))
        (first, first_stats, receipts), (second, second_stats, _) = views
        assert first == second and first["status"] == "Sent"
        assert first_stats == second_stats and first_stats["values"]["delivered"] > 0

        # every batch answered and recorded once; a batch posted again applied nothing
        assert len(receipts) == posted + replays
        assert {r["status"] for r in receipts} == {200}
        assert all(r["applied"] == 0 for r in receipts[:replays])  # newest first
        assert all(r["applied"] > 0 for r in receipts[replays:])
        for node in cluster.running():
            assert "Traceback" not in node.output(), node.output()
