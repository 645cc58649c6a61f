"""``GET /metrics`` of the real ``crm-host serve``, scraped after real traffic — a webhook, a
template import that fetches a local service, a failing call, a campaign — with the values
asserted; the request id of each request followed into the invocation log and the JSON log
lines; and the endpoint refused without its credential."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import RunningHost, running_host
from tests.host.conftest import email_manifest
from tests.sandbox.http_servers import LocalHTTPServer, RequestHandler

METRICS_TOKEN = "metrics-scrape-token-4Kd9Qz"
SECRET = "SG.metrics-e2e-secret-9f1c"

SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    fetch(settings["base_url"] + "/ok?key=" + settings["api_key"])
    fetch(settings["base_url"] + "/limited")
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "svc-" + request["campaignId"][:6], "status": "Sending"}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    print("webhook with", settings["api_key"])
    if "boom" in request.body:
        raise ValueError("cannot parse " + settings["api_key"])
    return {"response": {"status": 202, "body": "thanks"}}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise ValueError("no such template")


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""

SETTINGS = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "writeOnly": True},
        "base_url": {"type": "string"},
    },
    "required": ["api_key"],
}
CAMPAIGN = {
    "module": "observed",
    "name": "Launch",
    "type": "Email",
    "subject": "We launched",
    "senderName": "Acme",
    "senderEmail": "news@acme.test",
    "html": "<p>Hello</p>",
    "contactIds": "all",
    "batchSize": 2,
}


@pytest.fixture(scope="module")
def service() -> Iterator[LocalHTTPServer]:
    """The module's service: 200 on /ok, 429 on /limited."""
    server = LocalHTTPServer()

    @server.route("/ok")
    def ok(handler: RequestHandler) -> None:
        handler.reply(200, b"{}")

    @server.route("/limited")
    def limited(handler: RequestHandler) -> None:
        handler.reply(429, b"slow down")

    with server:
        yield server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, service: LocalHTTPServer
) -> Iterator[RunningHost]:
    workdir = tmp_path_factory.mktemp("metrics")
    with running_host(
        workdir,
        CRM_HOST_LOG_FORMAT="json",
        CRM_HOST_METRICS_TOKEN=METRICS_TOKEN,
        CRM_HOST_EGRESS_ALLOW=f"127.0.0.1:{service.port}",
    ) as server:
        yield server


