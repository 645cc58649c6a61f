"""``crm_module_sdk`` as an integrator's mypy sees it: installed the way the README installs
the project (an editable install in ``editable_mode=strict``: setuptools' default editable
install hides packages behind an import hook mypy cannot follow), then ``mypy --strict`` run
from a folder outside the checkout on a typed script and on the guide's example module."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_guide_walkthrough import guide_files

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: what is not part of a clone: the venv, caches, build output
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache"
)

TYPED_SCRIPT = '''\
"""A typed module script: annotations, typing names and the SDK's types."""

from typing import Any, Optional, cast

from crm_module_sdk import (
    CRM_Marketing_Action,
    CRM_Marketing_DeliveryStatus,
    CRM_Marketing_UpdateDeliveryStatusAction,
    CRM_Marketing_WebhookResult,
    FetchRequest,
    fetch,
    settings,
    storage,
)

counts: dict[str, int] = {}


def events(request: FetchRequest) -> list[dict[str, Any]]:
    body: Optional[str] = request["body"]
    return cast(list[dict[str, Any]], fetch("https://api.acme.test/x", method="POST", body=body).json())


def CRM_Marketing_ParseWebhookRequest(request: FetchRequest) -> CRM_Marketing_WebhookResult:
    actions: list[CRM_Marketing_Action] = []
    for event in events(request):
        actions.append(
            CRM_Marketing_UpdateDeliveryStatusAction(
                email=event["email"],
                externalId=str(settings["api_key"]) + str(storage.get("campaign")),
                status=CRM_Marketing_DeliveryStatus.Opened,
            )
        )
    return {"actions": actions}
'''

#: the same kind of script, wrong in ways only the SDK's types can tell
WRONG_SCRIPT = """\
from crm_module_sdk import CRM_Marketing_DeliveryStatus, FetchRequest, fetch


def CRM_Marketing_GetTemplateHTML(templateExternalId: str) -> str:
    return fetch(templateExternalId, timeout="soon").text() + CRM_Marketing_DeliveryStatus.Openned


def CRM_Marketing_ParseWebhookRequest(request: FetchRequest) -> int:
    return request["bodyy"]
"""


def readme_install_options() -> list[str]:
    """The ``pip install`` options of the README's quick-start install command."""
    commands = re.findall(r"\.venv/bin/pip install (.+?) &&", README.read_text())
    assert commands, "the README shows no pip install command"
    options = shlex.split(commands[0])
    assert "editable_mode=strict" in options, options
    return options


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A clone's copy installed with the README's options (``--no-deps``: the SDK needs
    none, and mypy runs from the suite's venv) and an empty folder outside it."""
    base = tmp_path_factory.mktemp("sdk")
    clone = base / "clone"
    shutil.copytree(ROOT, clone, ignore=NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MYPY"))}
    subprocess.run([sys.executable, "-m", "venv", base / "venv"], check=True, env=env)
    options = [clone if option == "." else option for option in readme_install_options()]
    installed = subprocess.run(
        [base / "venv" / "bin" / "pip", "install", "-q", "--no-deps", *options],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    work = base / "work"
    work.mkdir()
    return base / "venv" / "bin" / "python", work, env


def mypy_strict(venv_python: Path, work: Path, env: dict[str, str], name: str, source: str):
    (work / name).write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", venv_python, name],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(900)  # a venv, a pip build of the project, mypy on a cold cache
def test_a_typed_script_passes_mypy_strict_outside_the_checkout(sdk_venv) -> None:
    venv_python, work, env = sdk_venv
    assert ROOT not in work.parents
    result = mypy_strict(venv_python, work, env, "typed.py", TYPED_SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


@pytest.mark.timeout(900)
def test_mypy_reports_what_the_sdk_types_forbid(sdk_venv) -> None:
    venv_python, work, env = sdk_venv
    result = mypy_strict(venv_python, work, env, "wrong.py", WRONG_SCRIPT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "import-not-found" not in result.stdout  # found, and typed: these come from it
    assert '"timeout" to "fetch" has incompatible type "str"' in result.stdout
    assert 'has no attribute "Openned"' in result.stdout
    assert '"bodyy"' in result.stdout


@pytest.mark.timeout(900)
def test_the_guides_example_module_passes_mypy_strict(sdk_venv) -> None:
    venv_python, work, env = sdk_venv
    source = guide_files()["acme-mail/module.py"]
    result = mypy_strict(venv_python, work, env, "module.py", source)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme_test = re.search(r"\n(python3 -m venv .*? -m pytest)\n", README.read_text())
    assert readme_test is not None
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"\n{readme_test.group(1)}\n" in ci


SERVE_STATIC = """
import sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
sys.path.insert(0, sys.argv[1])  # the install's link tree before the suite's checkout
from host.console.mount import static_files
app = FastAPI()
app.mount("/static", static_files())
answer = TestClient(app).get("/static/console.css")
print(answer.status_code, len(answer.content))
"""


@pytest.mark.timeout(900)
def test_the_readme_install_serves_the_consoles_static_files(sdk_venv) -> None:
    """The strict editable install links each file from a tree of symlinks into the
    checkout: the console serves its CSS through them (it answered 404 before)."""
    venv_python, _work, _env = sdk_venv
    (tree,) = venv_python.parents[2].glob("clone/build/__editable__*")
    css = tree / "host" / "console" / "static" / "console.css"
    assert css.is_symlink()
    served = subprocess.run(
        [sys.executable, "-c", SERVE_STATIC, str(tree)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["200", str(len(css.read_bytes()))]
