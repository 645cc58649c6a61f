"""Database URLs: ``postgresql://`` gets the psycopg 3 driver (the ``postgres`` extra), and a
URL that cannot be used (driver missing, unknown backend, unparsable, server unreachable) is
one error line through the real CLI, never a traceback. No PostgreSQL server is needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import make_url

from host.config import load_settings
from host.db.engine import Database
from tests.cli_runner import Cli

PSYCOPG_INSTALLED = importlib.util.find_spec("psycopg") is not None
UNREACHABLE = "postgresql://crm:s3cret-password@127.0.0.1:1/crm"


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("postgresql://crm:pw@db/crm", "postgresql+psycopg://crm:pw@db/crm"),
        (
            "postgres://crm@db:5433/crm?sslmode=require",
            "postgresql+psycopg://crm@db:5433/crm?sslmode=require",
        ),
        ("postgresql+psycopg://crm@db/crm", "postgresql+psycopg://crm@db/crm"),
        ("postgresql+psycopg2://crm@db/crm", "postgresql+psycopg2://crm@db/crm"),
        ("sqlite:///data/host.db", "sqlite:///data/host.db"),
    ],
)
def test_postgresql_urls_get_the_psycopg3_driver(given: str, normalised: str) -> None:
    assert load_settings(database_url=given).database_url == normalised


def _one_error_line(result, tmp_path: Path) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "s3cret-password" not in result.stderr
    assert not list(tmp_path.glob("*.db"))  # nothing created on the side
    return errors[0]


@pytest.mark.skipif(PSYCOPG_INSTALLED, reason="psycopg is installed: see the test below")
def test_a_missing_postgresql_driver_is_one_line(tmp_path: Path) -> None:
    result = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL=UNREACHABLE).run("tenant", "list")
    assert _one_error_line(result, tmp_path) == (
        "error: CRM_HOST_DATABASE_URL: the database driver psycopg is not installed; "
        'pip install "crm-module-host[postgres]"'
    )


@pytest.mark.skipif(not PSYCOPG_INSTALLED, reason="psycopg is not installed: see the test above")
def test_with_psycopg_installed_the_dialect_driver_is_psycopg(tmp_path: Path) -> None:
    database = Database(load_settings(database_url=UNREACHABLE).database_url)
    try:
        assert database.engine.dialect.driver == "psycopg"
    finally:
        database.dispose()
    result = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL=UNREACHABLE).run("tenant", "list")
    line = _one_error_line(result, tmp_path)
    assert line.startswith("error: cannot connect to the database postgresql+psycopg://crm:***@")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "mysql://crm@127.0.0.1/crm",
            "error: CRM_HOST_DATABASE_URL: the database driver mysqldb is not installed "
            "(no module named MySQLdb); install mysqldb",
        ),
        (
            "nosuchdb://crm@127.0.0.1/crm",
            "error: CRM_HOST_DATABASE_URL: unknown database backend in nosuchdb:// "
            "(use sqlite:/// or postgresql://)",
        ),
    ],
)
def test_unusable_urls_are_one_line(tmp_path: Path, url: str, expected: str) -> None:
    result = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL=url).run("tenant", "list")
    assert _one_error_line(result, tmp_path) == expected


def test_an_unparsable_url_names_the_variable(tmp_path: Path) -> None:
    result = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL="not a url").run("serve", "--port", "1")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: invalid configuration: CRM_HOST_DATABASE_URL: not a database URL "
        "(expected sqlite:///<file> or postgresql://…)"
    ]


def test_the_driver_name_of_the_normalised_url() -> None:
    url = make_url(load_settings(database_url="postgres://crm@db/crm").database_url)
    assert (url.get_backend_name(), url.get_driver_name()) == ("postgresql", "psycopg")