def scrape(server: RunningHost) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_metrics_after_real_traffic(served: RunningHost, service: LocalHTTPServer) -> None:
    egress = f"127.0.0.1:{service.port}"
    with served.client() as admin:
        package = {
            "manifest": email_manifest(id="observed", settings=SETTINGS, egress=[egress]),
            "script": SCRIPT,
        }
        assert admin.post("/api/v1/modules", json=package).status_code == 201
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).status_code == 201
        enabled = admin.put(
            "/api/v1/tenants/acme/modules/observed",
            json={"settings": {"api_key": SECRET, "base_url": service.url("/").rstrip("/")}},
        )
        assert enabled.status_code == 200, enabled.text
        hook = enabled.json()["webhookUrl"].split(served.url, 1)[1]
        contacts = [{"name": f"C{i}", "email": f"c{i}@acme.test"} for i in range(5)]
        assert admin.post("/api/v1/tenants/acme/contacts", json=contacts).is_success
        before = scrape(served)

        for _ in range(2):
            assert httpx.post(served.url + hook, json={"events": []}).status_code == 202
        assert httpx.post(served.url + hook, content=b"boom").status_code == 500
        imported = admin.post("/api/v1/tenants/acme/modules/observed/templates/import")
        assert imported.status_code == 200, imported.text
        campaign = admin.post("/api/v1/tenants/acme/campaigns", json=CAMPAIGN)
        assert campaign.status_code == 202, campaign.text
        url = f"/api/v1/tenants/acme/campaigns/{campaign.json()['id']}"
        wait_until(lambda: admin.get(url).json()["externalId"] is not None)
    after = scrape(served)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "crm_host_invocations_total"
    ok = {"module": "observed", "outcome": "ok", "kind": "none"}
    assert grew(calls, function="CRM_Marketing_ParseWebhookRequest", **ok) == 2
    assert grew(calls, function="CRM_Marketing_ImportTemplates", **ok) == 1
    assert grew(calls, function="CRM_Marketing_PrepareCampaign", **ok) == 3  # 5 in batches of 2
    assert grew(calls, function="CRM_Marketing_CreateCampaign", **ok) == 1
    failed = {"module": "observed", "outcome": "failed", "kind": "script_error"}
    assert grew(calls, function="CRM_Marketing_ParseWebhookRequest", **failed) == 1
    webhook_seconds = "crm_host_invocation_duration_seconds_count"
    assert grew(webhook_seconds, function="CRM_Marketing_ParseWebhookRequest", outcome="ok") == 2
    assert grew("crm_host_webhook_receipts_total", status="202") == 2
    assert grew("crm_host_webhook_receipts_total", status="500") == 1
    assert grew("crm_host_fetches_total", host="127.0.0.1", status="200") == 1
    assert grew("crm_host_fetches_total", host="127.0.0.1", status="429") == 1
    assert grew("crm_host_campaign_status_changes_total", status="Sending") == 1
    assert value(after, "crm_host_sandbox_pool_size") >= 1
    assert value(after, "crm_host_sandbox_workers", state="busy") == 0
    assert value(after, "crm_host_database_up") == 1
    # the campaign's job is over: nothing left in the queue
    assert value(after, "crm_host_campaign_jobs", state="running") == 0
    assert value(after, "crm_host_campaign_jobs", state="waiting") == 0
    text = httpx.get(
        served.url + "/metrics", headers={"Authorization": f"Bearer {served.admin_token}"}
    ).text
    assert SECRET not in text and "acme" not in text  # no tenant, no secret in any label


def test_the_request_id_is_followed_into_the_invocation_log_and_json_logs(
    served: RunningHost,
) -> None:
    with served.client() as admin:
        sent = admin.post(
            "/api/v1/tenants/acme/modules/observed/templates/import",
            headers={"X-Request-ID": "req-e2e-0001"},
        )
        assert sent.status_code == 200, sent.text
        assert sent.headers["X-Request-ID"] == "req-e2e-0001"
        generated = admin.get("/api/v1/modules", headers={"X-Request-ID": "has spaces"})
        assert generated.headers["X-Request-ID"] != "has spaces"
        assert len(generated.headers["X-Request-ID"]) == 32
        page = admin.get(
            "/api/v1/tenants/acme/invocations", params={"requestId": "req-e2e-0001"}
        ).json()
    assert [(i["function"], i["requestId"]) for i in page["items"]] == [
        ("CRM_Marketing_ImportTemplates", "req-e2e-0001")
    ]
    wait_until(lambda: "req-e2e-0001" in served.output())
    entries = [json.loads(line) for line in served.output().splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("request_id") == "req-e2e-0001"]
    assert any(e["logger"] == "uvicorn.access" and "templates/import" in e["message"] for e in mine)
    assert SECRET not in served.output()


def test_the_metrics_refuse_without_their_credential(served: RunningHost) -> None:
    with served.client() as admin:
        tenant_key = admin.post("/api/v1/tenants", json={"id": "globex", "name": "Globex"}).json()[
            "apiKey"
        ]
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {tenant_key}"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
    ):
        refused = httpx.get(served.url + "/metrics", headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["error"] == "unauthorized"
        assert "crm_host_" not in refused.text
    # the metrics token opens /metrics only, not the API
    api = httpx.get(
        served.url + "/api/v1/modules", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert api.status_code == 401
    assert httpx.get(served.url + "/healthz").status_code == 200  # still serving
