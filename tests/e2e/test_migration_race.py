"""Two and three ``crm-host serve`` nodes started at the same instant on one database, empty
or at an old schema revision, on SQLite and on PostgreSQL: the upgrade is serialised (an
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so every node comes up healthy
and the schema is migrated once, to head. Before, one node died with ``UniqueViolation ...
CREATE TABLE alembic_version`` (issue 17).

The nodes run ``crm-host`` through ``migration_barrier.py``, which holds each one right
before its upgrade until all are there, then releases them together: the race is then
reproduced on every run instead of depending on how the machine's load spreads the imports.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from host.db.migrate import alembic_config
from host.db.models import Base
from host.secrets import hash_api_key
from tests.e2e.server import running_hosts
from tests.postgres import database_url

BARRIER_LAUNCHER = Path(__file__).with_name("migration_barrier.py")
OLD_REVISION = "0004"
SECRET_KEY = "a passphrase of the migration race test, long enough"


def _release_when_all_wait(barrier: Path, nodes: int, limit_s: float) -> threading.Thread:
    """Create ``barrier/go`` once ``nodes`` processes wait at the barrier (or at the limit,
    so a node that died early fails the test through its readiness check, not a hang)."""

    def release() -> None:
        deadline = time.monotonic() + limit_s
        while len(list(barrier.glob("ready-*"))) < nodes and time.monotonic() < deadline:
            time.sleep(0.01)
        (barrier / "go").touch()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def _old_schema_with_a_tenant(url: str) -> None:
    command.upgrade(alembic_config(url), OLD_REVISION)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tenants (id, name, api_key_hash, created_at) "
                    "VALUES ('acme', 'Acme Corp', :hash, :at)"
                ),
                {"hash": hash_api_key("old-key"), "at": datetime(2025, 1, 2, tzinfo=UTC)},
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("schema", ["empty", "old"])
@pytest.mark.parametrize("nodes", [2, 3])
def test_nodes_started_together_migrate_once(
    tmp_path: Path, db_path: Path, database_backend: str, nodes: int, schema: str
) -> None:
    url = database_url(db_path, migrated=False)
    if schema == "old":
        _old_schema_with_a_tenant(url)
    workdirs = [tmp_path / f"node{i}" for i in range(nodes)]
    for workdir in workdirs:
        workdir.mkdir()
    # On SQLite no key is configured: the nodes also race to create the key file beside it.
    keys = {} if database_backend == "sqlite" else {"CRM_HOST_SECRET_KEY": SECRET_KEY}

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    releaser = _release_when_all_wait(barrier, nodes, limit_s=30.0 * nodes)
    with running_hosts(
        workdirs,
        database_url=url,
        command=[sys.executable, str(BARRIER_LAUNCHER)],
        CRM_TEST_MIGRATION_BARRIER=str(barrier),
        **keys,
    ) as hosts:
        releaser.join()
        assert len(list(barrier.glob("ready-*"))) == nodes  # all were held, then released
        for host in hosts:
            assert host.process.poll() is None, host.output()
        with hosts[0].client() as first:
            created = first.post("/api/v1/tenants", json={"id": "beta", "name": "Beta"})
            assert created.status_code == 201, created.text
        expected = ["acme", "beta"] if schema == "old" else ["beta"]
        for host in hosts:  # every node serves the one migrated database
            with host.client() as admin:
                listed = admin.get("/api/v1/tenants")
                assert listed.status_code == 200, listed.text
                assert [t["id"] for t in listed.json()] == expected
        logs = [host.output() for host in hosts]

    for log in logs:
        assert "Traceback" not in log and "error:" not in log, log
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert versions == [(head,)]
    assert set(Base.metadata.tables) <= tables
    if database_backend == "sqlite":
        assert [p.name for p in tmp_path.glob("host.db.key*")] == ["host.db.key"]
