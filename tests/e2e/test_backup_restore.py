"""``crm-host backup`` / ``restore`` against a real ``crm-host serve``: a backup taken under
write load is a consistent, private copy; a restore is refused while a server uses the
database, brings back exactly the backed-up data afterwards, and brings its key when asked."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import httpx
import pytest

from host.platform import Host
from host.serving_lock import exclusive_use
from tests.cli_runner import Cli
from tests.e2e.server import free_port, running_host
from tests.host.conftest import SECRET_API_KEY, json_body, make_settings


def _tenants(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM tenants")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class WriteLoad:
    """Tenants created and the sample module enabled for each, as fast as the server takes
    them, until stopped; ``done`` lists the tenants whose two calls both succeeded."""

    def __init__(self, client: httpx.Client):
        self.client = client
        self.done: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            tenant = f"t{index:05d}"
            index += 1
            created = self.client.post("/api/v1/tenants", json={"id": tenant, "name": tenant})
            enabled = self.client.put(
                f"/api/v1/tenants/{tenant}/modules/sendmail",
                json={"settings": {"api_key": f"{SECRET_API_KEY}-{tenant}"}},
            )
            if created.status_code == 201 and enabled.status_code == 200:
                self.done.append(tenant)
            else:
                self.failures.append(f"{created.status_code} {enabled.text}")

    def __enter__(self) -> WriteLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


def _wait_for(load: WriteLoad, count: int) -> None:
    for _ in range(600):
        if len(load.done) >= count or load.failures:
            return
        threading.Event().wait(0.05)


@pytest.fixture
def served(tmp_path: Path):
    with running_host(tmp_path) as host, host.client() as client:
        assert client.post("/api/v1/modules", json=json_body()).status_code == 201
        yield host, client


def test_backup_while_serving_under_write_load_is_consistent_and_private(served) -> None:
    host, client = served
    cli = Cli.in_dir(host.workdir)
    backup = host.workdir / "backup.db"
    with WriteLoad(client) as load:
        _wait_for(load, 5)
        before = list(load.done)
        result = cli.run("backup", str(backup), "--with-key")
        after = list(load.done)
        _wait_for(load, len(after) + 3)  # the server kept writing after the backup
    assert not load.failures, load.failures[:3]
    assert result.returncode == 0, result.stderr
    assert "backup written" in result.stdout
    assert "decrypt every tenant's secrets" in result.stderr  # the --with-key warning
    assert len(load.done) > len(after)
    key = Path(f"{backup}.key")
    assert _mode(backup) == 0o600 and _mode(key) == 0o600
    assert key.read_bytes() == Path(f"{host.workdir / 'host.db'}.key").read_bytes()
    assert not Path(f"{backup}-wal").exists()  # one self-contained file
    with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        tenants = {row[0] for row in copy.execute("SELECT id FROM tenants")}
        enabled = {row[0] for row in copy.execute("SELECT tenant_id FROM enablements")}
    assert set(before) <= tenants  # everything confirmed before the backup began
    assert tenants <= {*after, *load.done}  # nothing that did not exist
    # a snapshot: tenants form a prefix of the creation order, each enabled but maybe the last
    ordered = sorted(tenants)
    assert ordered == [f"t{i:05d}" for i in range(len(ordered))]
    assert set(ordered[:-1]) <= enabled
    assert host.process.poll() is None  # still serving
    assert client.get("/healthz").status_code == 200


def test_restore_is_refused_while_serving_and_restores_exactly_the_backup(tmp_path) -> None:
    cli = Cli.in_dir(tmp_path)
    backup = tmp_path / "backup.db"
    with running_host(tmp_path) as host, host.client() as client:
        assert client.post("/api/v1/tenants", json={"id": "kept", "name": "K"}).status_code == 201
        assert cli.run("backup", str(backup)).returncode == 0
        assert client.post("/api/v1/tenants", json={"id": "later", "name": "L"}).status_code == 201
        refused = cli.run("restore", str(backup), "--yes")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1] == (
            f"error: a server is using {tmp_path / 'host.db'} (crm-host serve holds "
            f"{tmp_path / 'host.db.lock'}); stop every server on it first"
        )
        assert "Traceback" not in refused.stderr
        # nothing was replaced, and the server kept serving
        listed = client.get("/api/v1/tenants").json()
        assert {t["id"] for t in listed} == {"kept", "later"}
    restored = cli.run("restore", str(backup), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "(1 tenants)" in restored.stdout
    with running_host(tmp_path) as host, host.client() as client:
        listed = client.get("/api/v1/tenants").json()
        assert {t["id"] for t in listed} == {"kept"}


def test_restore_on_a_fresh_machine_brings_the_key_when_backed_up_with_it(tmp_path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    with running_host(old) as host, host.client() as client:
        assert client.post("/api/v1/modules", json=json_body()).status_code == 201
        assert client.post("/api/v1/tenants", json={"id": "acme", "name": "A"}).status_code == 201
        put = client.put(
            "/api/v1/tenants/acme/modules/sendmail", json={"settings": {"api_key": SECRET_API_KEY}}
        )
        assert put.status_code == 200
    plain, keyed = tmp_path / "plain.db", tmp_path / "keyed.db"
    made = Cli.in_dir(old).run("backup", str(plain))
    assert made.returncode == 0 and "is not in the backup" in made.stderr
    assert Cli.in_dir(old).run("backup", str(keyed), "--with-key").returncode == 0
    fresh = Cli.in_dir(new)
    # without its key the backup cannot be used here: refused, nothing created
    refused = fresh.run("restore", str(plain), "--yes")
    assert refused.returncode == 1
    assert "error: the backup holds sealed secrets but there is no key" in refused.stderr
    assert not (new / "host.db").exists() and not (new / "host.db.key").exists()
    restored = fresh.run("restore", str(keyed), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert _mode(new / "host.db") == 0o600 and _mode(new / "host.db.key") == 0o600
    again = Host(make_settings(new / "host.db", secret_key=None), load_entry_points=False)
    try:
        assert again.tenants.runtime("acme", "sendmail").settings["api_key"] == SECRET_API_KEY
    finally:
        again.close()
    assert SECRET_API_KEY.encode() not in (new / "host.db").read_bytes()


def test_serve_does_not_start_during_a_restore(tmp_path) -> None:
    database = tmp_path / "host.db"
    with exclusive_use(database):
        cli = Cli.in_dir(tmp_path, CRM_HOST_ADMIN_TOKEN="t" * 32)
        result = cli.run("serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: a restore of {database} is in progress; start the server when it is done"
    )
    assert not database.exists()


def test_bad_backup_and_restore_requests_are_one_line_each(tmp_path) -> None:
    cli = Cli.in_dir(tmp_path)
    assert cli.run("tenant", "create", "acme", "--name", "A").returncode == 0
    existing = tmp_path / "exists.db"
    existing.write_text("keep me")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database at all")
    cases = {
        ("backup", str(existing)): f"error: {existing} already exists; choose a new backup path",
        ("backup", str(tmp_path / "no" / "such" / "x.db")): "error: backup path is invalid",
        ("restore", str(junk), "--yes"): "error: not a crm-host backup",
        ("restore", str(tmp_path / "missing.db"), "--yes"): "error: no backup at",
    }
    for args, expected in cases.items():
        result = cli.run(*args)
        assert result.returncode == 1, args
        assert result.stderr.splitlines()[1].startswith(expected), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert existing.read_text() == "keep me"
    assert _tenants(tmp_path / "host.db") == {"acme"}
    postgres = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL="postgresql://crm@127.0.0.1:1/crm")
    for command in ("backup", "restore"):
        result = postgres.run(command, str(tmp_path / "pg.db"))
        assert result.returncode == 1
        assert f"error: {command} works on SQLite databases only" in result.stderr
        assert "pg_dump" in result.stderr


def test_serve_on_a_database_in_a_missing_folder_is_one_line(tmp_path) -> None:
    database = tmp_path / "missing" / "host.db"
    cli = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL=f"sqlite:///{database}")
    result = cli.run("serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no folder {database.parent} for the database host.db"
    assert not database.parent.exists()
