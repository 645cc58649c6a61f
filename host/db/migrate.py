"""Apply the Alembic migrations when a host opens its database (``Host.open()``), so a new or
old database file is at head before anything writes to it; a read-only open only checks.

Several nodes may start at the same instant on one database. The upgrade is serialised, so
exactly one of them migrates and the others find the schema at head: on PostgreSQL a
transaction-level advisory lock is taken before Alembic reads the schema's revision (and is
released when the upgrade commits or rolls back); on SQLite the upgrade's transaction begins
``IMMEDIATE``, taking the file's write lock before that read (the others wait for it within
the connection's busy timeout). Without that, both read "no revision" and the second one's
``CREATE TABLE alembic_version`` fails.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from host.db.engine import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK_KEY = int.from_bytes(b"crm-host", "big")
"""The PostgreSQL advisory lock (one bigint) that upgrades of this database take."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Migrate, serialised against other processes doing the same (see the module's
    docstring)."""
    config = alembic_config(str(engine.url))
    with _connect(engine) as connection, connection.begin():
        _lock_for_migrations(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _connect(engine: Engine) -> Connection:
    """The first connection of a host (migrating, or a read-only command checking the
    revision): an unreachable database is one line (where, without its password, and the
    driver's first line of why), not a traceback."""
    try:
        return engine.connect()
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        location = engine.url.render_as_string(hide_password=True)
        raise DatabaseUnavailable(f"cannot connect to the database {location}: {reason}") from None


def _lock_for_migrations(connection: Connection) -> None:
    """The first statement of the upgrade's transaction: wait until no other process is
    migrating this database, and keep the others waiting until this transaction ends."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    elif dialect == "sqlite":
        # pysqlite begins transactions lazily (before DML only); this one begins now, as the
        # writer, and pysqlite's COMMIT/ROLLBACK at the end of ``begin()`` ends it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's revision, the newest revision of this release) — equal when the
    database is at head."""
    with _connect(engine) as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    return current, head
