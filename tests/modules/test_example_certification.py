"""Every example module integrators copy passes ``crm-host module certify``: its cases cover
every function it implements, its recordings answer every fetch, and its webhook answers
malformed bodies with a 4xx. Certified in-process over one shared sandbox pool (the same
``certify`` the command and the upload path call: the suite's ``pool``), and once through
the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.config import HostSettings
from host.modules.packages import from_directory
from host.modules.registry import validate_package
from host.toolkit.certify import certify, digest, render
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli

EXAMPLES = Path(__file__).resolve().parents[2] / "module_manifests"
MODULES = ["quickstart", "sendgrid", "unisender", "telegram", "mailchimp"]
CHECKS = [
    "manifest",
    "settings-schema",
    "egress",
    "cases",
    "recorded-fetch",
    "limits",
    "webhook-stable",
    "webhook-malformed",
]
MAX_SCRIPT_BYTES = HostSettings().max_script_bytes


def test_every_example_module_is_listed() -> None:
    assert sorted(MODULES) == sorted(
        p.parent.name for p in EXAMPLES.glob("*/manifest.json") if p.parent.name != "schema"
    )


@pytest.mark.parametrize("name", MODULES)
def test_example_module_certifies(name: str, pool: SandboxPool) -> None:
    folder = EXAMPLES / name
    package = from_directory(folder, max_script_bytes=MAX_SCRIPT_BYTES)
    report = certify(folder, package, max_script_bytes=MAX_SCRIPT_BYTES, pool=pool)
    assert report.passed, render(report)
    assert report.module == name
    assert [c.name for c in report.checks] == CHECKS  # every example has a webhook
    assert not (folder / "certification.json").exists()  # in-process: nothing written


def test_the_certify_command_certifies_an_example(tmp_path: Path) -> None:
    """The real command on the quickstart; the report goes where --output says, and
    binds the same content the in-process certification and the upload path hash."""
    folder = EXAMPLES / "quickstart"
    result = Cli.in_dir(tmp_path).run(
        "module", "certify", str(folder), "--output", str(tmp_path / "report.json")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2] == "certified" and not any(line.startswith("FAILED") for line in lines)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is True and report["module"] == "quickstart"
    assert report["digest"] == digest({k: v for k, v in report.items() if k != "digest"})
    package = from_directory(folder, max_script_bytes=MAX_SCRIPT_BYTES)
    assert (
        report["contentHash"]
        == validate_package(package, max_script_bytes=MAX_SCRIPT_BYTES).content_hash
    )
    assert not (folder / "certification.json").exists()
