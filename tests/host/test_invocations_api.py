"""``GET /api/v1/tenants/{t}/invocations``: newest first, filters, keyset pagination, the
item shape of a real sandboxed call, and tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.db.models import Invocation
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host
from tests.sandbox.http_servers import LocalHTTPServer, RequestHandler

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
URL = "/api/v1/tenants/{}/invocations"

LOGGING_SCRIPT = """\
def CRM_Marketing_GetCampaignStats(campaignExternalId):
    print("stats for", campaignExternalId, "with", settings["api_key"])
    return {"total": 1}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    x = 1
    raise ValueError("no template " + templateExternalId)
"""


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    yield instance
    instance.close()


@pytest.fixture
def keys(host: Host) -> dict[str, str]:
    return {t: host.tenants.create(t, t.title())[1] for t in ("acme", "globex")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed(host: Host) -> None:
    """20 calls of acme, one a minute from T0, in a scrambled insertion order (rows are
    written when calls end), plus 3 of globex."""
    rows = []
    for minute in [*range(10, 20), *range(0, 10)]:
        rows.append(
            Invocation(
                tenant_id="acme",
                module_id="sendgrid" if minute % 2 else "mailchimp",
                version="1.0.0",
                function="CRM_Marketing_ImportTemplates"
                if minute % 3
                else "CRM_Marketing_GetCampaignStats",
                started_at=T0 + timedelta(minutes=minute),
                duration_ms=1.5,
                outcome="timeout" if minute == 7 else "ok",
                error="took too long" if minute == 7 else None,
                fetches=[],
            )
        )
    for minute in range(3):
        rows.append(
            Invocation(
                tenant_id="globex",
                module_id="sendgrid",
                version="1.0.0",
                function="CRM_Marketing_ImportTemplates",
                started_at=T0 + timedelta(minutes=minute),
                duration_ms=1.0,
                outcome="ok",
                fetches=[],
            )
        )
    with host.db.transaction() as session:
        session.add_all(rows)


def minutes(items: list[dict[str, Any]]) -> list[int]:
    return [int((datetime.fromisoformat(i["startedAt"]) - T0).total_seconds() // 60) for i in items]


def test_newest_first_and_keyset_pages(
    host: Host, client: TestClient, keys: dict[str, str]
) -> None:
    seed(host)
    me = bearer(keys["acme"])
    seen: list[int] = []
    before = None
    pages = 0
    while True:
        params = {"limit": 7} | ({"before": before} if before else {})
        page = client.get(URL.format("acme"), headers=me, params=params)
        assert page.status_code == 200, page.text
        seen += minutes(page.json()["items"])
        pages += 1
        before = page.json()["nextBefore"]
        if before is None:
            break
    assert seen == list(range(19, -1, -1))
    assert pages == 3


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"module": "sendgrid"}, [m for m in range(19, -1, -1) if m % 2]),
        ({"function": "GetCampaignStats"}, [18, 15, 12, 9, 6, 3, 0]),
        ({"function": "CRM_Marketing_GetCampaignStats", "module": "mailchimp"}, [18, 12, 6, 0]),
        ({"outcome": "timeout"}, [7]),
        ({"since": "2030-01-01T12:15:00Z"}, [19, 18, 17, 16, 15]),
        ({"until": "2030-01-01T12:02:00+00:00"}, [1, 0]),
        ({"since": "2030-01-01T12:05:00", "until": "2030-01-01T12:08:00"}, [7, 6, 5]),
        ({"module": "nothing"}, []),
    ],
)
def test_filters(
    host: Host,
    client: TestClient,
    keys: dict[str, str],
    params: dict[str, Any],
    expected: list[int],
) -> None:
    seed(host)
    page = client.get(URL.format("acme"), headers=bearer(keys["acme"]), params=params)
    assert page.status_code == 200, page.text
    assert minutes(page.json()["items"]) == expected


def test_bad_queries(host: Host, client: TestClient, keys: dict[str, str]) -> None:
    seed(host)
    me = bearer(keys["acme"])
    for params in ({"limit": 501}, {"limit": 0}, {"since": "yesterday"}, {"before": "x"}):
        assert client.get(URL.format("acme"), headers=me, params=params).status_code == 422
    globex_id = client.get(URL.format("globex"), headers=bearer(ADMIN_TOKEN)).json()["items"][0]
    foreign = client.get(URL.format("acme"), headers=me, params={"before": globex_id["id"]})
    assert foreign.status_code == 422  # another tenant's id is not a cursor here


def test_a_tenant_sees_only_its_own_calls(
    host: Host, client: TestClient, keys: dict[str, str]
) -> None:
    seed(host)
    assert client.get(URL.format("acme"), headers=bearer(keys["globex"])).status_code == 403
    own = client.get(URL.format("globex"), headers=bearer(keys["globex"])).json()
    assert len(own["items"]) == 3
    assert client.get(URL.format("acme"), headers=bearer(ADMIN_TOKEN)).status_code == 200
    assert client.get(URL.format("nobody"), headers=bearer(ADMIN_TOKEN)).status_code == 404


def test_items_of_real_calls(host: Host, client: TestClient, keys: dict[str, str]) -> None:
    secret = "SG.invocations-secret-42"
    host.registry.upload(
        from_json_body(
            {"manifest": email_manifest(id="logger"), "script": LOGGING_SCRIPT},
            max_script_bytes=64 * 1024,
        )
    )
    host.tenants.configure("acme", "logger", settings={"api_key": secret})
    host.invoker.call("acme", "logger", "CRM_Marketing_GetCampaignStats", campaignExternalId="c9")
    with pytest.raises(Exception, match="no template t1"):
        host.invoker.call(
            "acme", "logger", "CRM_Marketing_GetTemplateHTML", templateExternalId="t1"
        )
    answer = client.get(URL.format("acme"), headers=bearer(keys["acme"]))
    failed, ok = answer.json()["items"]
    assert secret not in answer.text
    assert set(ok) == {
        "id", "module", "version", "function", "startedAt", "durationMs", "outcome", "error",
        "errorLine", "log", "fetches", "cpuMs", "peakMemoryKb", "requestId",
    }  # fmt: skip
    assert ok["requestId"] is None  # called outside any HTTP request
    assert (ok["module"], ok["version"], ok["outcome"]) == ("logger", "1.0.0", "ok")
    assert ok["log"].strip() == "stats for c9 with ***"
    assert ok["fetches"] == []
    assert ok["cpuMs"] is not None and ok["durationMs"] > 0
    assert (failed["outcome"], failed["errorLine"]) == ("script_error", 8)
    assert "no template t1" in failed["error"]


FETCHING_SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    base = settings["base_url"] + "/v1/" + settings["api_key"]
    fetch(base + "/templates?offset=" + str(offset) + "&key=" + settings["api_key"])
    return []
"""


