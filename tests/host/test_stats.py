"""Campaign stats: cached for the TTL, the last value served stale on a module error, the
error itself when nothing was ever fetched; embedded in ``GET campaign``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from host.api.app import create_app
from host.db.models import Campaign, Invocation
from host.errors import Conflict, ModuleCallFailed
from host.marketing.stats import StatsService
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host
from tests.host.test_campaign_job import RECORDING_SCRIPT

STATS_SCRIPT = RECORDING_SCRIPT.replace(
    """def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}""",
    """def CRM_Marketing_GetCampaignStats(campaignExternalId):
    if settings.get("stats_down"):
        raise ConnectionError("stats service is down")
    calls = (storage.get("stats_calls") or 0) + 1
    storage.set("stats_calls", calls)
    return {"total": 100, "sent": 100, "opened": calls}""",
)

SETTINGS = {"type": "object", "properties": {"stats_down": {"type": "boolean"}}}


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    body = {"manifest": email_manifest(id="rec", settings=SETTINGS), "script": STATS_SCRIPT}
    instance.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    instance.tenants.create("acme", "Acme")
    instance.tenants.configure("acme", "rec", settings={})
    yield instance
    instance.close()


def sent_campaign(host: Host, campaign_id: str = "cmp1", external_id: str | None = "ext-1") -> str:
    with host.db.transaction() as session:
        session.add(
            Campaign(
                id=campaign_id,
                tenant_id="acme",
                module_id="rec",
                module_version="1.0.0",
                type="Email",
                name="Sale",
                request={},
                audience={"all": True},
                status="Sending" if external_id else "Draft",
                stage="done" if external_id else "queued",
                external_id=external_id,
            )
        )
    return campaign_id


def stats_down(host: Host, down: bool) -> None:
    host.tenants.configure("acme", "rec", settings={"stats_down": down})


def test_cached_for_the_ttl(host: Host) -> None:
    stats = StatsService(host.db, host.invoker, ttl_seconds=60)
    cid = sent_campaign(host)
    first = stats.get("acme", cid)
    assert first.values["opened"] == 1 and first.stale is False
    assert first.fetched_at is not None and first.error is None
    assert stats.get("acme", cid) == first  # within the TTL: no module call
    assert stats.get("acme", cid, refresh=True).values["opened"] == 2


def test_expired_ttl_fetches_again(host: Host) -> None:
    stats = StatsService(host.db, host.invoker, ttl_seconds=0)
    cid = sent_campaign(host)
    assert stats.get("acme", cid).values["opened"] == 1
    assert stats.get("acme", cid).values["opened"] == 2


def test_module_error_serves_the_last_value_marked_stale(host: Host) -> None:
    stats = StatsService(host.db, host.invoker, ttl_seconds=0)
    cid = sent_campaign(host)
    fresh = stats.get("acme", cid)
    stats_down(host, True)
    stale = stats.get("acme", cid)
    assert stale.values == fresh.values and stale.fetched_at == fresh.fetched_at
    assert stale.stale is True
    assert stale.error.startswith("script_error: ") and "stats service is down" in stale.error
    stats_down(host, False)
    recovered = stats.get("acme", cid)
    assert recovered.stale is False and recovered.error is None
    assert recovered.values["opened"] == 2


def test_module_error_without_a_cached_value_is_the_error(host: Host) -> None:
    stats = StatsService(host.db, host.invoker, ttl_seconds=60)
    cid = sent_campaign(host)
    stats_down(host, True)
    with pytest.raises(ModuleCallFailed) as failure:
        stats.get("acme", cid)
    assert failure.value.kind == "script_error"


def test_no_stats_before_the_campaign_exists_in_the_service(host: Host) -> None:
    cid = sent_campaign(host, external_id=None)
    with pytest.raises(Conflict):
        host.campaign_stats.get("acme", cid)
    assert host.campaign_stats.view("acme", cid) is None


def test_stats_over_http(host: Host) -> None:
    cid = sent_campaign(host)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(host)) as client:
        stats_down(host, True)
        failed = client.get(f"/api/v1/tenants/acme/campaigns/{cid}/stats", headers=admin)
        assert failed.status_code == 502 and failed.json()["error"] == "script_error"
        shown = client.get(f"/api/v1/tenants/acme/campaigns/{cid}", headers=admin).json()
        assert (
            shown["stats"]["values"] is None
            and "stats service is down" in (shown["stats"]["error"])
        )
        stats_down(host, False)
        shown = client.get(f"/api/v1/tenants/acme/campaigns/{cid}", headers=admin).json()
        assert shown["stats"]["values"]["sent"] == 100 and shown["stats"]["stale"] is False
        direct = client.get(f"/api/v1/tenants/acme/campaigns/{cid}/stats", headers=admin)
        assert direct.status_code == 200 and direct.json()["values"]["opened"] == 1


def test_a_failing_module_is_asked_again_only_after_the_ttl(host: Host) -> None:
    stats = StatsService(host.db, host.invoker, ttl_seconds=60)
    cid = sent_campaign(host)
    stats.get("acme", cid)
    with host.db.transaction() as session:  # the cached value has expired
        session.execute(
            update(Campaign).values(stats_fetched_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    stats_down(host, True)

    def stats_calls() -> int:
        with host.db.transaction() as session:
            return len(
                session.scalars(
                    select(Invocation).where(
                        Invocation.function == "CRM_Marketing_GetCampaignStats"
                    )
                ).all()
            )

    first = stats.get("acme", cid)
    assert first.stale is True and stats_calls() == 2
    again = stats.get("acme", cid)
    assert again.stale is True and again.error == first.error
    assert stats_calls() == 2  # served stale without calling the failing module
    stats_down(host, False)
    assert stats.get("acme", cid, refresh=True).stale is False
    assert stats_calls() == 3
