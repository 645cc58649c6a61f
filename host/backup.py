"""``crm-host backup`` / ``restore`` of a SQLite database.

A backup is SQLite's online backup (``sqlite3.Connection.backup``) read in one transaction:
under WAL a reader sees one consistent snapshot while servers keep writing, so a backup taken
while serving is consistent without stopping anything. The copy is written to a private
temporary file (0600), switched to ``journal_mode=DELETE`` so it is one self-contained file,
checked, and only then renamed into place.

The key that decrypts tenant secrets is NOT in a backup unless asked for (``with_key``): it is
then copied beside it as ``<backup>.key`` (0600), and whoever holds both files can read every
tenant's secrets. A restore refuses while any server uses the database (see
:mod:`host.serving_lock`) and before touching anything checks that the backup is a crm-host
database whose secrets the key it will run with can open.

PostgreSQL is backed up with its own tools (``pg_dump`` / ``pg_restore``, see the README).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import MultiFernet

from host.db.engine import PRIVATE_FILE_MODE, make_private
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.secrets import SecretBox, SecretKeyError, key_file_fernet
from host.serving_lock import exclusive_use


@dataclass(frozen=True)
class BackupResult:
    path: Path
    key_path: Path | None
    tenants: int


def key_path_of(backup: Path) -> Path:
    return Path(f"{backup}.key")


def _private_new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))


def backup_sqlite(database: Path, target: Path, *, key_file: Path | None) -> BackupResult:
    """Copy ``database`` to ``target`` (which must not exist), and ``key_file`` beside it."""
    if not database.exists():
        raise NotFound(f"no database at {database}: nothing to back up")
    if target.exists() or (key_file is not None and key_path_of(target).exists()):
        existing = target if target.exists() else key_path_of(target)
        raise Conflict(f"{existing} already exists; choose a new backup path")
    if not target.parent.is_dir():
        raise InvalidInput("backup path is invalid", [Problem(str(target), "no such folder")])
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    _private_new_file(partial)
    try:
        with (
            closing(sqlite3.connect(database, timeout=30)) as source,
            closing(sqlite3.connect(partial)) as copy,
        ):
            source.backup(copy)  # all pages in one step: one read transaction, one snapshot
            copy.execute("PRAGMA journal_mode=DELETE")
            tenants = _check_crm_database(copy, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    key_copy = None
    if key_file is not None:
        key_copy = key_path_of(target)
        _private_new_file(key_copy)
        key_copy.write_bytes(key_file.read_bytes())
    return BackupResult(target, key_copy, tenants)


def _check_crm_database(connection: sqlite3.Connection, path: Path) -> int:
    """The number of tenants of a healthy crm-host database; InvalidInput otherwise."""
    try:
        (verdict,) = connection.execute("PRAGMA quick_check").fetchone()
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(
            "not a crm-host backup", [Problem(str(path), f"not a SQLite database ({exc})")]
        ) from None
    if verdict != "ok":
        raise InvalidInput("the backup is damaged", [Problem(str(path), str(verdict))])
    if not {"alembic_version", "tenants", "enablements"} <= tables:
        raise InvalidInput(
            "not a crm-host backup", [Problem(str(path), "it has no crm-host tables")]
        )
    (count,) = connection.execute("SELECT count(*) FROM tenants").fetchone()
    return int(count)


def _sealed_sample(connection: sqlite3.Connection) -> str | None:
    row = connection.execute(
        "SELECT secrets_encrypted FROM enablements WHERE secrets_encrypted IS NOT NULL LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def restore_sqlite(
    backup: Path, database: Path, *, configured: MultiFernet | None, key_file: Path
) -> BackupResult:
    """Replace ``database`` with ``backup``. ``configured`` is the host's configured keys
    (None: it uses ``key_file``, which the backup's own key file, when there is one,
    replaces). Nothing changes unless the backup is sound and its secrets will open."""
    if not backup.is_file():
        raise NotFound(f"no backup at {backup}")
    backup_key = key_path_of(backup)
    with closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as source:
        tenants = _check_crm_database(source, backup)
        sealed = _sealed_sample(source)
    use_backup_key = configured is None and backup_key.is_file()
    if sealed is not None:
        _check_opens(sealed, configured, backup_key if use_backup_key else key_file)
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with exclusive_use(database):
        make_private(database)
        with (
            closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as source,
            closing(sqlite3.connect(database, timeout=30)) as target,
        ):
            # Through SQLite, in one transaction on the target: its WAL and SHM stay
            # consistent, and a failure leaves the old database as it was.
            source.backup(target)
        make_private(database)
        if use_backup_key:
            _install_key(backup_key, key_file)
    return BackupResult(database, key_file if use_backup_key else None, tenants)


def _check_opens(sealed: str, configured: MultiFernet | None, key_file: Path) -> None:
    if configured is None and not key_file.is_file():
        raise SecretKeyError(
            f"the backup holds sealed secrets but there is no key to open them: no {key_file} "
            "and no CRM_HOST_SECRET_KEY(S); restore a backup made with --with-key, or set the "
            "key it was made with"
        )
    box = SecretBox(configured if configured is not None else key_file_fernet(key_file))
    try:
        box.open(sealed)
    except SecretKeyError:
        raise SecretKeyError(
            "the backup's secrets cannot be decrypted with the key the host would use; "
            "nothing was restored (set the key it was made with, or restore with its .key file)"
        ) from None


def _install_key(backup_key: Path, key_file: Path) -> None:
    """The backup's key becomes the host's key file; a different key already there is kept
    as ``<key>.before-restore`` rather than lost (it may still open an older backup)."""
    content = backup_key.read_bytes()
    if key_file.exists():
        if key_file.read_bytes() == content:
            return
        os.replace(key_file, Path(f"{key_file}.before-restore"))
    _private_new_file(key_file)
    key_file.write_bytes(content)
