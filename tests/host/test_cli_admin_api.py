"""The admin gaps of the CLI through the real ``crm-host`` command: contacts (list, export,
erase), tenant key rotation and deletion, module version removal."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from host.config import HostSettings
from host.marketing.contact_rows import validate_row
from host.platform import Host
from tests.cli_runner import Cli

QUICKSTART = Path(__file__).resolve().parents[2] / "module_manifests" / "quickstart"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli.in_dir(tmp_path)


def same_database(cli: Cli) -> Host:
    """The host the CLI uses (same file, same key file)."""
    return Host(
        HostSettings(database_url=cli.env["CRM_HOST_DATABASE_URL"], plugins=[]),
        load_entry_points=False,
    ).open()


def test_contacts_list_export_erase(cli: Cli) -> None:
    assert cli.run("tenant", "create", "acme", "--name", "Acme").returncode == 0
    host = same_database(cli)
    try:
        rows = [
            validate_row(f"rows[{i}]", {"id": f"c{i}", "name": name, "email": f"{name}@x.test"})[0]
            for i, name in enumerate(("erin", "fred", "gina"))
        ]
        host.contacts.upsert("acme", [r for r in rows if r is not None])
    finally:
        host.close()

    listed = cli.run("contact", "list", "acme", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    assert "erin@x.test" in listed.stdout and "gina@x.test" not in listed.stdout
    assert "next page: --after c1" in listed.stdout
    rest = cli.run("contact", "list", "acme", "--after", "c1")
    assert "gina@x.test" in rest.stdout and "next page" not in rest.stdout
    bad = cli.run("contact", "list", "acme", "--status", "Happy")
    assert bad.returncode == 2 and "--status" in bad.stderr and "Traceback" not in bad.stderr

    exported = cli.run("contact", "export", "acme", "c0")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["contact"]["email"] == "erin@x.test"

    erased = cli.run("contact", "erase", "acme", "c0", "--yes")
    assert erased.returncode == 0, erased.stderr
    assert "contact c0 erased" in erased.stdout
    gone = cli.run("contact", "export", "acme", "c0")
    assert gone.returncode == 1
    assert gone.stderr.splitlines()[-1] == "error: contact c0 does not exist"
    assert cli.run("contact", "list", "acme", "--search", "erin").stdout.strip() == (
        "Contacts of acme: none"
    )
    refused = cli.run("contact", "erase", "acme", "c1", input="n\n")  # asks first
    assert refused.returncode == 1
    assert "fred@x.test" in cli.run("contact", "list", "acme").stdout


def test_tenant_rotate_key_and_delete(cli: Cli) -> None:
    created = cli.run("tenant", "create", "acme", "--name", "Acme")
    old = re.search(r"(crm_\S+)", created.stdout)
    rotated = cli.run("tenant", "rotate-key", "acme")
    assert rotated.returncode == 0, rotated.stderr
    new = re.search(r"shown once, store it now\): (crm_\S+)", rotated.stdout)
    assert old and new and old[1] != new[1]
    host = same_database(cli)
    try:
        assert host.tenants.tenant_for_key(old[1]) is None
        assert host.tenants.tenant_for_key(new[1]) == "acme"
    finally:
        host.close()

    deleted = cli.run("tenant", "delete", "acme", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert re.search(r"tenant acme deleted: \d+ rows purged", deleted.stdout)
    assert cli.run("tenant", "list").stdout.strip() == "Tenants: none"
    again = cli.run("tenant", "delete", "acme", "--yes")
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1] == "error: tenant acme does not exist"
    assert cli.run("tenant", "rotate-key", "acme").returncode == 1


def test_module_remove(cli: Cli, tmp_path: Path) -> None:
    assert cli.run("module", "upload", str(QUICKSTART)).returncode == 0
    newer = tmp_path / "v2"
    shutil.copytree(QUICKSTART, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["version"] = "1.1.0"
    (newer / "manifest.json").write_text(json.dumps(manifest))
    assert cli.run("module", "upload", str(newer)).returncode == 0
    assert cli.run("tenant", "create", "acme", "--name", "Acme").returncode == 0
    enable = ("tenant", "enable", "acme", "quickstart", "--version", "1.0.0", "--set", "api_key=k")
    assert cli.run(*enable).returncode == 0

    refused = cli.run("module", "remove", "quickstart", "1.0.0")
    assert refused.returncode == 1
    assert "error: module quickstart@1.0.0 is in use and was not removed" in refused.stderr
    assert "  tenant acme: pins it" in refused.stderr
    removed = cli.run("module", "remove", "quickstart", "1.1.0")
    assert removed.returncode == 0, removed.stderr
    assert "quickstart@1.1.0 removed" in removed.stdout
    shown = cli.run("module", "show", "quickstart")
    assert "1.0.0" in shown.stdout and "1.1.0" not in shown.stdout
