"""Operator commands: ``crm-host backup`` / ``restore``, ``crm-host secrets rotate-key`` and
``crm-host purge``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from host.backup import backup_sqlite, restore_sqlite
from host.cli.host_options import DatabaseOption, HomeOption, host_settings, open_host
from host.cli.output import err, handles_errors, out
from host.config import HostSettings
from host.errors import InvalidInput, Problem
from host.key_rotation import rotate_sealed_settings, rotate_stored_requests
from host.platform import configured_keys, key_file_of

secrets_app = typer.Typer(help="The keys that encrypt tenant secrets.", no_args_is_help=True)


def _say(message: str) -> None:
    err.print(message, markup=False, highlight=False)


def _sqlite_file(settings: HostSettings, command: str) -> Path:
    database = settings.sqlite_path()
    if database is None:
        raise InvalidInput(
            f"{command} works on SQLite databases only",
            [
                Problem(
                    "CRM_HOST_DATABASE_URL",
                    f"{settings.database_location()} is not a SQLite file: use pg_dump / "
                    "pg_restore (see the README, 'Backups')",
                )
            ],
        )
    return database


@handles_errors
def backup(
    path: Annotated[Path, typer.Argument(help="New file to write the backup to.")],
    with_key: Annotated[
        bool,
        typer.Option(
            "--with-key",
            help="Also copy the key file to PATH.key: both together open every tenant secret.",
        ),
    ] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Copy the SQLite database to PATH (0600), consistently, also while servers run."""
    settings = host_settings(database_url, home)
    database = _sqlite_file(settings, "backup")
    _say(f"crm-host: database {database}")
    uses_key_file = configured_keys(settings) is None
    key_file = key_file_of(database)
    if with_key and not uses_key_file:
        raise InvalidInput(
            "--with-key copies the key file, and this host uses none",
            [Problem("--with-key", "its key is CRM_HOST_SECRET_KEY(S): keep that safe instead")],
        )
    if with_key and not key_file.is_file():
        raise InvalidInput("no key file to copy", [Problem(str(key_file), "does not exist")])
    result = backup_sqlite(
        database.absolute(), path.absolute(), key_file=key_file if with_key else None
    )
    out.print(f"backup written: {result.path} ({result.tenants} tenants)", markup=False)
    if result.key_path is not None:
        out.print(f"key written: {result.key_path}", markup=False)
        _say(
            "warning: the backup and its .key file together decrypt every tenant's secrets: "
            "keep them private, and apart or encrypted when they leave this machine"
        )
    elif uses_key_file:
        _say(
            f"note: the key file {key_file} is not in the backup; without it the tenants' "
            "secrets cannot be restored (keep a copy, or back up with --with-key)"
        )


@handles_errors
def restore(
    path: Annotated[Path, typer.Argument(help="A file written by crm-host backup.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Replace an existing database without asking.")
    ] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Replace the SQLite database with a backup (and its key file, when PATH.key exists).
    Refused while any server uses the database."""
    settings = host_settings(database_url, home)
    database = _sqlite_file(settings, "restore")
    _say(f"crm-host: database {database}")
    if database.exists() and not yes:
        typer.confirm(f"replace {database} with {path}?", abort=True)
    result = restore_sqlite(
        path.absolute(),
        database,
        configured=configured_keys(settings),
        key_file=key_file_of(database),
    )
    out.print(f"restored {path} into {result.path} ({result.tenants} tenants)", markup=False)
    if result.key_path is not None:
        out.print(f"key file restored: {result.key_path}", markup=False)
    with open_host(database_url, home):  # migrates an older backup to this version now
        pass


@handles_errors
def purge(database_url: DatabaseOption = None, home: HomeOption = None) -> None:
    """Delete expired invocation logs, webhook receipts and deliveries now (what `serve`
    does every CRM_HOST_RETENTION_INTERVAL_SECONDS), in bounded batches."""
    with open_host(database_url, home, read_only=True) as host:  # never creates a database
        deleted = host.retention.purge()
        policy = host.retention.policy
    for kind, count in deleted.items():
        days = policy.days(kind)
        kept = f"older than {days:g} days" if days > 0 else "kept forever"
        out.print(f"{kind}: {count} deleted ({kept})", markup=False)


@secrets_app.command("rotate-key")
@handles_errors
def rotate_key(database_url: DatabaseOption = None, home: HomeOption = None) -> None:
    """Re-encrypt every sealed setting with the first key of CRM_HOST_SECRET_KEYS. Run it
    after every node has restarted with the new key first; then remove the old key."""
    with open_host(database_url, home) as host:
        count = rotate_sealed_settings(host.db, host.box)
        requests = rotate_stored_requests(host.db, host.box)
    out.print(f"{count} sealed settings re-encrypted with the current key")
    out.print(f"{requests} stored webhook requests re-encrypted with the current key")
