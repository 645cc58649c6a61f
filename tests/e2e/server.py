"""Start the real ``crm-host serve`` on 127.0.0.1 with a free port, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

CRM_HOST = Path(sys.executable).with_name("crm-host")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningHost:
    url: str
    admin_token: str
    workdir: Path
    process: subprocess.Popen[bytes]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def output(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")


@contextmanager
def running_host(
    workdir: Path,
    *,
    configured: bool = True,
    port: int | None = None,
    crm_host: Path = CRM_HOST,
    **extra_env: str,
) -> Iterator[RunningHost]:
    """``configured=False`` leaves the database and the admin token to their defaults (the
    data directory, a stored token): ``admin_token`` is then "" and the test reads what
    ``serve`` printed. ``crm_host``: another installation's ``crm-host`` (a wheel's venv)."""
    port = port or free_port()
    token = "e2e-admin-token-" + os.urandom(8).hex() if configured else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
    if configured:
        env.update(
            CRM_HOST_DATABASE_URL=f"sqlite:///{workdir / 'host.db'}", CRM_HOST_ADMIN_TOKEN=token
        )
    env.update(extra_env)
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(crm_host), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    host = RunningHost(f"http://127.0.0.1:{port}", token, workdir, process)
    try:
        _wait_ready(host)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(host: RunningHost, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise RuntimeError(f"crm-host serve exited early:\n{host.output()}")
        try:
            if httpx.get(host.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"crm-host serve did not start in {timeout}s:\n{host.output()}")