def test_the_fetch_log_keeps_full_urls_with_secrets_masked(
    tmp_path: Path, pool: SandboxPool
) -> None:
    """Through the HTTP template import: each fetch of the call is in the invocation log with
    method, full URL (the key masked in path and query), status, duration and bytes."""
    secret = "SG.fetch-log-secret-99"
    with LocalHTTPServer() as service:

        @service.route(f"/v1/{secret}/templates")
        def templates(req: RequestHandler) -> None:
            req.reply(200, b"[]", {"Content-Type": "application/json"})

        host = make_host(tmp_path / "host.db", sandbox=pool, egress_allow=["127.0.0.1"])
        try:
            manifest = email_manifest(id="fetcher", egress=[f"127.0.0.1:{service.port}"])
            manifest["settings"]["properties"]["base_url"] = {"type": "string"}
            host.registry.upload(
                from_json_body(
                    {"manifest": manifest, "script": FETCHING_SCRIPT}, max_script_bytes=10**5
                )
            )
            _, key = host.tenants.create("acme", "Acme")
            host.tenants.configure(
                "acme", "fetcher", settings={"api_key": secret, "base_url": service.url("")}
            )
            with TestClient(create_app(host)) as client:
                imported = client.post(
                    "/api/v1/tenants/acme/modules/fetcher/templates/import", headers=bearer(key)
                )
                assert imported.status_code == 200, imported.text
                answer = client.get(URL.format("acme"), headers=bearer(key))
        finally:
            host.close()
    assert [s.path for s in service.seen] == [f"/v1/{secret}/templates?offset=0&key={secret}"]
    assert secret not in answer.text
    (item,) = answer.json()["items"]
    (logged,) = item["fetches"]
    assert logged["method"] == "GET"
    assert logged["url"] == service.url("/v1/***/templates?offset=0&key=***")
    assert (logged["status"], logged["bytes"], logged["error"]) == (200, 2, None)
    assert logged["ms"] >= 0
