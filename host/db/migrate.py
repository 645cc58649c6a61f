"""Apply the Alembic migrations when a host opens its database (``Host.open()``), so a new or
old database file is at head before anything writes to it; a read-only open only checks."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from host.db.engine import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Migrate; the first connection of a host, so an unreachable database is reported here
    in one line (where, without its password, and the driver's first line of why)."""
    config = alembic_config(str(engine.url))
    try:
        connection = engine.connect()
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        location = engine.url.render_as_string(hide_password=True)
        raise DatabaseUnavailable(f"cannot connect to the database {location}: {reason}") from None
    with connection, connection.begin():
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's revision, the newest revision of this release) — equal when the
    database is at head."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    return current, head
