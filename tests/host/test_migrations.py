"""Schema migrations: a new database is at head, a restart is harmless, and the SQLAlchemy
models match what the migrations create (no autogenerate diff)."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from host.db.migrate import alembic_config
from host.db.models import Base
from tests.host.conftest import make_host


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_fresh_database_is_at_head(host) -> None:
    with host.db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    assert current == head_revision(host.settings.database_url)
    tables = set(inspect(host.db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_starting_twice_on_the_same_file_keeps_the_data(db_path) -> None:
    first = make_host(db_path)
    try:
        first.tenants.create("acme", "Acme")
    finally:
        first.close()
    second = make_host(db_path)
    try:
        assert [t.id for t in second.tenants.list()] == ["acme"]
        with second.db.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
        assert revision == head_revision(second.settings.database_url)
    finally:
        second.close()


def test_two_hosts_on_one_file_at_once(db_path) -> None:
    first = make_host(db_path)
    second = make_host(db_path)
    try:
        first.tenants.create("acme", "Acme")
        assert second.tenants.get("acme").name == "Acme"
    finally:
        first.close()
        second.close()


def test_models_match_the_migrations(host) -> None:
    with host.db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_round_trip(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(config, "head")
    engine = create_engine(url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
