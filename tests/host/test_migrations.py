"""Schema migrations, on SQLite and on PostgreSQL: a new database is at head, a restart is
harmless, an old schema holding data is upgraded keeping it, and the SQLAlchemy models match
what the migrations create (no autogenerate diff)."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from host.db.migrate import alembic_config
from host.db.models import Base
from host.secrets import hash_api_key
from tests.host.conftest import make_host
from tests.postgres import database_url


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
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                # procrastinate's own tables (revision 0016, PostgreSQL): not host models
                "include_name": lambda name, kind, _parent: (
                    not (kind == "table" and str(name).startswith("procrastinate_"))
                ),
            },
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_round_trip(db_path) -> None:
    url = database_url(db_path, migrated=False)
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


OLD_REVISION = "0004"
"""Before the admin API (0005: tenants.deleted_at), the suppression policy (0007:
contacts.soft_bounces) and the webhook intake (0008)."""


def test_an_old_schema_with_data_is_upgraded_keeping_the_data(db_path) -> None:
    url = database_url(db_path, migrated=False)
    command.upgrade(alembic_config(url), OLD_REVISION)
    created = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tenants (id, name, api_key_hash, created_at) "
                    "VALUES (:id, :name, :hash, :at)"
                ),
                [
                    {
                        "id": "acme",
                        "name": "Acme Corp",
                        "hash": hash_api_key("key-a"),
                        "at": created,
                    },
                    {
                        "id": "beta",
                        "name": "Beta Ltd",
                        "hash": hash_api_key("key-b"),
                        "at": created,
                    },
                ],
            )
            connection.execute(
                text(
                    "INSERT INTO contacts (tenant_id, id, name, email, email_key, phone, status, "
                    "created_at, updated_at) VALUES ('acme', 'c1', 'Ann', 'Ann@Example.test', "
                    "'ann@example.test', NULL, 'Subscribed', :at, :at)"
                ),
                {"at": created},
            )
    finally:
        engine.dispose()

    host = make_host(db_path)  # opening migrates the old schema to head
    try:
        with host.db.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            soft_bounces = connection.execute(
                text("SELECT soft_bounces FROM contacts WHERE id = 'c1'")
            ).scalar_one()
        assert revision == head_revision(url)
        assert [(t.id, t.name) for t in host.tenants.list()] == [
            ("acme", "Acme Corp"),
            ("beta", "Beta Ltd"),
        ]
        assert host.tenants.tenant_for_key("key-b") == "beta"  # not deleted (deleted_at NULL)
        assert host.tenants.get("acme").created_at == created
        contact = host.contacts.get("acme", "c1")
        assert (contact.name, contact.email, contact.status) == (
            "Ann",
            "Ann@Example.test",
            "Subscribed",
        )
        assert soft_bounces == 0  # the column 0007 added, filled for the old row
        host.tenants.create("gamma", "Gamma")  # and the upgraded schema takes new writes
        assert [t.id for t in host.tenants.list()] == ["acme", "beta", "gamma"]
    finally:
        host.close()
