"""The campaign job engine (procrastinate on PostgreSQL) inside one host: the enqueue is
atomic with the campaign row, crashes are retried with backoff then failed and shown by the
jobs API and CLI (masked) until retried, the per-tenant limit and the priority rule hold;
on SQLite the jobs view says the jobs run in-process; without procrastinate, PostgreSQL is
refused with one line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, select, text, update

from host.api.app import create_app
from host.db.engine import DatabaseUnavailable
from host.db.models import Campaign, Delivery
from host.marketing.job_runner import new_owner
from host.platform import Host
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, SECRET_KEY, make_host
from tests.host.test_campaign_job import add_contacts, draft, setup_tenant
from tests.postgres import Cluster

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST = {
    "job_backoff_seconds": 0.2,
    "job_maintenance_seconds": 0.5,
    "campaign_poll_seconds": 0.5,
}


@pytest.fixture
def pg(postgres_cluster: Cluster, tmp_path: Path, pool: Any) -> Iterator[Callable[..., Host]]:
    """Hosts on one fresh PostgreSQL database (settings per host), closed and dropped after."""
    url = postgres_cluster.database()
    made: list[Host] = []

    def make(**overrides: Any) -> Host:
        host = make_host(tmp_path / "unused.db", database_url=url, sandbox=pool, **overrides)
        made.append(host)
        return host

    try:
        yield make
    finally:
        for host in made:
            host.close()
        postgres_cluster.drop(url)


def jobs(host: Host) -> list[tuple[Any, ...]]:
    with host.db.transaction() as session:
        return [
            tuple(row)
            for row in session.execute(
                text(
                    "SELECT args->>'campaign_id', status::text, priority, lock "
                    "FROM procrastinate_jobs ORDER BY id"
                )
            )
        ]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stage(host: Host, campaign_id: str) -> str:
    return host.campaigns.get("acme", campaign_id, with_stats=False).progress.stage


def test_a_rolled_back_campaign_leaves_no_job_and_a_committed_one_has_one(
    pg: Callable[..., Host],
) -> None:
    host = pg()
    setup_tenant(host)
    add_contacts(host, 3)
    real = host.campaigns.jobs

    class FailsAfterDeferring:
        def defer(self, session: Any, *args: Any, **kwargs: Any) -> None:
            real.defer(session, *args, **kwargs)
            raise RuntimeError("the transaction fails after the defer")

        def wake(self) -> None:
            real.wake()

    host.campaigns.jobs = FailsAfterDeferring()  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        host.campaigns.create("acme", draft())
    with host.db.transaction() as session:
        assert session.scalars(select(Campaign.id)).all() == []
    assert jobs(host) == []
    host.campaigns.jobs = real
    created = host.campaigns.create("acme", draft())
    assert jobs(host) == [(created.id, "todo", 0, "tenant:acme:0")]
    # `crm-host campaign send` runs the job itself, leased; its job resumes it if interrupted
    sent = host.campaigns.create("acme", draft(), claim_for=new_owner())
    assert jobs(host)[1] == (sent.id, "todo", 0, "tenant:acme:0")


def test_a_crashing_job_is_retried_then_failed_listed_masked_and_retried(
    pg: Callable[..., Host], tmp_path: Path
) -> None:
    host = pg(job_max_attempts=2, **FAST)
    setup_tenant(host)
    add_contacts(host, 3)
    calls: list[str] = []
    real_run = host.campaign_runner.run

    def crashing(campaign_id: str, **kwargs: Any) -> Any:
        calls.append(campaign_id)
        raise RuntimeError("lost the database (Authorization: Bearer s3cr3t-token)")

    host.campaign_runner.run = crashing  # type: ignore[method-assign]
    with TestClient(create_app(host)) as client:
        created = host.campaigns.create("acme", draft())
        wait_until(lambda: [j[1] for j in jobs(host)] == ["failed"], "the job failed")
        assert calls == [created.id, created.id]  # max_attempts runs, then no more
        answer = client.get("/api/v1/jobs", params={"status": "failed"}, headers=ADMIN)
        assert answer.status_code == 200
        (item,) = answer.json()["items"]
        assert item["campaignId"] == created.id and item["tenantId"] == "acme"
        assert item["crashes"] == 2 and item["attempts"] == 2
        assert item["error"] == "RuntimeError: lost the database (Authorization: Bearer ***)"
        assert item["deferredAt"] and item["updatedAt"] and item["errorAt"]
        assert "s3cr3t" not in answer.text
        assert stage(host, created.id) == "queued"  # resumable, not failed
        bad = client.get("/api/v1/jobs", params={"status": "nope", "offset": 3}, headers=ADMIN)
        assert bad.status_code == 422
        assert client.get("/api/v1/jobs").status_code == 401

        cli = Cli(
            tmp_path,
            {
                "CRM_HOST_DATABASE_URL": host.settings.database_url,
                "CRM_HOST_SECRET_KEY": SECRET_KEY,
                "COLUMNS": "250",
            },
        )
        listed = cli.run("jobs", "list", "--status", "failed")
        assert listed.returncode == 0, listed.stderr
        assert created.id in listed.stdout and "Bearer ***" in listed.stdout
        assert "s3cr3t" not in listed.stdout
        job_id = item["id"]
        not_failed = client.post(f"/api/v1/jobs/{job_id + 1000}/retry", headers=ADMIN)
        assert not_failed.status_code == 404

        failed_gauge = 'crm_host_job_queue_depth{queue="campaigns",status="failed"}'
        assert f"{failed_gauge} 1.0" in client.get("/metrics", headers=ADMIN).text

        host.campaign_runner.run = real_run  # type: ignore[method-assign]
        retried = cli.run("jobs", "retry", str(job_id))
        assert retried.returncode == 0, retried.stderr
        wait_until(lambda: stage(host, created.id) == "done", "the retried job ran")
        again = client.post(f"/api/v1/jobs/{job_id}/retry", headers=ADMIN)
        assert again.status_code in (404, 409)  # done and deleted, or not failed
        assert f"{failed_gauge} 0.0" in client.get("/metrics", headers=ADMIN).text


def test_a_tenants_second_campaign_waits_while_another_tenant_runs(
    pg: Callable[..., Host],
) -> None:
    host = pg(campaign_workers=2, job_tenant_concurrency=1, **FAST)
    setup_tenant(host)
    host.tenants.create("beta", "Beta")
    host.tenants.configure("beta", "rec", settings={})
    add_contacts(host, 40)
    add_contacts(host, 40, tenant_id="beta")
    first = host.campaigns.create("acme", draft(batchSize=2))
    second = host.campaigns.create("acme", draft(batchSize=2))
    other = host.campaigns.create("beta", draft(batchSize=2))
    host.start()
    ids = (first.id, second.id, other.id)
    wait_until(lambda: all(stage(host, i) == "done" for i in ids[:2]), "acme's two done")
    wait_until(
        lambda: host.campaigns.get("beta", other.id, with_stats=False).progress.stage == "done",
        "beta's done",
    )
    with host.db.transaction() as session:
        started = {
            i: session.scalar(
                select(Delivery.updated_at)
                .where(Delivery.campaign_id == i)
                .order_by(Delivery.updated_at)
                .limit(1)
            )
            for i in ids
        }
        first_done = session.scalar(select(Campaign.finished_at).where(Campaign.id == first.id))
    assert started[second.id] >= first_done  # never two of acme's at once
    assert started[other.id] < started[second.id]  # beta did not wait behind acme


def test_a_resumed_campaign_runs_before_a_fresh_one(pg: Callable[..., Host]) -> None:
    host = pg(campaign_workers=1, **FAST)
    setup_tenant(host)
    add_contacts(host, 6)
    fresh = host.campaigns.create("acme", draft(batchSize=2))
    resumed = host.campaigns.create("acme", draft(batchSize=2))
    with host.db.transaction() as session:  # as a job interrupted during CreateCampaign
        session.execute(
            update(Campaign)
            .where(Campaign.id == resumed.id)
            .values(
                stage="creating", attention_reason="interrupted", attention_at=Campaign.created_at
            )
        )
    from host.marketing.campaign_attention import AttentionResolution

    host.campaign_attention.resolve("acme", resumed.id, AttentionResolution(notCreated=True))
    assert [(j[0], j[2]) for j in jobs(host)] == [(fresh.id, 0), (resumed.id, 10)]
    host.start()
    wait_until(lambda: stage(host, fresh.id) == "done", "both done")
    with host.db.transaction() as session:
        done = dict(session.execute(select(Campaign.id, Campaign.finished_at)).all())
    assert done[resumed.id] < done[fresh.id]


@pytest.mark.sqlite_only("SQLite has no job queue; PostgreSQL's is tested above")
def test_on_sqlite_the_jobs_view_says_jobs_run_in_process(client: TestClient, admin: Any) -> None:
    answer = client.get("/api/v1/jobs", params={"status": "failed"}, headers=admin)
    assert answer.status_code == 409
    assert "crm-host serve runs the campaign jobs in-process" in answer.json()["message"]
    assert client.get("/healthz").status_code == 200


def test_postgresql_without_procrastinate_is_one_clear_line(
    postgres_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_cluster.database(migrated=False)
    monkeypatch.setitem(sys.modules, "procrastinate", None)  # as if not installed
    try:
        with pytest.raises(DatabaseUnavailable) as refused:
            make_host(tmp_path / "unused.db", database_url=url)
        assert str(refused.value.message) == (
            "CRM_HOST_DATABASE_URL: PostgreSQL runs campaign jobs on procrastinate, which is "
            'not installed; pip install "crm-module-host[postgres]"'
        )
        engine = create_engine(url)
        try:
            assert inspect(engine).get_table_names() == []  # refused before migrating
        finally:
            engine.dispose()
    finally:
        postgres_cluster.drop(url)


def test_a_runnable_campaign_left_without_a_job_gets_one(pg: Callable[..., Host]) -> None:
    host = pg(**FAST)
    setup_tenant(host)
    add_contacts(host, 4)
    created = host.campaigns.create("acme", draft())
    with host.db.transaction() as session:  # lost, e.g. deleted by hand
        session.execute(text("DELETE FROM procrastinate_jobs"))
    host.start()
    wait_until(lambda: stage(host, created.id) == "done", "the reconciled job ran")


def test_retry_rule_backs_off_exponentially_and_never_fails_a_held_lease() -> None:
    from procrastinate.jobs import Job

    from host.jobs.worker import CampaignRetry, Crashed, Interrupted, JobSettings, LeaseHeld

    rule = CampaignRetry(
        JobSettings(
            concurrency=1,
            max_attempts=4,
            backoff_seconds=2.0,
            backoff_max_seconds=5.0,
            heartbeat_seconds=1,
            stalled_seconds=3,
            maintenance_seconds=1,
            poll_seconds=1,
        )
    )
    job = Job(id=1, queue="campaigns", lock=None, queueing_lock=None, task_name="t", attempts=50)

    def wait(exception: BaseException) -> float | None:
        decision = rule.get_retry_decision(exception=exception, job=job)
        if decision is None:
            return None
        assert decision.retry_at is not None
        return round((decision.retry_at - datetime.now(UTC)).total_seconds())

    assert [wait(Crashed("x", n)) for n in (1, 2, 3, 4)] == [2, 4, 5, None]
    assert wait(LeaseHeld("c", 30.0)) == 30  # however many attempts the job had
    interrupted = rule.get_retry_decision(exception=Interrupted("stop"), job=job)
    assert interrupted is not None and interrupted.priority == 10
    assert wait(RuntimeError("not wrapped")) is None


def test_a_jobs_listing_with_an_unknown_status_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path)
    listed = cli.run("jobs", "list", "--status", "stuck")
    assert listed.returncode == 2, listed.stderr
    assert listed.stderr.count("\n") == 1, listed.stderr
    assert "--status" in listed.stderr and "todo, doing, failed" in listed.stderr
    assert "Traceback" not in listed.stderr and not (tmp_path / "host.db").exists()
