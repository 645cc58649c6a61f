"""Start the real ``crm-host serve`` on 127.0.0.1 with a free port, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
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
    token = "e2e-admin-token-" + os.urandom(8).hex() if configured else ""
    env: dict[str, str] = {}
    if configured:
        env.update(
            CRM_HOST_DATABASE_URL=f"sqlite:///{workdir / 'host.db'}", CRM_HOST_ADMIN_TOKEN=token
        )
    env.update(extra_env)
    with ExitStack() as stack:
        host = _spawn(stack, workdir, token, port or free_port(), env, (str(crm_host),))
        _wait_ready(host)
        yield host


@contextmanager
def running_hosts(
    workdirs: list[Path],
    *,
    database_url: str,
    command: Sequence[str] = (str(CRM_HOST),),
    **extra_env: str,
) -> Iterator[list[RunningHost]]:
    """Several ``crm-host serve`` nodes on one database, all started at the same instant
    (each process is spawned before any is waited for), sharing one admin token; each node
    logs to ``serve.log`` in its own ``workdirs`` entry. They start (import, migrate) on the
    same cores at once, so each gets a generous time to become ready. ``command`` runs
    ``crm-host`` (a test may wrap it)."""
    token = "e2e-admin-token-" + os.urandom(8).hex()
    env = {"CRM_HOST_DATABASE_URL": database_url, "CRM_HOST_ADMIN_TOKEN": token, **extra_env}
    with ExitStack() as stack:
        hosts = [_spawn(stack, workdir, token, free_port(), env, command) for workdir in workdirs]
        for host in hosts:
            _wait_ready(host, timeout=30.0 * len(hosts))
        yield hosts


def _spawn(
    stack: ExitStack,
    workdir: Path,
    token: str,
    port: int,
    extra_env: dict[str, str],
    command: Sequence[str] = (str(CRM_HOST),),
) -> RunningHost:
    """Start ``serve`` (not waiting for it); ``stack`` stops it and closes its log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
    env.update(extra_env)
    log = stack.enter_context((workdir / "serve.log").open("wb"))
    process = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, process)
    return RunningHost(f"http://127.0.0.1:{port}", token, workdir, process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
