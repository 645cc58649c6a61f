"""``crm-host worker`` processes on one PostgreSQL database: a worker runs a campaign to
Sent, a SIGKILLed worker's campaign is finished by another one with every recipient
prepared, SIGTERM stops a worker after its batch leaving the campaign requeued, and on
SQLite the command refuses with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from host.platform import Host
from tests.host.conftest import SECRET_KEY, make_host
from tests.host.test_campaign_job import add_contacts, draft, setup_tenant, storage
from tests.postgres import Cluster

CRM_HOST = Path(sys.executable).with_name("crm-host")
FAST_JOBS = {
    "CRM_HOST_JOB_HEARTBEAT_SECONDS": "0.5",
    "CRM_HOST_JOB_STALLED_SECONDS": "2",
    "CRM_HOST_JOB_MAINTENANCE_SECONDS": "0.5",
    "CRM_HOST_CAMPAIGN_POLL_SECONDS": "0.5",
    "CRM_HOST_SANDBOX_WORKERS": "1",
    "CRM_HOST_CAMPAIGN_WORKERS": "1",
}


@pytest.fixture
def pg_host(postgres_cluster: Cluster, tmp_path: Path) -> Iterator[Host]:
    """A host (not started: it runs no job itself) on a fresh database, with a tenant."""
    url = postgres_cluster.database()
    host = make_host(tmp_path / "unused.db", database_url=url)
    setup_tenant(host)
    try:
        yield host
    finally:
        host.close()
        postgres_cluster.drop(url)


@contextmanager
def worker(host: Host, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
    env.update(FAST_JOBS, CRM_HOST_DATABASE_URL=host.settings.database_url)
    env["CRM_HOST_SECRET_KEY"] = SECRET_KEY
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(CRM_HOST), "worker"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def campaign(host: Host, campaign_id: str) -> Any:
    return host.campaigns.get("acme", campaign_id, with_stats=False)


def jobs_of(host: Host, campaign_id: str) -> list[tuple[str, int]]:
    with host.db.transaction() as session:
        return session.execute(
            text(
                "SELECT status::text, attempts FROM procrastinate_jobs "
                "WHERE args->>'campaign_id' = :id"
            ),
            {"id": campaign_id},
        ).all()  # type: ignore[return-value]


def deliveries(host: Host, campaign_id: str) -> list[str]:
    with host.db.transaction() as session:
        return list(
            session.scalars(
                text("SELECT contact_id FROM deliveries WHERE campaign_id = :id"),
                {"id": campaign_id},
            )
        )


def test_a_worker_process_runs_a_campaign_to_sent(pg_host: Host, tmp_path: Path) -> None:
    contacts = add_contacts(pg_host, 12)
    created = pg_host.campaigns.create("acme", draft(batchSize=5))
    assert [status for status, _ in jobs_of(pg_host, created.id)] == ["todo"]
    with worker(pg_host, tmp_path / "worker.log"):
        wait_until(lambda: campaign(pg_host, created.id).progress.stage == "done", "done")
        wait_until(lambda: jobs_of(pg_host, created.id) == [], "the finished job deleted")
    shown = campaign(pg_host, created.id)
    assert shown.status == "Sending" and shown.external_id == "ext-" + created.id[:8]
    assert sorted(deliveries(pg_host, created.id)) == contacts
    assert storage(pg_host)["prepare"] == [5, 5, 2]


def test_a_killed_workers_campaign_is_finished_by_another(pg_host: Host, tmp_path: Path) -> None:
    contacts = add_contacts(pg_host, 120)
    created = pg_host.campaigns.create("acme", draft(batchSize=4))
    with worker(pg_host, tmp_path / "first.log") as first:
        wait_until(lambda: campaign(pg_host, created.id).progress.batches >= 3, "3 batches")
        first.send_signal(signal.SIGKILL)
        first.wait()
    done_before = campaign(pg_host, created.id).progress.batches
    assert done_before < 30, "the campaign finished before the kill: make it longer"
    assert [status for status, _ in jobs_of(pg_host, created.id)] == ["doing"]
    with worker(pg_host, tmp_path / "second.log"):
        wait_until(lambda: campaign(pg_host, created.id).progress.stage == "done", "done")
    assert sorted(deliveries(pg_host, created.id)) == contacts  # each stored once
    seen = set(storage(pg_host)["seen"])
    assert seen == {f"user{i}@example.test" for i in range(120)}
    assert "stalled worker is retried" in (tmp_path / "second.log").read_text()


def test_sigterm_stops_a_worker_after_its_batch_and_requeues_the_job(
    pg_host: Host, tmp_path: Path
) -> None:
    add_contacts(pg_host, 120)
    created = pg_host.campaigns.create("acme", draft(batchSize=4))
    with worker(pg_host, tmp_path / "worker.log") as process:
        wait_until(lambda: campaign(pg_host, created.id).progress.batches >= 2, "2 batches")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    shown = campaign(pg_host, created.id)
    assert shown.progress.stage == "preparing" and shown.status != "Failed"
    assert jobs_of(pg_host, created.id) == [("todo", 1)]
    with pg_host.db.transaction() as session:
        lease = session.scalar(
            text("SELECT lease_owner FROM campaigns WHERE id = :id"), {"id": created.id}
        )
    assert lease is None  # released: the next worker resumes at once
    assert len(deliveries(pg_host, created.id)) == shown.progress.prepared


def test_worker_on_sqlite_refuses_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
    result = subprocess.run(
        [str(CRM_HOST), "worker", "--home", str(tmp_path / "home")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: crm-host worker needs PostgreSQL; with SQLite, crm-host serve runs the "
        "campaign jobs itself"
    ]
    assert not (tmp_path / "home").exists()  # nothing was created
