"""Where a benchmark's databases live, chosen on its command line: SQLite files in its
temporary directory (the default), a throwaway PostgreSQL cluster started for the run
(``--database postgresql``: ``tests/postgres.py``'s cluster, on a private unix socket with no
TCP port, stopped at the end), or an existing PostgreSQL server (``--database-url``, a URL of
a database there, e.g. ``postgres``, as a role allowed to create databases: the benchmark
creates its own databases next to it, empty or copied from ``--database-template``, and drops
them at the end).

Each database is handed out empty or at the schema's head; ``Host.open()`` migrates it.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to use instead of a throwaway cluster (implies "
        "--database postgresql); the benchmark creates and drops its own databases there",
    )
    parser.add_argument(
        "--database-template",
        metavar="NAME",
        help="with --database-url: create the databases as copies of this one (e.g. one "
        "already migrated to the schema's head, which saves migrating each)",
    )


def kind(args: argparse.Namespace) -> str:
    return "postgresql" if args.database_url else str(args.database)


@contextmanager
def databases(args: argparse.Namespace, workdir: Path, count: int) -> Iterator[list[str]]:
    """``count`` fresh database URLs, removed afterwards."""
    if args.database_url:
        with _on_server(args.database_url, count, args.database_template) as urls:
            yield urls
    elif args.database == "postgresql":
        from tests.postgres import start_cluster

        cluster = start_cluster()
        try:
            yield [cluster.database() for _ in range(count)]
        finally:
            cluster.stop()
    else:
        yield [f"sqlite:///{workdir / f'bench-{n}.db'}" for n in range(count)]


@contextmanager
def _on_server(url: str, count: int, template: str | None) -> Iterator[list[str]]:
    server = make_url(url)
    if not server.drivername.startswith("postgresql"):
        raise SystemExit(f"--database-url: not a PostgreSQL URL: {server.drivername}")
    names = [f"crm_bench_{secrets.token_hex(4)}_{n}" for n in range(count)]
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        try:
            yield [
                server.set(database=name).render_as_string(hide_password=False) for name in names
            ]
        finally:
            with admin.connect() as connection:
                for name in names:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
