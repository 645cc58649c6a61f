"""Fixtures shared by the whole suite."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.pool import SandboxPool
from tests.postgres import Cluster, PostgresUnavailable, backend, postgres_required, start_cluster

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): the test reads the SQLite file itself, so it runs on SQLite only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that touches the database (it uses ``db_path``, directly or through
    ``host``/``client``) runs on SQLite and on PostgreSQL, unless marked ``sqlite_only``."""
    if "database_backend" not in metafunc.fixturenames:
        return
    only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
    metafunc.parametrize(
        "database_backend", BACKENDS[:1] if only_sqlite else BACKENDS, indirect=True
    )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One PostgreSQL cluster for the whole run, stopped (and deleted) at its end, also when
    tests failed. Without PostgreSQL here the PostgreSQL tests are skipped with the reason,
    unless ``CRM_HOST_TEST_POSTGRES=required`` (CI), where that is a failure."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(f"CRM_HOST_TEST_POSTGRES=required but {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """``sqlite`` or ``postgresql``: what ``make_host(db_path)`` (``tests.postgres.database_url``)
    connects to during this test."""
    name: str = request.param
    if name == "postgresql":
        backend.use(request.getfixturevalue("postgres_cluster"))
    try:
        yield name
    finally:
        backend.release()


@pytest.fixture
def db_path(tmp_path: Path, database_backend: str) -> Path:
    """Where the test's database is: this SQLite file, or on PostgreSQL the database that
    stands for it (see ``tests.postgres.Backend``)."""
    return tmp_path / "host.db"


@pytest.fixture(scope="session")
def pool() -> Iterator[SandboxPool]:
    """Warm sandbox workers shared by every test that runs modules through a Host
    (``Host(..., sandbox=pool)``): starting workers per test would dominate the suite."""
    with SandboxPool(size=2) as shared:
        yield shared


@pytest.fixture(autouse=True, scope="module")
def _frozen_heap() -> None:
    """What earlier test modules left in this long-lived process is frozen out of the
    collector, as a worker freezes its preload: the sandbox's in-window collection is a full
    ``gc.collect()``, and tests that execute scripts in this process would otherwise scan the
    whole suite's heap on every call (seconds each, late in a run)."""
    gc.collect()
    gc.freeze()
