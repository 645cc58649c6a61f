"""``GET /metrics`` in process: each Host has its own registry (two hosts in one process count
apart), the database gauges show a queued campaign job, the sandbox gauges never start a
pool, an unreadable database is reported rather than failing the scrape; and request ids:
accepted when sane, replaced otherwise, echoed on every answer, stored on the call's row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from host.api.app import create_app
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host
from tests.host.test_campaign_job import RECORDING_SCRIPT, SETTINGS_SCHEMA, add_contacts, draft

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    body = {
        "manifest": email_manifest(id="rec", settings=SETTINGS_SCHEMA),
        "script": RECORDING_SCRIPT,
    }
    instance.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    instance.tenants.create("acme", "Acme")
    instance.tenants.configure("acme", "rec", settings={})
    yield instance
    instance.close()


def test_a_queued_campaign_job_is_in_the_gauges(host: Host) -> None:
    add_contacts(host, 3)
    host.campaigns.create("acme", draft(batchSize=2))  # the host is not started: it waits
    client = TestClient(create_app(host))  # no lifespan: no job thread takes it
    found = samples(client.get("/metrics", headers=ADMIN).text)
    assert value(found, "crm_host_campaigns_active", stage="queued", status="Draft") == 1
    assert value(found, "crm_host_campaign_jobs", state="waiting") == 1
    assert value(found, "crm_host_campaign_jobs", state="running") == 0
    assert value(found, "crm_host_campaign_batches_done", stage="queued") == 0
    assert value(found, "crm_host_outbox_messages", status="queued") == 0
    assert value(found, "crm_host_database_up") == 1


def test_two_hosts_in_one_process_count_apart(tmp_path: Path, pool: SandboxPool) -> None:
    first = make_host(tmp_path / "a.db", sandbox=pool)
    second = make_host(tmp_path / "b.db", sandbox=pool)
    try:
        first.metrics.count_receipt(200)
        first.metrics.count_receipt(200)
        second.metrics.count_receipt(500)
        a = samples(first.metrics.exposition().decode())
        b = samples(second.metrics.exposition().decode())
    finally:
        first.close()
        second.close()
    assert value(a, "crm_host_webhook_receipts_total", status="200") == 2
    assert value(a, "crm_host_webhook_receipts_total", status="500") is None
    assert value(b, "crm_host_webhook_receipts_total", status="500") == 1
    assert value(b, "crm_host_webhook_receipts_total", status="200") is None


def test_a_scrape_never_starts_the_sandbox_pool(tmp_path: Path) -> None:
    host = make_host(tmp_path / "host.db")  # owns its pool, started on first use
    try:
        found = samples(host.metrics.exposition().decode())
        assert host.started_sandbox() is None
        assert value(found, "crm_host_sandbox_pool_size") is None
        assert value(found, "crm_host_sandbox_admitted", share="tenants") == 0
    finally:
        host.close()


def test_an_unreadable_database_is_reported_not_raised(host: Host) -> None:
    client = TestClient(create_app(host))
    with host.db.transaction() as session:
        session.connection().exec_driver_sql("DROP TABLE outbox")
    answer = client.get("/metrics", headers=ADMIN)
    assert answer.status_code == 200
    found = samples(answer.text)
    assert value(found, "crm_host_database_up") == 0
    assert value(found, "crm_host_invocations_total") is None  # nothing called: no series
    assert client.get("/healthz").status_code == 200


def test_request_ids_are_accepted_replaced_and_echoed(host: Host) -> None:
    with TestClient(create_app(host)) as client:
        mine = client.post(
            "/api/v1/tenants/acme/modules/rec/templates/import",
            headers={**ADMIN, "X-Request-ID": "lb-3f2a:77.x_y-z"},
        )
        assert mine.status_code == 200, mine.text
        assert mine.headers["X-Request-ID"] == "lb-3f2a:77.x_y-z"
        for bad in ("x" * 129, "two words", "", "ünïcode"):
            answer = client.get("/healthz", headers={"X-Request-ID": bad.encode()})
            assert answer.headers["X-Request-ID"] != bad
            assert len(answer.headers["X-Request-ID"]) == 32
        refused = client.get("/api/v1/modules")  # an error answer carries one too
        assert refused.status_code == 401 and len(refused.headers["X-Request-ID"]) == 32
        calls = client.get("/api/v1/tenants/acme/invocations", headers=ADMIN).json()["items"]
        filtered = client.get(
            "/api/v1/tenants/acme/invocations",
            params={"requestId": "lb-3f2a:77.x_y-z"},
            headers=ADMIN,
        ).json()["items"]
        too_long = client.get(
            "/api/v1/tenants/acme/invocations", params={"requestId": "x" * 129}, headers=ADMIN
        )
    assert [c["requestId"] for c in calls] == ["lb-3f2a:77.x_y-z"]
    assert filtered == calls
    assert too_long.status_code == 422 and "requestId" in too_long.text


@pytest.mark.parametrize("public", [False, True])
def test_the_metrics_are_open_without_a_token_only_when_configured_so(
    db_path: Path, pool: SandboxPool, public: bool
) -> None:
    host = make_host(db_path, sandbox=pool, metrics_public=public)
    try:
        client = TestClient(create_app(host))
        answer = client.get("/metrics")
        assert answer.status_code == (200 if public else 401), answer.text
        assert ("crm_host_database_up" in answer.text) is public
        # opening the metrics opens nothing else
        assert client.get("/api/v1/modules").status_code == 401
    finally:
        host.close()
