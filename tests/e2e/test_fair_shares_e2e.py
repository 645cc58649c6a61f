"""Fair shares end to end, on the real ``crm-host serve``: tenant A's service floods A's
webhook URL with calls whose module sleeps for seconds. A gets 503 with ``Retry-After``
instead of queueing without bound, while tenant B's webhook, ``/healthz``, the admin API and
B's tenant API are answered before A's flood is over; A's own API call that needs the
sandbox gets 429, and a campaign A launched during the flood waits for A's share and
completes instead of failing. Only liveness bounds: "answered while the flood still runs"."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.server import RunningHost, running_host
from tests.host.conftest import email_manifest

NAP_S = 4.9
"""How long A's module sleeps per webhook (just under the sandbox's 5 s sleep budget): the
checks below run inside it."""

FLOOD = 12

SCRIPT = """\
import time


def CRM_Marketing_ImportTemplates(offset, limit):
    return [{"externalId": "t1", "name": "Welcome"}]


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "svc-" + request["campaignId"]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {}


def CRM_Marketing_ParseWebhookRequest(request):
    time.sleep(settings["nap"])
    return {"actions": []}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""

MANIFEST = email_manifest(
    id="napper",
    settings={"type": "object", "properties": {"nap": {"type": "number"}}},
    limits={"timeout_s": 10},
)

CAMPAIGN = {
    "module": "napper",
    "name": "During the flood",
    "type": "Email",
    "subject": "Hi",
    "senderName": "A",
    "senderEmail": "news@a.test",
    "html": "<p>Hi</p>",
    "contactIds": "all",
}


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def set_up(server: RunningHost) -> dict[str, dict[str, str]]:
    """Tenants a (module sleeps NAP_S) and b (answers at once): webhook URL and API key."""
    tenants: dict[str, dict[str, str]] = {}
    with server.client() as admin:
        uploaded = admin.post("/api/v1/modules", json={"manifest": MANIFEST, "script": SCRIPT})
        assert uploaded.status_code == 201, uploaded.text
        for tenant, nap in (("alpha", NAP_S), ("beta", 0)):
            created = admin.post("/api/v1/tenants", json={"id": tenant, "name": tenant.upper()})
            assert created.status_code == 201, created.text
            enabled = admin.put(
                f"/api/v1/tenants/{tenant}/modules/napper", json={"settings": {"nap": nap}}
            )
            assert enabled.status_code == 200, enabled.text
            tenants[tenant] = {
                "hook": enabled.json()["webhookUrl"],
                "key": created.json()["apiKey"],
            }
        contact = admin.post(
            "/api/v1/tenants/alpha/contacts", json=[{"name": "Ann", "email": "ann@a.test"}]
        )
        assert contact.is_success, contact.text
    return tenants


def test_a_flood_of_sleeping_webhooks_is_refused_while_everyone_else_is_served(
    tmp_path: Path,
) -> None:
    with running_host(tmp_path, CRM_HOST_SANDBOX_WAIT_S="0.5") as server:
        tenants = set_up(server)
        with ThreadPoolExecutor(FLOOD) as senders:
            flood: list[Future[httpx.Response]] = [
                senders.submit(httpx.post, tenants["alpha"]["hook"], json=[], timeout=60)
                for _ in range(FLOOD)
            ]
            # all but the one call that got A's sandbox slot are answered quickly
            wait_until(lambda: sum(f.done() for f in flood) >= FLOOD - 1)
            refused = [f.result() for f in flood if f.done()]

            with server.client(tenants["alpha"]["key"]) as tenant_a:
                a_import = tenant_a.post("/api/v1/tenants/alpha/modules/napper/templates/import")
            other = httpx.post(tenants["beta"]["hook"], json=[], timeout=30)
            health = httpx.get(server.url + "/healthz", timeout=30)
            with server.client() as admin:
                tenant_list = admin.get("/api/v1/tenants")
                campaign = admin.post("/api/v1/tenants/alpha/campaigns", json=CAMPAIGN)
            with server.client(tenants["beta"]["key"]) as tenant_b:
                b_import = tenant_b.post("/api/v1/tenants/beta/modules/napper/templates/import")
            flood_still_running = not all(f.done() for f in flood)
            served = [f.result() for f in flood]

        assert flood_still_running, "the checks ran after the flood: nothing was proven"
        assert other.status_code == 200, other.text
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert tenant_list.status_code == 200 and {t["id"] for t in tenant_list.json()} == {
            "alpha",
            "beta",
        }
        assert b_import.status_code == 200, b_import.text
        assert b_import.json()["imported"] == 1

        assert len(refused) == FLOOD - 1
        for response in refused:
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"] == "busy"
        assert sorted(r.status_code for r in served) == [200] + [503] * (FLOOD - 1)

        assert a_import.status_code == 429, a_import.text
        assert int(a_import.headers["retry-after"]) >= 1
        assert a_import.json()["error"] == "busy"

        assert campaign.status_code == 202, campaign.text
        with server.client() as admin:
            url = f"/api/v1/tenants/alpha/campaigns/{campaign.json()['id']}"
            wait_until(lambda: admin.get(url).json()["externalId"] is not None)
            shown = admin.get(url).json()
            assert shown["status"] == "Sending" and shown["error"] is None, shown

            # refused calls never ran, so they are not invocations: one webhook ran for A
            log = admin.get("/api/v1/tenants/alpha/invocations").json()["items"]
            parsed = [i for i in log if i["function"] == "CRM_Marketing_ParseWebhookRequest"]
            assert [i["outcome"] for i in parsed] == ["ok"]
            assert not [i for i in log if i["function"] == "CRM_Marketing_ImportTemplates"]
            assert admin.get("/api/v1/tenants/alpha/templates").json() == []
        assert server.process.poll() is None
