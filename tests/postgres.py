"""A throwaway PostgreSQL cluster for the test run, and fresh databases cut from a migrated
template.

The cluster lives in a private temporary directory and listens on a unix socket there only
(no TCP port, so neither other users of the machine nor the sandbox workers, which run as
``nobody``, can reach it). PostgreSQL refuses to run as root, so under root its programs run
as the ``postgres`` user through ``runuser``; as anyone else they run as that user.

``CRM_HOST_TEST_POSTGRES=required`` (set by ``.ci/run``) turns a missing PostgreSQL into a
failure; without it the PostgreSQL parametrisations are skipped with the reason why.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import make_url

REQUIRED_ENV = "CRM_HOST_TEST_POSTGRES"
TEMPLATE = "crm_template"
SERVER_USER = "postgres"


class PostgresUnavailable(Exception):
    """Why no test cluster can be started here (shown as the skip reason)."""


def postgres_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip().lower() == "required"


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major_version)
    if not found:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def _major_version(pg_ctl: str) -> int:
    version = Path(pg_ctl).parent.parent.name
    return int(version) if version.isdigit() else 0


@dataclass
class Cluster:
    """A running cluster; ``database()`` hands out a new database at the schema's head."""

    base: Path
    bin: Path
    run_as: list[str]
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> str:
        return str(self.base)

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of ``database`` over the private socket (psycopg 3)."""
        return f"postgresql+psycopg://{SERVER_USER}@/{database}?host={self.socket_dir}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to the maintenance database (CREATE/DROP DATABASE)."""
        return psycopg.connect(
            host=self.socket_dir, user=SERVER_USER, dbname="postgres", autocommit=True
        )

    def create_template(self) -> None:
        """The template every test database is copied from: migrated to head once, so a
        test's ``Host.open()`` finds nothing to do."""
        from host.db.engine import Database
        from host.db.migrate import upgrade_to_head

        with self.admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        database = Database(self.url(TEMPLATE))
        try:
            upgrade_to_head(database.engine)
        finally:
            database.dispose()

    def database(self, *, migrated: bool = True) -> str:
        """The URL of a new database: a copy of the migrated template, or empty."""
        name = f"crm_test_{next(self._names)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if migrated:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(TEMPLATE))
            if _major_version(str(self.bin / "pg_ctl")) >= 15:
                # A file copy of the small template beats WAL-logging it block by block.
                statement += sql.SQL(" STRATEGY FILE_COPY")
        with self.admin() as connection:
            connection.execute(statement)
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database handed out by ``database()``, closing what still uses it."""
        name = make_url(url).database
        assert name and name.startswith("crm_test_"), url
        with self.admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.base / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        # The directory holds every database the run made; on a busy disk deleting it can
        # take longer than the last test's timeout, so a detached ``rm`` finishes the job
        # while pytest exits.
        subprocess.Popen(
            ["rm", "-rf", "--", str(self.base)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_cluster() -> Cluster:
    """initdb and start a cluster in a new private directory; raises PostgresUnavailable with
    the reason (and the server's log) when that is not possible."""
    binaries = _binaries()
    base = Path(tempfile.mkdtemp(prefix="crm-host-test-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            server = pwd.getpwnam(SERVER_USER)
        except KeyError:
            shutil.rmtree(base)
            raise PostgresUnavailable(
                f"running as root and there is no {SERVER_USER} user"
            ) from None
        os.chown(base, server.pw_uid, server.pw_gid)
        run_as = ["runuser", "-u", SERVER_USER, "--"]
    base.chmod(0o700)
    cluster = Cluster(base, binaries, run_as)
    data = base / "data"
    options = " ".join(
        [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{base}'",
            # A test cluster: durability is not wanted, speed is.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=300",
        ]
    )
    steps = [
        [
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ],
        [
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        ],
    ]
    for step in steps:
        result = subprocess.run([*run_as, *step], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = base / "server.log"
            detail = log.read_text(errors="replace") if log.exists() else ""
            cluster.stop()
            raise PostgresUnavailable(
                f"{Path(step[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}"
                f"\n{detail}"
            )
    try:
        cluster.create_template()
    except BaseException:
        cluster.stop()
        raise
    return cluster


class Backend:
    """Which database ``database_url(path)`` names for the test being run.

    The suite's hosts are built from a SQLite file path (``make_host(db_path)``); while a
    test runs on PostgreSQL, each distinct path instead names a fresh database of the
    cluster (the same path twice is the same database, as the same file would be), dropped
    when the test ends. One switch here, set by the parametrised ``database_backend``
    fixture, saves every test from knowing which backend it runs on."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self._urls: dict[Path, str] = {}

    def url(self, path: Path, *, migrated: bool = True) -> str:
        if self.cluster is None:
            return f"sqlite:///{path}"
        key = Path(path).absolute()
        if key not in self._urls:
            self._urls[key] = self.cluster.database(migrated=migrated)
        return self._urls[key]

    def postgres_url(self, path: Path) -> str | None:
        """The PostgreSQL database standing for ``path`` in this test, if there is one."""
        if self.cluster is None:
            return None
        return self._urls.get(Path(path).absolute())

    def use(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def release(self) -> None:
        """Back to SQLite; the test's databases are dropped."""
        cluster, urls = self.cluster, list(self._urls.values())
        self.cluster, self._urls = None, {}
        if cluster is not None:
            for url in urls:
                cluster.drop(url)


backend = Backend()


def database_url(path: Path, *, migrated: bool = True) -> str:
    """The URL a test host gets for ``path``: that SQLite file, or on the PostgreSQL
    parametrisation the database standing for it (a copy of the migrated template, or with
    ``migrated=False`` an empty database, as a new file is)."""
    return backend.url(path, migrated=migrated)
