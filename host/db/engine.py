"""Engine and session factory. SQLite gets WAL and foreign keys; nothing here is SQLite-only
beyond those connection pragmas, so a PostgreSQL URL works unchanged.

SQLite runs with ``secure_delete`` (erased personal data is overwritten on disk).

A SQLite database file holds webhook tokens, API key hashes, contacts and sealed secrets, so
it is private to the host's user, like the key file beside it: the file is created 0600
before SQLite opens it (SQLite gives its ``-wal`` and ``-shm`` files the database file's
mode), and an existing database, WAL or SHM file that others may read is narrowed to 0600.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from host.errors import HostError

PRIVATE_FILE_MODE = 0o600
DRIVER_EXTRAS = {"psycopg": "postgres"}
"""Drivers that an extra of the package installs: ``pip install "crm-module-host[extra]"``."""


class DatabaseUnavailable(HostError):
    """The database URL cannot be used: unparsable, unknown backend or driver not installed."""

    kind = "configuration"


SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def make_private(database: Path) -> None:
    """Create ``database`` (0600) if it does not exist; narrow it and its companion files
    to 0600 when they exist with wider permissions."""
    if not database.exists() and database.parent.is_dir():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    for suffix in SQLITE_COMPANIONS:
        path = Path(f"{database}{suffix}")
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & ~PRIVATE_FILE_MODE:
            path.chmod(PRIVATE_FILE_MODE)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database or another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # URI filenames: SQLite creates those itself
        return None
    return Path(parsed.database)


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    database = sqlite_file(url)
    if database is not None:
        make_private(database)
    if url.startswith("sqlite"):
        # Many request threads share the file; the timeout waits out a writer instead of
        # failing with "database is locked".
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = _create(url, kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _create(url: str, kwargs: dict[str, Any]) -> Engine:
    """``create_engine`` with its failures as one line naming the setting, not a traceback."""
    try:
        return create_engine(url, **kwargs)
    except ImportError as exc:  # the dialect exists, its DBAPI module is not installed
        driver = make_url(url).get_driver_name()
        extra = DRIVER_EXTRAS.get(driver)
        hint = f'pip install "crm-module-host[{extra}]"' if extra else f"install {driver}"
        missing = f" (no module named {exc.name})" if exc.name and exc.name != driver else ""
        raise DatabaseUnavailable(
            f"CRM_HOST_DATABASE_URL: the database driver {driver} is not installed{missing}; "
            + hint
        ) from None
    except NoSuchModuleError:
        raise DatabaseUnavailable(
            f"CRM_HOST_DATABASE_URL: unknown database backend in "
            f"{make_url(url).drivername}:// (use sqlite:/// or postgresql://)"
        ) from None
    except ArgumentError:
        raise DatabaseUnavailable("CRM_HOST_DATABASE_URL is not a database URL") from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted content is overwritten, not just unlinked: an erased contact or a purged
    # tenant must not stay readable in free pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


class Database:
    """The engine plus a session factory; ``transaction()`` is the unit of work.

    The engine is made on first use, not here: making it creates the SQLite file, and
    building a ``Host`` must leave the disk alone until ``Host.open()``."""

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._sqlite_writer = threading.Lock()  # see write_transaction()
        self._engine: Engine | None = None
        self._made: tuple[Engine, sessionmaker[Session]] | None = None

    def _make(self) -> tuple[Engine, sessionmaker[Session]]:
        with self._lock:
            if self._made is None:
                engine = make_engine(self.url)
                self._engine = engine
                self._made = (engine, sessionmaker(engine, expire_on_commit=False))
            return self._made

    @property
    def engine(self) -> Engine:
        return self._make()[0]

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._make()[1]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error,
        so a failure never leaves anything half-written."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def write_transaction(self) -> Iterator[Session]:
        """A transaction that reads what it is about to change and writes it, safe against a
        concurrent one doing the same (two webhooks naming the same delivery, two nodes).

        On SQLite it holds the write lock from its first statement (``BEGIN IMMEDIATE``), so
        its reads are current and concurrent ones serialise, where a deferred transaction
        reading first would fail with "database is locked" when its snapshot went stale.
        Inside one process the writers also queue on a lock of their own first: SQLite's busy
        handler sleeps in steps of up to 100 ms while it waits, a lock wakes the next writer
        at once. Another process on the same file waits through the busy timeout.

        On PostgreSQL it is a plain transaction; its writers take row locks
        (``SELECT ... FOR UPDATE``) on what they read. Do not open another transaction that
        writes while inside one: on SQLite it would wait for this one's lock."""
        if self.engine.dialect.name != "sqlite":
            with self.transaction() as session:
                yield session
            return
        with self._sqlite_writer, self.sessions() as session, session.begin():
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
