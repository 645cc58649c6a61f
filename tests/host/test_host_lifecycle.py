"""Building a Host wires objects and nothing else; ``open()`` readies the database,
``start()`` the background work, ``close()`` stops it all. CLI commands open, never start;
a read-only command never migrates."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from host.cli.host_options import open_host
from host.config import load_settings
from host.db.migrate import alembic_config
from host.platform import Host
from host.secrets import SecretKeyError
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, checkpoint, make_settings

BACKGROUND = ("crm-host-outbox", "campaign-jobs-", "tenant-purge")


def background_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(BACKGROUND))


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def smtp_settings(db_path: Path, **more: object):  # type: ignore[no-untyped-def]
    """Settings with an SMTP relay, so the outbox has a thread to start (nothing listens:
    no test here sends mail)."""
    return make_settings(db_path, smtp_host="127.0.0.1", smtp_port=9, **more)


def test_constructing_touches_no_file_and_starts_no_thread(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = make_settings(home / "host.db", home=home, secret_key=None)
    host = Host(settings, load_entry_points=False)
    try:
        assert not home.exists()  # no data directory, no database, no key file
        assert background_threads() == []
    finally:
        host.close()
    assert not home.exists()  # closing an unopened host creates nothing either


def test_open_migrates_and_start_runs_the_background_work(tmp_path: Path) -> None:
    home = tmp_path / "home"
    host = Host(
        smtp_settings(home / "host.db", home=home, secret_key=None), load_entry_points=False
    )
    try:
        host.open()
        assert {"host.db", "host.db.key"} <= set(
            files_under(home)
        )  # the key is loaded (and made) by open()
        assert host.tenants.list() == []  # migrated
        assert background_threads() == []  # open() starts nothing
        host.start()
        assert background_threads() == [
            "campaign-jobs-0",
            "campaign-jobs-1",
            "crm-host-outbox",
            "tenant-purge",
        ]
        host.start()  # idempotent
        assert len(background_threads()) == 4
    finally:
        host.close()
    assert background_threads() == []


def test_host_as_a_context_manager_starts_and_closes(tmp_path: Path) -> None:
    with Host(smtp_settings(tmp_path / "host.db"), load_entry_points=False) as host:
        assert "crm-host-outbox" in background_threads()
        tenant, _key = host.tenants.create("acme", "Acme")
    assert background_threads() == []
    with Host(make_settings(tmp_path / "host.db"), load_entry_points=False) as again:
        assert [t.id for t in again.tenants.list()] == [tenant.id]


def test_a_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    bad_key = make_settings(tmp_path / "host.db", secret_key="short")
    host = Host(bad_key, load_entry_points=False)
    with pytest.raises(SecretKeyError, match="CRM_HOST_SECRET_KEY must be a Fernet key"):
        host.__enter__()
    assert background_threads() == []


def test_open_host_opens_without_starting_and_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "host.db"
    monkeypatch.setenv("CRM_HOST_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CRM_HOST_SECRET_KEY", "a passphrase of the test suite, long enough")
    with open_host(f"sqlite:///{db}") as host:
        host.tenants.create("acme", "Acme")
        assert host.outbox.relay is not None  # there is mail to deliver to…
        assert background_threads() == []  # …but a command leaves that to the server
    assert background_threads() == []
    with open_host(f"sqlite:///{db}", read_only=True) as reader:
        assert [t.id for t in reader.tenants.list()] == ["acme"]


def _at_previous_revision(db: Path) -> str:
    """A database one migration behind head; returns its revision."""
    url = f"sqlite:///{db}"
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_revision(script.get_current_head())
    previous = head.down_revision
    assert isinstance(previous, str)
    command.upgrade(alembic_config(url), previous)
    with sqlite3.connect(db) as connection:  # as a server leaves it (the host's pragmas)
        connection.execute("PRAGMA journal_mode=WAL")
    checkpoint(db)
    return previous


def revision_of(db: Path) -> str | None:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def test_a_read_only_command_does_not_migrate(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path, CRM_HOST_ADMIN_TOKEN=ADMIN_TOKEN)
    db = tmp_path / "host.db"
    previous = _at_previous_revision(db)
    before = db.read_bytes()

    for args in (("tenant", "list"), ("module", "list"), ("admin", "token", "list")):
        listing = cli.run(*args)
        assert listing.returncode == 1, listing.stdout
        location, error = listing.stderr.strip().split("\n")
        assert location == f"crm-host: database {db}"
        assert error.startswith(f"error: the database is at schema revision {previous}, ")
        assert "run a command that writes (`crm-host serve`) to migrate it" in error
        assert "Traceback" not in listing.stderr
    assert revision_of(db) == previous
    checkpoint(db)  # whatever a command wrote to the WAL lands in the file now
    assert db.read_bytes() == before  # not a byte changed

    created = cli.run("tenant", "create", "acme", "--name", "Acme")  # a writing command migrates
    assert created.returncode == 0, created.stderr
    assert revision_of(db) != previous
    listing = cli.run("tenant", "list")
    assert listing.returncode == 0, listing.stderr
    assert "acme" in listing.stdout


def test_the_host_reads_the_egress_allow_list_not_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sandbox`` takes the allow-list as entries; the host's settings split the variable."""
    monkeypatch.setenv("CRM_HOST_EGRESS_ALLOW", " 127.0.0.1:8080, ,10.0.0.0/8,localhost ")
    assert load_settings().egress_allow == ["127.0.0.1:8080", "10.0.0.0/8", "localhost"]
