"""Settings secrets: never in an API answer, never in the database file (main file or WAL),
never in logs; decrypted only for the module call; a wrong key is a clear error."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from host.secrets import SecretBox, SecretKeyError, fernet_from_setting, key_file_fernet
from host.settings_schema import SECRET_MARKER
from tests.cli_runner import Cli
from tests.host.conftest import (
    SECRET_API_KEY,
    checkpoint,
    database_bytes,
    email_manifest,
    json_body,
    make_host,
)
from tests.postgres import database_url

NESTED_SECRET = "nested-token-4d2b8e61a0"


@pytest.fixture
def enabled(client, admin, caplog):
    """The sample module enabled for ``acme`` with a secret api_key, every response kept."""
    caplog.set_level(logging.DEBUG)
    responses = [
        client.post("/api/v1/modules", headers=admin, json=json_body()),
        client.post("/api/v1/tenants", headers=admin, json={"id": "acme", "name": "Acme"}),
        client.put(
            "/api/v1/tenants/acme/modules/sendmail",
            headers=admin,
            json={"settings": {"api_key": SECRET_API_KEY, "sender_email": "a@acme.test"}},
        ),
        client.patch(
            "/api/v1/tenants/acme/modules/sendmail",
            headers=admin,
            json={"settings": {"batch_size": 50}},
        ),
        client.get("/api/v1/tenants/acme/modules/sendmail", headers=admin),
        client.get("/api/v1/tenants/acme/modules", headers=admin),
        client.get("/api/v1/tenants", headers=admin),
        client.get("/api/v1/tenants/acme", headers=admin),
        client.get("/api/v1/modules", headers=admin),
        client.get("/api/v1/modules/sendmail/versions/1.0.0", headers=admin),
    ]
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    return responses


def test_secret_never_in_api_responses(enabled) -> None:
    for response in enabled:
        assert SECRET_API_KEY not in response.text
        assert SECRET_API_KEY not in str(response.headers)
    assert enabled[2].json()["settings"] == {
        "api_key": SECRET_MARKER,
        "sender_email": "a@acme.test",
    }
    assert enabled[4].json()["settings"]["api_key"] == SECRET_MARKER


@pytest.mark.sqlite_only  # the file and its WAL
def test_secret_never_in_the_database_files(enabled, db_path: Path) -> None:
    raw = database_bytes(db_path)  # main file + WAL as they are on disk, not checkpointed
    assert Path(str(db_path) + "-wal").exists()
    assert b"a@acme.test" in raw  # the check would see a plaintext value if one were there
    assert SECRET_API_KEY.encode() not in raw
    checkpoint(db_path)
    assert SECRET_API_KEY.encode() not in database_bytes(db_path)


def test_secret_never_in_logs(enabled, caplog) -> None:
    records = caplog.get_records("setup")
    assert records  # something was logged, so the check means something
    for record in records:
        assert SECRET_API_KEY not in record.getMessage()
        assert SECRET_API_KEY not in repr(record.args)


def test_secret_decrypted_only_for_the_module(enabled, host) -> None:
    runtime = host.tenants.runtime("acme", "sendmail")
    assert runtime.settings == {
        "api_key": SECRET_API_KEY,
        "sender_email": "a@acme.test",
        "batch_size": 50,
    }
    assert SECRET_API_KEY in runtime.secret_values
    assert SECRET_API_KEY not in repr(runtime)


def test_nested_secret_is_sealed_too(host, upload, tenant, db_path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "auth": {
                "type": "object",
                "properties": {"token": {"type": "string", "writeOnly": True}},
            }
        },
    }
    upload(email_manifest(id="nested", settings=schema))
    info = host.tenants.configure("acme", "nested", settings={"auth": {"token": NESTED_SECRET}})
    assert info.settings == {"auth": {"token": SECRET_MARKER}}
    assert NESTED_SECRET.encode() not in database_bytes(db_path)
    assert host.tenants.runtime("acme", "nested").settings == {"auth": {"token": NESTED_SECRET}}


def test_restart_with_the_same_key_reads_secrets(enabled, host, db_path) -> None:
    host.close()
    again = make_host(db_path)
    try:
        assert again.tenants.runtime("acme", "sendmail").settings["api_key"] == SECRET_API_KEY
    finally:
        again.close()


def test_restart_with_a_wrong_key_fails_at_start_up(enabled, host, db_path) -> None:
    host.close()
    with pytest.raises(SecretKeyError, match="CRM_HOST_SECRET_KEY differs"):
        make_host(db_path, secret_key="another passphrase, also long enough")


def test_serve_with_a_wrong_key_exits_with_one_line(enabled, host, db_path) -> None:
    host.close()
    env = {
        "PATH": "/usr/bin:/bin",
        "CRM_HOST_DATABASE_URL": database_url(db_path),
        "CRM_HOST_SECRET_KEY": "another passphrase, also long enough",
        "CRM_HOST_ADMIN_TOKEN": "t" * 32,
    }
    result = subprocess.run(
        [str(Path(sys.executable).with_name("crm-host")), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: stored secrets cannot be decrypted")
    )
    assert "Traceback" not in result.stderr
    assert SECRET_API_KEY not in result.stderr


def test_key_file_is_created_beside_the_database(tmp_path) -> None:
    db = tmp_path / "keyless.db"
    first = make_host(db, secret_key=None)
    try:
        first.tenants.create("acme", "Acme")
        sealed = first.box.seal({"k": "v"})
    finally:
        first.close()
    key_file = Path(str(db) + ".key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = make_host(db, secret_key=None)
    try:
        assert second.box.open(sealed) == {"k": "v"}
    finally:
        second.close()


def test_key_forms() -> None:
    key = Fernet.generate_key().decode()
    box = SecretBox(fernet_from_setting(key))
    assert SecretBox(Fernet(key.encode())).open(box.seal({"a": 1})) == {"a": 1}
    passphrase = SecretBox(fernet_from_setting("x" * 16))
    assert passphrase.open(passphrase.seal({"a": 1})) == {"a": 1}
    with pytest.raises(SecretKeyError, match="at least 16"):
        fernet_from_setting("short")


def test_empty_secrets_are_not_sealed() -> None:
    box = SecretBox(fernet_from_setting("x" * 16))
    assert box.seal({}) is None
    assert box.open(None) == {}


def test_key_file_reused(tmp_path) -> None:
    path = tmp_path / "k.key"
    token = key_file_fernet(path).encrypt(b"x")
    assert key_file_fernet(path).decrypt(token) == b"x"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.sqlite_only  # file modes
def test_database_wal_and_shm_are_private_to_the_host_user(enabled, db_path: Path) -> None:
    """They hold webhook tokens, API key hashes and contacts: 0600 like the key file."""
    companions = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
    assert all(p.exists() for p in companions)  # the host really wrote through WAL
    assert {p.name: _mode(p) for p in companions} == {p.name: 0o600 for p in companions}


@pytest.mark.sqlite_only  # file modes
def test_an_existing_readable_database_is_narrowed_at_start(enabled, host, db_path) -> None:
    host.close()
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db_path}{suffix}")
        if path.exists():
            path.chmod(0o644)  # as older versions (and SQLite's default) left them
    again = make_host(db_path)
    try:
        assert again.tenants.runtime("acme", "sendmail").settings["api_key"] == SECRET_API_KEY
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{db_path}{suffix}")
            assert not path.exists() or _mode(path) == 0o600, path
    finally:
        again.close()


def test_the_cli_creates_a_private_database(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEY="a passphrase of the test suite, long enough")
    created = cli.run("tenant", "create", "acme", "--name", "Acme")
    assert created.returncode == 0, created.stderr
    database = tmp_path / "host.db"
    assert _mode(database) == 0o600
    for suffix in ("-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        assert not path.exists() or _mode(path) == 0o600
