"""Which host data a CLI command works on: ``--home`` / ``--database-url`` (over
``CRM_HOST_HOME`` / ``CRM_HOST_DATABASE_URL``), and opening it: :func:`open_host` is THE way a
command gets a host, as a context manager that closes it (a leaf module: command modules
import it, it imports none of them).

A command opens the host, it does not start it: no campaign jobs, no outbox, no purge
thread run behind a one-shot command (``serve`` and ``demo`` start those). A command that
writes migrates the database to this release's schema first; a read-only command
(``read_only=True``) never changes the file: it refuses a database that does not exist and
one whose schema is behind (naming the command that migrates it), instead of upgrading a
server's database as a side effect of ``list``.

Every command that touches the database says where it is (one ``crm-host: database …`` line on
stderr, an absolute path), so an operator never wonders which file a command read. A command
that only reads refuses to create a new, empty SQLite database: run from the wrong account or
with the wrong ``--home`` it says where it looked instead of answering "no tenants".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from host.cli.output import err
from host.config import HostSettings, load_settings
from host.errors import NotFound
from host.platform import Host

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides CRM_HOST_DATABASE_URL.", show_default=False),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Data directory; overrides CRM_HOST_HOME (default ~/.local/share/crm-host).",
        show_default=False,
    ),
]


def host_settings(
    database_url: str | None = None, home: Path | None = None, **more: object
) -> HostSettings:
    """The environment's settings with the command line's overrides applied (and validated)."""
    overrides: dict[str, object] = dict(more)
    if database_url:
        overrides["database_url"] = database_url
    if home is not None:
        overrides["home"] = home
    return load_settings(**overrides)


@contextmanager
def open_host(
    database_url: str | None = None, home: Path | None = None, *, read_only: bool = False
) -> Iterator[Host]:
    """The opened host on the chosen database, after saying which one it is; closed when
    the command's block ends (also on an error)."""
    settings = host_settings(database_url, home)
    err.print(f"crm-host: database {settings.database_location()}", markup=False, highlight=False)
    db_file = settings.sqlite_path()
    if read_only and db_file is not None and not db_file.exists():
        raise NotFound(
            f"no database at {db_file}: nothing is stored there yet (set CRM_HOST_HOME, "
            "--home or --database-url to the server's)"
        )
    host = Host(settings)
    try:
        yield host.open(migrate=not read_only)
    finally:
        host.close()
