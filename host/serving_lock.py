"""How a server announces that it uses a SQLite database: ``crm-host serve`` holds a shared
``flock`` on ``<database>.lock`` for as long as it runs (several servers may share one file),
and ``crm-host restore`` takes it exclusively, so a restore never replaces a database under a
running server, and a server does not start in the middle of a restore.

An ``flock`` dies with its process, so a crashed server never leaves a stale lock behind (a
PID file would).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from host.db.engine import PRIVATE_FILE_MODE
from host.errors import Conflict, NotFound


def lock_file_of(database: Path) -> Path:
    return Path(f"{database}.lock")


def _open(database: Path) -> int:
    if not database.parent.is_dir():
        raise NotFound(f"no folder {database.parent} for the database {database.name}")
    return os.open(lock_file_of(database), os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)


class ServingLock:
    """The shared lock a running server holds on its database; released by :meth:`release`
    or when the process ends."""

    def __init__(self, database: Path):
        self.database = database
        self._fd = _open(database)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise Conflict(
                f"a restore of {database} is in progress; start the server when it is done"
            ) from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = -1


@contextmanager
def exclusive_use(database: Path) -> Iterator[None]:
    """Hold ``database`` against every server for the block; a Conflict when one runs."""
    fd = _open(database)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"a server is using {database} (crm-host serve holds {lock_file_of(database)}); "
                "stop every server on it first"
            ) from None
        yield
    finally:
        os.close(fd)
