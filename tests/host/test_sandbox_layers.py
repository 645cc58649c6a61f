"""The sandbox layers in force are reported (``crm-host doctor``, ``GET /api/v1/system``, the
start of ``crm-host serve``), and ``CRM_HOST_SANDBOX_REQUIRE`` stops a host that lacks one.

What "in force" means here is derived from this machine, not hard-coded: seccomp where the
architecture has a syscall table, Landlock where the kernel reports an ABI, the network
namespace and the uid drop where the suite runs as root. A missing Landlock is simulated for
real with a seccomp filter that makes ``landlock_*`` answer ENOSYS (``without_landlock.py``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from sandbox import landlock, seccomp_filter
from sandbox.kernel_wall import LAYERS
from sandbox.pool import SandboxPool
from tests.cli_runner import CRM_HOST, Cli
from tests.e2e.server import free_port, running_host
from tests.host.conftest import ADMIN_TOKEN, make_host

ALL = ",".join(LAYERS)
WITHOUT_LANDLOCK = Path(__file__).with_name("without_landlock.py")
IS_ROOT = os.geteuid() == 0
PRESENT = [
    name
    for name, present in (
        ("seccomp", platform.machine() in seccomp_filter.TABLES),
        ("landlock", landlock.abi_version() > 0),
        ("netns", IS_ROOT),
        ("uid", IS_ROOT),
    )
    if present
]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- GET /api/v1/system ---------------------------------------------------------------------


def test_system_reports_the_layers_of_the_workers(tmp_path: Path, pool: SandboxPool) -> None:
    host = make_host(tmp_path / "host.db", sandbox=pool, sandbox_require=list(LAYERS))
    try:
        with TestClient(create_app(host)) as client:
            response = client.get("/api/v1/system", headers=ADMIN)
    finally:
        host.close()
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == version("crm-module-host")
    sandbox = body["sandbox"]
    assert sandbox["layers"] == PRESENT
    assert sandbox["required"] == list(LAYERS)
    assert sandbox["missingRequired"] == [n for n in LAYERS if n not in PRESENT]
    assert sandbox["workerUid"] == (65534 if IS_ROOT else os.getuid())
    assert sandbox["landlockAbi"] == landlock.abi_version()
    assert {note.split(":")[0] for note in sandbox["notes"]} == set(LAYERS) - set(PRESENT)
    assert "/api/v1/system" in client.get("/openapi.json").json()["paths"]


def test_system_is_for_the_admin_only(tmp_path: Path, pool: SandboxPool) -> None:
    host = make_host(tmp_path / "host.db", sandbox=pool)
    try:
        _, key = host.tenants.create("acme", "Acme Corp")
        with TestClient(create_app(host)) as client:
            anonymous = client.get("/api/v1/system")
            tenant = client.get("/api/v1/system", headers={"Authorization": f"Bearer {key}"})
            after = client.get("/healthz")
    finally:
        host.close()
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
    assert tenant.status_code == 403 and tenant.json()["error"] == "forbidden"
    assert "sandbox" not in tenant.text and after.status_code == 200


# -- crm-host doctor --------------------------------------------------------------------------


def test_doctor_reports_every_layer_and_the_required_ones(tmp_path: Path) -> None:
    result = Cli.in_dir(tmp_path, CRM_HOST_SANDBOX_REQUIRE="seccomp").run("doctor")
    assert result.returncode == (0 if "seccomp" in PRESENT else 1), result.stderr
    assert "Traceback" not in result.stderr
    layers_table = result.stdout.split("Sandbox layers", 1)[1]
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
        for line in layers_table.splitlines()
        if line.startswith("│")
    }
    assert rows == {
        name: ["in force" if name in PRESENT else "missing", "yes" if name == "seccomp" else ""]
        for name in LAYERS
    }
    uid = 65534 if IS_ROOT else os.getuid()
    assert f"workers run as uid {uid}" in result.stdout
    assert not (tmp_path / "host.db").exists()  # the doctor needs no database


def test_doctor_fails_naming_a_required_layer_the_kernel_lacks(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path, CRM_HOST_SANDBOX_REQUIRE=ALL)
    result = subprocess.run(
        [sys.executable, str(WITHOUT_LANDLOCK), str(CRM_HOST), "doctor"],
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "landlock" in result.stdout and "the kernel has no Landlock" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: sandbox layer required by CRM_HOST_SANDBOX_REQUIRE is missing")
    assert "landlock" in line


@pytest.mark.parametrize("command", ["doctor", "serve"])
def test_an_unknown_layer_name_is_one_clear_line(tmp_path: Path, command: str) -> None:
    cli = Cli.in_dir(tmp_path, CRM_HOST_SANDBOX_REQUIRE="seccomp, selinux")
    args = ["serve", "--port", str(free_port())] if command == "serve" else ["doctor"]
    result = cli.run(*args)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: invalid configuration: CRM_HOST_SANDBOX_REQUIRE: unknown layer selinux "
        "(known: seccomp, landlock, netns, uid)"
    )
    assert not (tmp_path / "host.db").exists()


# -- crm-host serve ---------------------------------------------------------------------------


def test_serve_refuses_to_start_without_a_required_layer(tmp_path: Path) -> None:
    cli = Cli.in_dir(tmp_path, CRM_HOST_SANDBOX_REQUIRE="landlock", CRM_HOST_ADMIN_TOKEN="t" * 32)
    port = free_port()
    result = subprocess.run(
        [sys.executable, str(WITHOUT_LANDLOCK), str(CRM_HOST), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "error: sandbox layer required by CRM_HOST_SANDBOX_REQUIRE is missing: landlock "
        "(landlock: the kernel has no Landlock (or it is disabled))"
    )
    # it never listened
    assert (
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(('127.0.0.1', {port}))",
            ],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    )


def test_serve_starts_with_the_layers_it_has_and_reports_them(tmp_path: Path) -> None:
    with running_host(tmp_path, CRM_HOST_SANDBOX_REQUIRE=",".join(PRESENT)) as host:
        with host.client() as client:
            body = client.get("/api/v1/system").json()
        output = host.output()
    assert body["sandbox"]["layers"] == PRESENT and body["sandbox"]["missingRequired"] == []
    assert f"crm-host: sandbox layers {', '.join(PRESENT) or 'none'}" in output
