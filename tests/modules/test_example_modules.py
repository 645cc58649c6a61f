"""Every example module integrators copy passes `crm-host module validate` and its own
`crm-host module test` cases, through the real command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli_runner import Cli

EXAMPLES = Path(__file__).resolve().parents[2] / "module_manifests"
MODULES = ["quickstart", "sendgrid", "unisender", "telegram", "mailchimp"]


@pytest.mark.parametrize("name", MODULES)
def test_example_validates_and_passes_its_cases(name: str, tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path)
    validated = cli.run("module", "validate", str(EXAMPLES / name))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert re.search(r"valid: 0 errors", validated.stdout + validated.stderr)

    tested = cli.run("module", "test", str(EXAMPLES / name))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    summary = tested.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 2, summary
    assert "failed" not in summary
