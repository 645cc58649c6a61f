"""``crm-host module new``: the scaffold validates, runs in the sandbox, type-checks against the
SDK stub, and its example case passes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from host.contract.enums import ModuleKind
from host.contract.functions import FUNCTIONS_BY_KIND
from host.errors import InvalidInput
from host.modules.inspection import stub_functions
from host.modules.packages import from_directory
from host.modules.registry import validate_package
from host.toolkit.scaffold import create_module
from tests.cli_runner import Cli


def test_new_email_module_through_the_command(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path)
    created = cli.run("module", "new", "acme-mail", "--kind", "email")
    assert created.returncode == 0, created.stderr
    root = tmp_path / "acme-mail"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*")} == {
        "manifest.json",
        "module.py",
        "README.md",
        "tests",
        "tests/recordings",
        "tests/example_webhook.json",
    }
    source = (root / "module.py").read_text()
    assert "\nfrom crm_module_sdk import (" in source
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["id"] == "acme-mail" and manifest["kind"] == "email"

    tested = cli.run("module", "test", str(root))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "tests/example_webhook.json::webhook is not implemented yet" in tested.stdout
    assert "1 passed" in tested.stdout

    again = cli.run("module", "new", "acme-mail", "--kind", "email")
    assert again.returncode == 1
    assert again.stderr.startswith("error: module folder already exists")
    bad = cli.run("module", "new", "Acme Mail", "--kind", "email")
    assert bad.returncode == 1
    assert "Acme Mail: use 2-64 lowercase letters" in bad.stderr


@pytest.mark.parametrize("kind", list(ModuleKind))
def test_every_function_of_the_kind_is_a_documented_stub(tmp_path: Path, kind: ModuleKind) -> None:
    root = create_module(tmp_path, f"x-{kind.value}", kind)
    package = from_directory(root, max_script_bytes=1 << 20)
    module = validate_package(package, max_script_bytes=1 << 20)  # upload would accept it
    assert module.functions == []  # stubs implement nothing
    source = (root / "module.py").read_text()
    expected = [f.name for f in FUNCTIONS_BY_KIND[kind]]
    assert sorted(stub_functions(source)) == sorted(expected)
    tree = ast.parse(source)
    docs = {n.name: ast.get_docstring(n) or "" for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert list(docs) == expected
    assert all("Called" in doc and len(doc) > 100 for doc in docs.values()), docs
    prepare = docs["CRM_Marketing_PrepareCampaign"]
    recipients = "CRM contact ids" if kind is ModuleKind.messenger else "email addresses"
    assert recipients in prepare


def test_scaffold_type_checks_against_the_sdk(tmp_path: Path) -> None:
    root = create_module(tmp_path, "typed", ModuleKind.email)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(root / "module.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_new_refuses_a_non_empty_folder_but_fills_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert (create_module(tmp_path, "empty", "messenger") / "manifest.json").is_file()
    with pytest.raises(InvalidInput, match="already exists"):
        create_module(tmp_path, "empty", "messenger")
