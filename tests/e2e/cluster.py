"""Several real ``crm-host`` processes on one throwaway database: what a multi-node
deployment is, for the tests that kill one node and watch another take over.

A :class:`HostCluster` owns one database (of the test run's PostgreSQL cluster,
:mod:`tests.postgres`, or a SQLite file the nodes of one machine share), the ``crm-host
serve`` nodes (each on a free port of 127.0.0.1) and the ``crm-host worker`` processes
started on it, each with its own working directory and log, all sharing one admin token,
secret key and environment. :meth:`HostCluster.holder` tells which node holds a campaign's
job lease (``campaigns.lease_owner`` is ``hostname:pid:nonce``), :meth:`HostCluster.kill`
SIGKILLs a node as a crash would (no shutdown: its lease stays), and closing the cluster
stops every node still running and drops the database.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, create_engine, text

from tests.cli_runner import Cli
from tests.e2e.server import CRM_HOST, RunningHost, _spawn, _stop, _wait_ready, free_port
from tests.postgres import Cluster as Postgres

SECRET_KEY = "a passphrase of the multi-node tests, long enough to be accepted"
READY_SECONDS = 180.0
"""How long a node may take to answer ``/healthz``: a liveness bound only (several nodes
import and start on the same two loaded cores at once)."""
FAST_JOBS = {
    # a SIGKILLed node's job is seen stalled within about 2 s and taken over, so a test's
    # patience suffices (the defaults are minutes apart for production)
    "CRM_HOST_CAMPAIGN_POLL_SECONDS": "0.2",
    "CRM_HOST_JOB_HEARTBEAT_SECONDS": "0.5",
    "CRM_HOST_JOB_STALLED_SECONDS": "2",
    "CRM_HOST_JOB_MAINTENANCE_SECONDS": "0.5",
}


@dataclass
class Worker:
    """A ``crm-host worker`` process of the cluster (it logs to ``worker.log``)."""

    workdir: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return (self.workdir / "worker.log").read_text(errors="replace")


Node = RunningHost | Worker


class HostCluster:
    """``crm-host serve`` nodes and ``crm-host worker`` processes on one database (see the
    module docstring)."""

    def __init__(self, base: Path, database_url: str, **env: str):
        self.base = base
        self.database_url = database_url
        self.token = "e2e-admin-token-" + os.urandom(8).hex()
        self.env = {
            "CRM_HOST_DATABASE_URL": database_url,
            "CRM_HOST_ADMIN_TOKEN": self.token,
            "CRM_HOST_SECRET_KEY": SECRET_KEY,
            **FAST_JOBS,
            **env,
        }
        self.nodes: list[RunningHost] = []
        """The ``serve`` nodes started and not killed, oldest first."""
        self.workers: list[Worker] = []
        """The ``crm-host worker`` processes started and not killed."""
        self._names = itertools.count(1)
        self._stack = ExitStack()
        self._engine = create_engine(database_url)

    # --- nodes ----------------------------------------------------------------------------

    def serve(self, *, wait: bool = True) -> RunningHost:
        """Start one more ``serve`` node; ``wait=False`` returns at once (:meth:`ready`
        waits later), so its start-up overlaps with what the test does meanwhile."""
        workdir = self.base / f"node{next(self._names)}"
        workdir.mkdir()
        node = _spawn(self._stack, workdir, self.token, free_port(), self.env)
        self.nodes.append(node)
        if wait:
            _wait_ready(node, timeout=READY_SECONDS)
        return node

    def worker(self) -> Worker:
        """Start one ``crm-host worker`` process on the database."""
        workdir = self.base / f"worker{next(self._names)}"
        workdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
        env.update(self.env)
        log = self._stack.enter_context((workdir / "worker.log").open("wb"))
        process = subprocess.Popen(
            [str(CRM_HOST), "worker"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self._stack.callback(_stop, process)
        started = Worker(workdir, process)
        self.workers.append(started)
        return started

    def ready(self) -> list[RunningHost]:
        """Every node, once each answers ``/healthz``."""
        for node in self.nodes:
            _wait_ready(node, timeout=READY_SECONDS)
        return list(self.nodes)

    def lease_owner(self, campaign_id: str) -> str | None:
        """``hostname:pid:nonce`` of the job holding ``campaign_id``'s lease, if one does."""
        rows = self.query("SELECT lease_owner FROM campaigns WHERE id = :id", id=campaign_id)
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def holder(self, campaign_id: str) -> Node | None:
        """The node whose job holds ``campaign_id``'s lease now, if any of ours does."""
        owner = self.lease_owner(campaign_id)
        if owner is None:
            return None
        pid = int(owner.split(":")[1])
        return next((node for node in self.running() if node.process.pid == pid), None)

    def running(self) -> list[Node]:
        """Every process of the cluster not killed: the serve nodes, then the workers."""
        return [*self.nodes, *self.workers]

    def taken_over(self, campaign_id: str, owner: str, timeout: float = 60.0) -> Node:
        """Wait until a running node resumed ``campaign_id`` from the job of ``owner`` (a
        killed node's: the node logs whose job it took over); that node."""
        line = f"campaign {campaign_id}: resuming the job of {owner}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.running():
                if line in node.output():
                    return node
            time.sleep(0.1)
        raise AssertionError(f"no node took over campaign {campaign_id} from {owner}")

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` (a crash: nothing is shut down, its leases stay) and reap it."""
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        if isinstance(node, Worker):
            self.workers.remove(node)
        else:
            self.nodes.remove(node)

    def cli(self) -> Cli:
        """The ``crm-host`` CLI on this cluster's database, as an operator runs it."""
        env = {k: v for k, v in self.env.items() if k != "CRM_HOST_ADMIN_TOKEN"}
        return Cli.in_dir(self.base, **env)

    # --- the database ---------------------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[Row[Any]]:
        with self._engine.connect() as connection:
            return list(connection.execute(text(sql), params))

    def close(self) -> None:
        """Stop every node still running (SIGTERM, then SIGKILL) and close the connection."""
        try:
            self._stack.close()
        finally:
            self._engine.dispose()


@contextmanager
def host_cluster(base: Path, postgres: Postgres | None, **env: str) -> Iterator[HostCluster]:
    """A :class:`HostCluster` on a new database of ``postgres`` (a copy of the migrated
    template), dropped at the end; with ``postgres=None`` on a new SQLite file in ``base``
    (the nodes of one machine sharing it). Its nodes are stopped at the end."""
    url = postgres.database() if postgres is not None else f"sqlite:///{base / 'host.db'}"
    cluster = HostCluster(base, url, **env)
    try:
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            if postgres is not None:
                postgres.drop(url)
