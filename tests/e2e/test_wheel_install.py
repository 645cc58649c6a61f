"""The host as a user installs it from a wheel: built from this checkout, installed into a fresh
venv outside it, and used from a folder that has no source tree — the schema, the example
modules, the migrations, the docs assets and the console's templates and static files must
all come from the installed package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import running_host

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_HOST_", "PYTHON"))}
    env.update(XDG_DATA_HOME=str(base / "xdg"), COLUMNS="200")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        base / "dist",
        ROOT,
        cwd=base,
        env=env,
    )
    wheel = next((base / "dist").glob("crm_module_host-*.whl"))
    _run(sys.executable, "-m", "venv", base / "venv", cwd=base, env=env)
    _run(base / "venv" / "bin" / "pip", "install", "-q", wheel, cwd=base, env=env)
    yield base, env


def _installed_modules(venv: Path, env: dict[str, str], cwd: Path) -> Path:
    code = "from importlib.resources import files; print(files('host.module_manifests'))"
    return Path(_run(venv / "bin" / "python", "-c", code, cwd=cwd, env=env).strip())


@pytest.mark.timeout(900)  # a pip build and install of every dependency (from pip's cache)
def test_the_wheel_runs_the_demo_and_the_toolkit_without_the_source_tree(
    installed: tuple[Path, dict[str, str]],
) -> None:
    base, env = installed
    work = base / "work"
    work.mkdir()
    venv_bin = base / "venv" / "bin"
    modules = _installed_modules(base / "venv", env, work)
    assert ROOT not in modules.parents, "the examples come from the installed package"

    demo = _run(venv_bin / "crm-host", "demo", "--contacts", "12", cwd=work, env=env)
    assert "demo finished" in demo

    for name in ("quickstart", "sendgrid", "unisender", "telegram", "mailchimp"):
        _run(venv_bin / "crm-host", "module", "validate", modules / name, cwd=work, env=env)
        _run(venv_bin / "crm-host", "module", "test", modules / name, cwd=work, env=env)
    ran = _run(
        venv_bin / "crm-host",
        "module",
        "run",
        modules / "quickstart",
        "CRM_Marketing_ParseWebhookRequest",
        '{"method": "POST", "url": "https://h/x", "headers": {}, "body": "{\\"events\\": []}"}',
        "--settings",
        '{"api_key": "k-123456789"}',
        cwd=work,
        env=env,
    )
    assert '"actions"' in ran

    _run(venv_bin / "crm-host", "module", "new", "acme-mail", "--kind", "email", cwd=work, env=env)
    _run(venv_bin / "crm-host", "module", "validate", work / "acme-mail", cwd=work, env=env)
    _run(venv_bin / "crm-host", "module", "test", work / "acme-mail", cwd=work, env=env)
    uploaded = _run(
        venv_bin / "crm-host", "module", "upload", modules / "sendgrid", cwd=work, env=env
    )
    assert "sendgrid@1.0.0 stored" in uploaded
    assert (base / "xdg" / "crm-host" / "crm-host.db").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["acme-mail"]


def _console_files(folder: str) -> dict[str, bytes]:
    """The checkout's console ``folder`` (templates, static), by path inside the wheel."""
    source = ROOT / "host" / "console" / folder
    return {
        f"host/console/{folder}/{path.relative_to(source).as_posix()}": path.read_bytes()
        for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.timeout(900)
def test_the_wheel_serves_the_console_with_its_templates_css_and_js(
    installed: tuple[Path, dict[str, str]],
) -> None:
    base, _env = installed
    wheel = next((base / "dist").glob("crm_module_host-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    for folder in ("templates", "static"):
        expected = _console_files(folder)
        assert expected, folder
        assert sorted(set(expected) - packed) == [], f"console {folder} missing from the wheel"

    work = base / "console"
    work.mkdir()
    static = _console_files("static")
    with running_host(work, crm_host=base / "venv" / "bin" / "crm-host") as served:
        page = httpx.get(served.url + "/console/sign-in", timeout=30)
        assert page.status_code == 200 and "<h1>Sign in</h1>" in page.text
        assets = re.findall(r'<(?:link rel="stylesheet" href|script src)="([^"?]+)', page.text)
        assert any(a.endswith(".css") for a in assets) and any(a.endswith(".js") for a in assets)
        for asset in assets:
            answer = httpx.get(served.url + asset, timeout=30)
            assert answer.status_code == 200, asset
            kind = "text/css" if asset.endswith(".css") else "javascript"
            assert kind in answer.headers["content-type"], asset
            assert (
                answer.content
                == static["host/console/static/" + asset.removeprefix("/console/static/")]
            )
        # the optional rich script editor, when built, ships in the wheel and is served as built
        editor = {k: v for k, v in static.items() if k.startswith("host/console/static/editor/")}
        if os.environ.get("CRM_HOST_TEST_EDITOR") == "required":
            assert "host/console/static/editor/editor.js" in editor, "the editor is not built"
        for path, content in editor.items():
            answer = httpx.get(served.url + "/" + path.removeprefix("host/"), timeout=30)
            assert answer.status_code == 200 and answer.content == content, path
    assert "Traceback" not in served.output()
