"""Key rotation across several nodes, through the real ``crm-host``: ``CRM_HOST_SECRET_KEYS``
(the first key encrypts, every key decrypts) and ``crm-host secrets rotate-key``, in the
documented order add key → restart nodes → rotate → remove the old key."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from host.marketing.webhook_store import seal_request, store_request
from host.platform import Host
from host.secrets import SecretKeyError
from host.settings_schema import SECRET_MARKER
from tests.cli_runner import Cli
from tests.e2e.server import running_host
from tests.host.conftest import SECRET_API_KEY, make_settings, write_package

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def _sealed(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT secrets_encrypted FROM enablements WHERE secrets_encrypted IS NOT NULL "
            "ORDER BY tenant_id"
        ).fetchall()
    return [row[0] for row in rows]


def _tenants(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM tenants")]


def _api_key_with(db: Path, keys: str, tenant: str) -> str:
    """What a node started with ``CRM_HOST_SECRET_KEYS=keys`` hands the module."""
    host = Host(make_settings(db, secret_key=None, secret_keys=keys), load_entry_points=False)
    try:
        return str(host.tenants.runtime(tenant, "sendmail").settings["api_key"])
    finally:
        host.close()


@pytest.fixture
def stored(tmp_path: Path) -> Cli:
    """Three tenants whose sendmail api_key was sealed under the old key only."""
    cli = Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEYS=OLD_KEY)
    assert cli.run("module", "upload", str(write_package(tmp_path / "pkg"))).returncode == 0
    for tenant in ("acme", "beta", "gamma"):
        assert cli.run("tenant", "create", tenant, "--name", tenant).returncode == 0
        enabled = cli.run(
            "tenant", "enable", tenant, "sendmail", "--set", f"api_key={SECRET_API_KEY}-{tenant}"
        )
        assert enabled.returncode == 0, enabled.stderr
    return cli


def test_add_restart_rotate_remove(stored: Cli) -> None:
    db = stored.workdir / "host.db"
    before = _sealed(db)
    assert len(before) == 3
    # 1. the new key is added first: nodes still read what the old key sealed
    assert _api_key_with(db, f"{NEW_KEY},{OLD_KEY}", "acme") == f"{SECRET_API_KEY}-acme"
    # 2. rotate: every sealed value is rewritten under the new key
    stored.env["CRM_HOST_SECRET_KEYS"] = f"{NEW_KEY},{OLD_KEY}"
    rotated = stored.run("secrets", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "3 sealed settings re-encrypted" in rotated.stdout
    after = _sealed(db)
    assert after != before
    for token in after:
        Fernet(NEW_KEY.encode()).decrypt(token.encode())
        with pytest.raises(InvalidToken):
            Fernet(OLD_KEY.encode()).decrypt(token.encode())
    # 3. the old key removed: everything still decrypts, on the CLI and in a node
    stored.env["CRM_HOST_SECRET_KEYS"] = NEW_KEY
    listed = stored.run("tenant", "list")
    assert listed.returncode == 0, listed.stderr
    for tenant in ("acme", "beta", "gamma"):
        assert _api_key_with(db, NEW_KEY, tenant) == f"{SECRET_API_KEY}-{tenant}"
    assert all(SECRET_API_KEY not in (r.stdout + r.stderr) for r in (rotated, listed))


def test_removing_the_old_key_before_rotating_is_the_clear_start_up_error(stored: Cli) -> None:
    db = stored.workdir / "host.db"
    before = _sealed(db)
    stored.env["CRM_HOST_SECRET_KEYS"] = NEW_KEY
    for command in (("tenant", "list"), ("secrets", "rotate-key")):
        result = stored.run(*command)
        assert result.returncode == 1
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith("error: stored secrets cannot be decrypted: no configured key opens them")
        )
        assert "Traceback" not in result.stderr
    assert _sealed(db) == before  # nothing rewritten
    with pytest.raises(SecretKeyError):
        _api_key_with(db, NEW_KEY, "acme")


def test_rotating_twice_is_harmless(stored: Cli) -> None:
    stored.env["CRM_HOST_SECRET_KEYS"] = f"{NEW_KEY},{OLD_KEY}"
    assert stored.run("secrets", "rotate-key").returncode == 0
    again = stored.run("secrets", "rotate-key")
    assert again.returncode == 0, again.stderr
    assert _api_key_with(stored.workdir / "host.db", NEW_KEY, "gamma") == f"{SECRET_API_KEY}-gamma"


def test_one_key_setting_at_a_time_and_each_key_checked(tmp_path: Path) -> None:
    both = Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEY="x" * 20, CRM_HOST_SECRET_KEYS=NEW_KEY)
    result = both.run("tenant", "create", "acme", "--name", "Acme")
    assert result.returncode == 1
    assert "set CRM_HOST_SECRET_KEYS or CRM_HOST_SECRET_KEY, not both" in result.stderr
    short = Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEYS=f"{NEW_KEY},short")
    result = short.run("tenant", "create", "acme", "--name", "Acme")
    assert result.returncode == 1
    assert (
        "error: CRM_HOST_SECRET_KEYS key 2 must be a Fernet key or at least 16 characters"
        in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert _tenants(tmp_path / "host.db") == []  # nothing was created


def test_the_single_key_setting_still_works(tmp_path: Path) -> None:
    passphrase = "a long passphrase of the operator"
    cli = Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEY=passphrase)
    assert cli.run("module", "upload", str(write_package(tmp_path / "pkg"))).returncode == 0
    assert cli.run("tenant", "create", "acme", "--name", "Acme").returncode == 0
    assert (
        cli.run("tenant", "enable", "acme", "sendmail", "--set", "api_key=k0123456789").returncode
        == 0
    )
    # the same passphrase as the second of CRM_HOST_SECRET_KEYS opens it: moving to the list
    # form is the first step of a rotation
    assert _api_key_with(tmp_path / "host.db", f"{NEW_KEY},{passphrase}", "acme") == "k0123456789"


def test_rotation_while_a_node_serves_and_after_its_restart(stored: Cli) -> None:
    """A node serving with both keys keeps answering while rotate-key runs beside it, and
    starts again with the new key alone afterwards."""
    token = "rotation-admin-token-0123456789"
    both = {"CRM_HOST_SECRET_KEYS": f"{NEW_KEY},{OLD_KEY}", "CRM_HOST_ADMIN_TOKEN": token}
    stored.env.update(both)
    with (
        running_host(stored.workdir, configured=False, **stored_env(stored)) as node,
        node.client(token) as client,
    ):
        assert client.get("/api/v1/tenants/acme/modules/sendmail").status_code == 200
        rotated = stored.run("secrets", "rotate-key")
        assert rotated.returncode == 0, rotated.stderr
        after = client.get("/api/v1/tenants/beta/modules/sendmail")
        assert after.status_code == 200
        assert after.json()["settings"]["api_key"] == SECRET_MARKER
    stored.env["CRM_HOST_SECRET_KEYS"] = NEW_KEY
    with (
        running_host(stored.workdir, configured=False, **stored_env(stored)) as node,
        node.client(token) as client,
    ):
        assert client.get("/api/v1/tenants/gamma/modules/sendmail").status_code == 200
    assert _api_key_with(stored.workdir / "host.db", NEW_KEY, "beta") == f"{SECRET_API_KEY}-beta"


def stored_env(cli: Cli) -> dict[str, str]:
    return {k: v for k, v in cli.env.items() if k.startswith("CRM_HOST_")}


def test_rotation_reseals_stored_webhook_requests_too(stored: Cli) -> None:
    db = stored.workdir / "host.db"
    old = Host(make_settings(db, secret_key=None, secret_keys=OLD_KEY), load_entry_points=False)
    try:
        with old.db.transaction() as session:
            sealed = seal_request(old.box, "POST", "https://h/hooks/acme/sendmail/t", [], "", b"{}")
            store_request(session, "acme", "sendmail", sealed, 2)
    finally:
        old.close()
    stored.env["CRM_HOST_SECRET_KEYS"] = f"{NEW_KEY},{OLD_KEY}"
    rotated = stored.run("secrets", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "1 stored webhook requests re-encrypted" in rotated.stdout
    new = Host(make_settings(db, secret_key=None, secret_keys=NEW_KEY), load_entry_points=False)
    try:
        shown = new.webhooks.stored_requests("acme")
    finally:
        new.close()
    assert [(r["method"], r["url"], r["body"]) for r in shown] == [
        ("POST", "https://h/hooks/acme/sendmail/***", "{}")
    ]
