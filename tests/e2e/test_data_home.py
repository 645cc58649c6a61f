"""One data directory and admin credentials that persist, through the real ``crm-host``.

With nothing configured, ``serve`` keeps its database and key in ``$XDG_DATA_HOME/crm-host``
(created 0700), whatever the current directory, and stores the admin token it generates on
first start (hashed) so it still works after a restart; CLI commands run from another folder
find the same data, and read-only commands never create an empty database."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import httpx

from tests.e2e.server import CRM_HOST, running_host

FIRST_TOKEN = re.compile(r"admin token 'default' created.*:\n  (\S+)")


def _env(xdg: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_HOST_", "XDG_"))}
    env.update(XDG_DATA_HOME=str(xdg), COLUMNS="200", **extra)
    return env


def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CRM_HOST), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _is_admin(url: str, token: str) -> int:
    return httpx.get(
        url + "/api/v1/modules", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_serve_keeps_its_data_and_first_admin_token_in_the_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    home = xdg / "crm-host"
    serve_dir = tmp_path / "serve-here"
    serve_dir.mkdir()
    with running_host(serve_dir, configured=False, XDG_DATA_HOME=str(xdg)) as server:
        output = server.output()
        token = FIRST_TOKEN.search(output)
        assert token is not None, output
        first = token.group(1)
        assert f"crm-host: database {home / 'crm-host.db'};" in output
        assert _is_admin(server.url, first) == 200
        assert _is_admin(server.url, "crmadm_guess") == 401
        created = server.client(first).post("/api/v1/tenants", json={"id": "acme", "name": "A"})
        assert created.status_code == 201, created.text
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "crm-host.db").is_file()
    assert (home / "crm-host.db.key").is_file()
    assert list(serve_dir.iterdir()) == [serve_dir / "serve.log"], "nothing beside the cwd"
    assert first not in (home / "crm-host.db").read_bytes().decode("latin-1")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = _cli(elsewhere, _env(xdg), "tenant", "list")
    assert listed.returncode == 0, listed.stderr
    assert "acme" in listed.stdout
    assert listed.stderr.splitlines() == [f"crm-host: database {home / 'crm-host.db'}"]

    with running_host(serve_dir, configured=False, XDG_DATA_HOME=str(xdg)) as again:
        assert FIRST_TOKEN.search(again.output()) is None, "the token is shown once"
        assert _is_admin(again.url, first) == 200, "the stored token survives a restart"


def test_admin_tokens_are_named_rotated_and_revoked(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    with running_host(tmp_path, configured=False, XDG_DATA_HOME=str(xdg)) as server:
        first = FIRST_TOKEN.search(server.output())
        assert first is not None
        created = _cli(tmp_path, _env(xdg), "admin", "token", "create", "ci")
        assert created.returncode == 0, created.stderr
        ci = created.stdout.rsplit(" ", 1)[1].strip()
        assert _is_admin(server.url, ci) == 200

        rotated = _cli(tmp_path, _env(xdg), "admin", "token", "rotate", "default")
        assert rotated.returncode == 0, rotated.stderr
        new_default = rotated.stdout.rsplit(" ", 1)[1].strip()
        assert _is_admin(server.url, first.group(1)) == 401, "the old value stops at once"
        assert _is_admin(server.url, new_default) == 200

        listed = _cli(tmp_path, _env(xdg), "admin", "token", "list")
        assert listed.returncode == 0, listed.stderr
        assert "ci" in listed.stdout and "default" in listed.stdout
        assert ci not in listed.stdout and new_default not in listed.stdout

        assert _cli(tmp_path, _env(xdg), "admin", "token", "revoke", "ci").returncode == 0
        assert _is_admin(server.url, ci) == 401
        twice = _cli(tmp_path, _env(xdg), "admin", "token", "create", "default")
        assert twice.returncode == 1
        assert twice.stderr.splitlines()[-1] == (
            "error: admin token default already exists; rotate it instead"
        )
        bad = _cli(tmp_path, _env(xdg), "admin", "token", "create", "Bad Name")
        assert bad.returncode == 1 and "name: must be 1-64" in bad.stderr


def test_a_configured_admin_token_still_works_and_no_default_is_created(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    with running_host(
        tmp_path, configured=False, XDG_DATA_HOME=str(xdg), CRM_HOST_ADMIN_TOKEN="from-the-env-1234"
    ) as server:
        assert FIRST_TOKEN.search(server.output()) is None
        assert _is_admin(server.url, "from-the-env-1234") == 200
    listed = _cli(tmp_path, _env(xdg), "admin", "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Admin tokens: none" in listed.stdout


def test_read_only_commands_never_create_an_empty_database(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    for args in (
        ("tenant", "list"),
        ("module", "list"),
        ("module", "show", "quickstart"),
        ("tenant", "modules", "acme"),
        ("admin", "token", "list"),
    ):
        result = _cli(tmp_path, _env(tmp_path / "xdg"), *args, "--home", str(empty))
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.splitlines()[-1].startswith(
            f"error: no database at {empty / 'crm-host.db'}: nothing is stored there yet"
        ), result.stderr
        assert "Traceback" not in result.stderr
        assert not empty.exists(), args


def test_home_option_and_relative_database_urls_are_printed_absolute(tmp_path: Path) -> None:
    made = _cli(
        tmp_path, _env(tmp_path / "xdg"), "tenant", "create", "t1", "--name", "T", "--home", "data"
    )
    assert made.returncode == 0, made.stderr
    assert made.stderr.splitlines()[0] == f"crm-host: database {tmp_path / 'data' / 'crm-host.db'}"
    relative = _cli(
        tmp_path,
        _env(tmp_path / "xdg"),
        "tenant",
        "list",
        "--database-url",
        "sqlite:///data/crm-host.db",
    )
    assert relative.returncode == 0, relative.stderr
    assert "t1" in relative.stdout
    assert (
        relative.stderr.splitlines()[0] == f"crm-host: database {tmp_path / 'data' / 'crm-host.db'}"
    )
