"""The admin CLI through the real ``crm-host`` command: good paths and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.cli_runner import Cli

QUICKSTART = Path(__file__).resolve().parents[2] / "module_manifests" / "quickstart"
SECRET = "SG.cli-secret-value-0042"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli.in_dir(tmp_path)


def test_upload_list_show(cli: Cli) -> None:
    result = cli.run("module", "upload", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert "quickstart@1.0.0 stored" in result.stdout
    assert "CRM_Marketing_ParseWebhookRequest" in result.stdout

    again = cli.run("module", "upload", str(QUICKSTART))
    assert again.returncode == 0
    assert "already stored (identical)" in again.stdout

    listing = cli.run("module", "list")
    assert listing.returncode == 0
    assert re.search(r"quickstart .* email .* 1\.0\.0", listing.stdout)


def test_upload_zip(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "quickstart.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("manifest.json", "module.py"):
            zf.write(QUICKSTART / name, f"quickstart/{name}")
    result = cli.run("module", "upload", str(archive))
    assert result.returncode == 0, result.stderr
    assert "quickstart@1.0.0 stored" in result.stdout


def test_upload_invalid_module_lists_every_problem(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(QUICKSTART, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["version"] = "1.0"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (bad / "module.py").write_text("def ok():\n    return 1\n\ndef broken(:\n    pass\n")
    result = cli.run("module", "upload", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    location, error = result.stderr.split("\n", 1)
    assert location == f"crm-host: database {cli.workdir / 'host.db'}"
    assert error.startswith("error: module is invalid")
    assert "manifest.json: $.version" in result.stderr
    assert "module.py:4" in result.stderr
    assert "Traceback" not in result.stderr
    assert cli.run("module", "list").stdout.strip() == "Modules: none"


def test_missing_package_path(cli: Cli) -> None:
    result = cli.run("module", "upload", "no/such/dir")
    assert result.returncode == 1
    assert "no/such/dir: no such file or folder" in result.stderr


def test_tenant_enable_with_secret_never_prints_it(cli: Cli) -> None:
    assert cli.run("module", "upload", str(QUICKSTART)).returncode == 0
    created = cli.run("tenant", "create", "acme", "--name", "Acme Corp")
    assert created.returncode == 0, created.stderr
    assert re.search(r"API key \(shown once, store it now\): crm_\S{20,}", created.stdout)

    enabled = cli.run(
        "tenant",
        "enable",
        "acme",
        "quickstart",
        "--secret",
        "api_key",
        "--set",
        "sender_email=news@acme.test",
        input=SECRET + "\n",
    )
    assert enabled.returncode == 0, enabled.stderr
    assert "quickstart@1.0.0 enabled for tenant acme" in enabled.stdout
    assert re.search(
        r"webhook URL: http://127\.0\.0\.1:8000/hooks/acme/quickstart/\S{30,}", enabled.stdout
    )
    assert '"api_key": "***set***"' in enabled.stdout

    shown = cli.run("tenant", "settings", "acme", "quickstart")
    changed = cli.run(
        "tenant", "settings", "acme", "quickstart", "--set", "sender_email=x@acme.test"
    )
    assert changed.returncode == 0, changed.stderr
    assert '"sender_email": "x@acme.test"' in changed.stdout
    for result in (created, enabled, shown, changed):
        assert SECRET not in result.stdout + result.stderr
    database = (cli.workdir / "host.db").read_bytes()
    wal = cli.workdir / "host.db-wal"
    assert SECRET.encode() not in database + (wal.read_bytes() if wal.exists() else b"")


def test_tenant_errors_are_one_line_and_change_nothing(cli: Cli) -> None:
    assert cli.run("module", "upload", str(QUICKSTART)).returncode == 0
    assert cli.run("tenant", "create", "acme", "--name", "Acme").returncode == 0

    duplicate = cli.run("tenant", "create", "acme", "--name", "Other")
    assert duplicate.returncode == 1
    assert duplicate.stderr.splitlines()[1] == "error: tenant acme already exists"

    bad_id = cli.run("tenant", "create", "Not A Slug", "--name", "x")
    assert bad_id.returncode == 1
    assert "id: must be 2-64 characters" in bad_id.stderr

    bad_settings = cli.run("tenant", "enable", "acme", "quickstart", "--set", "sender_email=nope")
    assert bad_settings.returncode == 1
    assert "settings.sender_email" in bad_settings.stderr
    assert "settings.api_key" in bad_settings.stderr  # required and missing: both reported

    no_version = cli.run(
        "tenant", "enable", "acme", "quickstart", "--version", "9.9.9", "--set", "api_key=k"
    )
    assert no_version.returncode == 1
    assert "module quickstart has no version 9.9.9" in no_version.stderr

    unknown = cli.run("tenant", "enable", "ghost", "quickstart", "--set", "api_key=k")
    assert unknown.returncode == 1
    assert "tenant ghost does not exist" in unknown.stderr

    listing = cli.run("tenant", "modules", "acme")
    assert listing.stdout.strip() == "Modules of acme: none"


def test_disable_and_rollback(cli: Cli, tmp_path: Path) -> None:
    assert cli.run("module", "upload", str(QUICKSTART)).returncode == 0
    newer = tmp_path / "v2"
    shutil.copytree(QUICKSTART, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["version"] = "1.1.0"
    (newer / "manifest.json").write_text(json.dumps(manifest))
    assert cli.run("module", "upload", str(newer)).returncode == 0
    assert cli.run("tenant", "create", "acme", "--name", "Acme").returncode == 0
    assert (
        cli.run(
            "tenant", "enable", "acme", "quickstart", "--version", "1.0.0", "--set", "api_key=k"
        ).returncode
        == 0
    )
    pinned = cli.run("tenant", "enable", "acme", "quickstart", "--version", "1.1.0")
    assert "quickstart@1.1.0 enabled" in pinned.stdout

    rolled = cli.run("tenant", "rollback", "acme", "quickstart")
    assert rolled.returncode == 0, rolled.stderr
    assert "quickstart@1.0.0 enabled" in rolled.stdout

    disabled = cli.run("tenant", "disable", "acme", "quickstart")
    assert disabled.returncode == 0
    listing = cli.run("tenant", "modules", "acme")
    assert re.search(r"quickstart .* 1\.0\.0 .* False", listing.stdout)
