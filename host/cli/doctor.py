"""``crm-host doctor``: checks of this machine's set-up, one section per concern, so an operator
sees in one run what a start (or the first campaign) would trip over.

Sections: configuration (every ``CRM_HOST_*`` value valid, where the data lives), database
(reachable, at the newest migration; a SQLite file that does not exist yet is reported, never
created), files at rest (data directory 0700, database and key file 0600, an unfinished key
rotation), sandbox (the layers a worker started here confines itself with, and which
``CRM_HOST_SANDBOX_REQUIRE`` asks for), egress waivers (each ``CRM_HOST_EGRESS_ALLOW`` entry
parsed, broad networks flagged) and SMTP (the relay answers, when one is configured). Exit
status 1 when any check fails; warnings do not fail.
"""

from __future__ import annotations

import smtplib
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from host.cli.host_options import HomeOption
from host.cli.output import handles_errors, out, table
from host.config import HostSettings, load_settings
from host.db.engine import make_engine
from host.db.migrate import alembic_config
from host.errors import HostError
from host.sandbox_layers import SandboxReport, pool_report
from sandbox.egress import AllowRule
from sandbox.kernel_wall import LAYERS
from sandbox.pool import SandboxPool

State = Literal["ok", "warning", "failed"]
#: waivers this wide open whole private ranges to every module that declares them
BROAD_PREFIX = {4: 16, 6: 48}


@dataclass(frozen=True)
class Check:
    section: str
    state: State
    detail: str


def _sandbox_report(settings: HostSettings) -> SandboxReport:
    """Start one worker as the host would (same defaults), read its hello, stop it."""
    pool: SandboxPool | None = None

    def start() -> SandboxPool:
        nonlocal pool
        pool = SandboxPool(size=1, spares=0)
        return pool

    try:
        return pool_report(start, settings.sandbox_require)
    finally:
        if pool is not None:
            pool.close()


def _print_sandbox(report: SandboxReport) -> None:
    uid = "unknown" if report.worker_uid is None else str(report.worker_uid)
    out.print(f"sandbox: workers run as uid {uid}; Landlock ABI {report.landlock_abi}")
    table(
        "Sandbox layers",
        ("layer", "state", "required"),
        (
            (
                name,
                "in force" if name in report.layers else "missing",
                "yes" if name in report.required else "",
            )
            for name in LAYERS
        ),
    )
    for note in report.notes:
        out.print(f"note: {note}", markup=False, highlight=False)


def database_checks(settings: HostSettings) -> Iterator[Check]:
    db_file = settings.sqlite_path()
    if db_file is not None and not db_file.exists():
        yield Check("database", "warning", f"no database at {db_file} yet (serve creates it)")
        return
    try:
        engine = make_engine(settings.database_url)
        try:
            with engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        finally:
            engine.dispose()
    except HostError as exc:  # a driver that is not installed, a server that does not answer
        yield Check("database", "failed", exc.message)
        return
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        yield Check("database", "failed", f"{settings.database_location()}: {first}")
        return
    yield Check("database", "ok", f"{settings.database_location()} reachable")
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    if current == head:
        yield Check("migrations", "ok", f"at the newest revision {head}")
    else:
        yield Check(
            "migrations", "warning", f"at {current or 'none'}, newest is {head} (serve upgrades)"
        )


def file_checks(settings: HostSettings) -> Iterator[Check]:
    """What protects the data at rest: the data directory, the database and key file modes,
    and whether a key rotation is still under way."""
    if settings.home.is_dir():
        mode = stat.S_IMODE(settings.home.stat().st_mode)
        state: State = "ok" if mode & 0o077 == 0 else "warning"
        yield Check("data directory", state, f"{settings.home} mode {mode:04o} (0700 expected)")
    db_file = settings.sqlite_path()
    for path in (db_file, Path(f"{db_file}.key")) if db_file is not None else ():
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            state = "ok" if mode & 0o077 == 0 else "failed"
            yield Check("file mode", state, f"{path.name} {mode:04o} (0600 expected)")
    if len(settings.secret_keys) > 1:
        yield Check(
            "secret keys",
            "warning",
            f"{len(settings.secret_keys)} keys configured: finish the rotation "
            "(crm-host secrets rotate-key), then remove the old ones",
        )


def egress_checks(settings: HostSettings) -> Iterator[Check]:
    if not settings.egress_allow:
        yield Check("egress waivers", "ok", "none (modules reach public destinations only)")
    for entry in settings.egress_allow:
        try:
            rule = AllowRule.parse(entry)
        except ValueError as exc:
            yield Check("egress waivers", "failed", str(exc))
            continue
        network = rule.network
        if network is not None and network.prefixlen < BROAD_PREFIX[network.version]:
            yield Check(
                "egress waivers",
                "warning",
                f"{entry} waives {network.num_addresses:,} addresses for every module that "
                "declares one of them; prefer single hosts",
            )
        else:
            yield Check("egress waivers", "ok", f"{entry}")


def smtp_checks(settings: HostSettings) -> Iterator[Check]:
    if not settings.smtp_host:
        yield Check("smtp", "ok", "no relay configured: SendEmail actions stay queued")
        return
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=5) as smtp:
            code, _ = smtp.noop()
    except (OSError, smtplib.SMTPException) as exc:
        yield Check("smtp", "failed", f"{where} does not answer: {exc}")
        return
    state: State = "ok" if code == 250 else "warning"
    yield Check("smtp", state, f"{where} answers (NOOP {code})")


@handles_errors
def doctor(home: HomeOption = None) -> None:
    """Check this machine's set-up: configuration, database and migrations, sandbox layers,
    egress waivers, SMTP relay. Exit status 1 when a check fails."""
    settings = load_settings(**({"home": home} if home is not None else {}))
    checks = [Check("configuration", "ok", f"valid; data in {settings.home}")]
    checks += database_checks(settings)
    checks += file_checks(settings)
    checks += egress_checks(settings)
    checks += smtp_checks(settings)
    table("Checks", ("check", "state", "detail"), ((c.section, c.state, c.detail) for c in checks))
    report = _sandbox_report(settings)
    _print_sandbox(report)
    report.require()
    if any(c.state == "failed" for c in checks):
        raise typer.Exit(1)
