"""``crm-host doctor`` through the real command: every section reports what an operator needs,
failures exit 1, and a read of a data directory never creates a database."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.cli_runner import Cli


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


@pytest.fixture
def smtp_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def _rows(stdout: str) -> dict[str, list[str]]:
    """check name -> its states, from the Checks table."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) == 3 and cells[1] in ("ok", "warning", "failed"):
            rows.setdefault(cells[0], []).append(cells[1])
    return rows


def test_a_fresh_home_is_reported_and_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = Cli.in_dir(tmp_path).run("doctor", "--home", str(home))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    assert rows["configuration"] == ["ok"]
    assert rows["egress waivers"] == ["ok"]
    assert rows["smtp"] == ["ok"]
    assert "Sandbox layers" in result.stdout


def test_database_and_migrations_are_checked(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path)
    assert cli.run("tenant", "create", "acme", "--name", "Acme").returncode == 0
    result = cli.run("doctor")
    assert result.returncode == 0, result.stdout
    rows = _rows(result.stdout)
    assert rows["database"] == ["ok"] and rows["migrations"] == ["ok"]
    assert "at the newest revision" in result.stdout
    assert rows["file mode"] == ["ok", "ok"]  # the database and its key file are 0600
    (tmp_path / "host.db.key").chmod(0o644)
    loose = cli.run("doctor")
    assert loose.returncode == 1
    assert _rows(loose.stdout)["file mode"] == ["ok", "failed"]


def test_missing_sqlite_file_is_a_warning_not_a_new_database(tmp_path: Path) -> None:
    result = Cli.in_dir(tmp_path).run("doctor")
    assert result.returncode == 0
    assert _rows(result.stdout)["database"] == ["warning"]
    assert not (tmp_path / "host.db").exists()


def test_unreachable_database_fails_in_one_line(tmp_path: Path) -> None:
    broken = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL="postgresql://u:p@127.0.0.1:1/x")
    broken.env["CRM_HOST_SECRET_KEY"] = "a-passphrase-of-enough-length"
    result = broken.run("doctor")
    assert result.returncode == 1
    assert _rows(result.stdout)["database"] == ["failed"]
    assert "Traceback" not in result.stdout + result.stderr
    assert "u:p@" not in result.stdout, "the password is never printed"


def test_broad_and_invalid_egress_waivers(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path, CRM_HOST_EGRESS_ALLOW="127.0.0.1:9000,10.0.0.0/8,not a host")
    result = cli.run("doctor")
    assert result.returncode == 1
    assert _rows(result.stdout)["egress waivers"] == ["ok", "warning", "failed"]
    assert "10.0.0.0/8 waives 16,777,216 addresses" in result.stdout


def test_smtp_relay_is_tried(tmp_path: Path, smtp_port: int) -> None:
    up = Cli.in_dir(tmp_path, CRM_HOST_SMTP_HOST="127.0.0.1", CRM_HOST_SMTP_PORT=str(smtp_port))
    result = up.run("doctor")
    assert result.returncode == 0, result.stdout
    assert _rows(result.stdout)["smtp"] == ["ok"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = str(sock.getsockname()[1])
    down = Cli.in_dir(tmp_path, CRM_HOST_SMTP_HOST="127.0.0.1", CRM_HOST_SMTP_PORT=closed)
    result = down.run("doctor")
    assert result.returncode == 1
    assert _rows(result.stdout)["smtp"] == ["failed"]
