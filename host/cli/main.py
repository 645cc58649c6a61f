"""``crm-host``: serve the host, and administer modules and tenants against the same
database the server uses (``CRM_HOST_DATABASE_URL``)."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from host.cli.admin import app as admin_app
from host.cli.campaign import app as campaign_app
from host.cli.contacts import app as contact_app
from host.cli.demo import demo
from host.cli.doctor import doctor
from host.cli.host_options import DatabaseOption, HomeOption, host_settings, open_host
from host.cli.jobs import app as jobs_app
from host.cli.jobs import worker
from host.cli.module_dev import (
    module_certify,
    module_new,
    module_test,
    module_validate,
    upload_remote,
)
from host.cli.module_run import module_run
from host.cli.module_shadow import module_shadow
from host.cli.operations import backup, purge, restore, secrets_app
from host.cli.output import err, handles_errors, out, print_json, table
from host.cli.templates import app as templates_app
from host.cli.usage_errors import OneLineUsageErrors
from host.cli.webhooks import app as webhooks_app
from host.config import HostSettings
from host.errors import InvalidInput, Problem
from host.modules.packages import ModulePackage, from_directory, from_zip
from host.platform import Host, prepare_home
from host.sandbox_layers import pool_report
from host.serving_lock import ServingLock

app = OneLineUsageErrors(
    help="Run CRM Marketing integration modules for many tenants.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
module_app = typer.Typer(
    help="Write, check, run and test modules; upload and inspect module versions.",
    no_args_is_help=True,
)
tenant_app = typer.Typer(help="Tenants and the modules enabled for them.", no_args_is_help=True)
app.add_typer(module_app, name="module")
module_app.command("new")(module_new)
module_app.command("validate")(module_validate)
module_app.command("run")(module_run)
module_app.command("test")(module_test)
module_app.command("shadow")(module_shadow)
module_app.command("certify")(module_certify)
app.add_typer(tenant_app, name="tenant")
app.add_typer(templates_app, name="templates")
app.add_typer(campaign_app, name="campaign")
app.add_typer(contact_app, name="contact")
app.add_typer(admin_app, name="admin")
app.command("demo")(demo)
app.command("doctor")(doctor)
app.command("backup")(backup)
app.command("restore")(restore)
app.command("purge")(purge)
app.add_typer(secrets_app, name="secrets")
app.add_typer(webhooks_app, name="webhooks")
app.command("worker")(worker)
app.add_typer(jobs_app, name="jobs")


# --- serve ---------------------------------------------------------------------------------


@app.command()
@handles_errors
def serve(
    host_address: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Run the HTTP API (OpenAPI at /docs) under uvicorn."""
    settings = host_settings(database_url, home)
    if "public_url" not in settings.model_fields_set:
        # Validated again with the address: the webhook base must not take it over.
        settings = host_settings(database_url, home, public_url=f"http://{host_address}:{port}")
    db_file = settings.sqlite_path()
    if db_file is not None:
        prepare_home(settings)
    # Held while serving, so `crm-host restore` refuses to replace the database under us.
    in_use = ServingLock(db_file) if db_file is not None else None
    try:
        _serve(settings, host_address, port)
    finally:
        if in_use is not None:
            in_use.release()


def _serve(settings: HostSettings, host_address: str, port: int) -> None:
    import uvicorn

    from host.api.app import create_app
    from host.logs import logging_config

    with closing(Host(settings)) as host:
        host.open()  # migrates
        # warm the workers now: a required sandbox layer that is missing stops the start
        layers = pool_report(lambda: host.sandbox, settings.sandbox_require)
        layers.require()
        host.start()  # campaign jobs, outbox, purges (the app's lifespan keeps them)
        token = host.admin_tokens.first_start_token()
        if token is not None:
            err.print(
                "first start: admin token 'default' created (shown once; stored hashed, it "
                f"keeps working after restarts; `crm-host admin token` manages tokens):\n  {token}",
                markup=False,
                highlight=False,
            )
        err.print(
            f"crm-host: database {settings.database_location()}; http://{host_address}:{port}/docs",
            markup=False,
            highlight=False,
        )
        err.print(
            f"crm-host: sandbox layers {', '.join(layers.layers) or 'none'}"
            f" (workers run as uid {layers.worker_uid})",
            markup=False,
            highlight=False,
        )
        uvicorn.run(
            create_app(host),
            host=host_address,
            port=port,
            log_level="info",
            log_config=logging_config(settings.log_format),
        )


# --- module --------------------------------------------------------------------------------


def read_package(path: Path, settings: HostSettings) -> ModulePackage:
    if path.is_dir():
        return from_directory(path, max_script_bytes=settings.max_script_bytes)
    if path.is_file():
        return from_zip(
            path.read_bytes(),
            max_archive_bytes=settings.max_archive_bytes,
            max_script_bytes=settings.max_script_bytes,
        )
    raise InvalidInput("module package not found", [Problem(str(path), "no such file or folder")])


@module_app.command("upload")
@handles_errors
def module_upload(
    path: Annotated[Path, typer.Argument(help="Module folder or .zip archive.")],
    url: Annotated[
        str | None,
        typer.Option("--url", help="Upload to the host running at this URL (over its API)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="CRM_HOST_ADMIN_TOKEN", help="Admin token of the host at --url."
        ),
    ] = None,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Validate and store a module version (locally, or on the host at --url)."""
    if url is not None:
        upload_remote(path, url, token)
        return
    with open_host(database_url, home) as host:
        info = host.upload_module(read_package(path, host.settings))
        verb = "stored" if info.created else "already stored (identical)"
        out.print(f"{info.id}@{info.version} {verb}: {info.kind} module")
        out.print("functions: " + (", ".join(info.functions) or "none"))


@module_app.command("list")
@handles_errors
def module_list(database_url: DatabaseOption = None, home: HomeOption = None) -> None:
    """Modules and their versions."""
    with open_host(database_url, home, read_only=True) as host:
        table(
            "Modules",
            ("id", "name", "kind", "latest", "versions"),
            (
                (
                    m.id,
                    m.latest.name,
                    m.kind,
                    m.latest.version,
                    ", ".join(v.version for v in m.versions),
                )
                for m in host.registry.list()
            ),
        )


@module_app.command("certification")
@handles_errors
def module_certification(
    module_id: str, version: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """The certification report the host keeps with a version, as JSON."""
    with open_host(database_url, home, read_only=True) as host:
        report = host.certifications.report(module_id, version)
    out.print_json(data=report)


@module_app.command("show")
@handles_errors
def module_show(
    module_id: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """One module with each version's implemented functions."""
    with open_host(database_url, home, read_only=True) as host:
        info = host.registry.get(module_id)
        table(
            f"{info.id} ({info.kind})",
            ("version", "uploaded", "functions"),
            ((v.version, v.uploaded_at, ", ".join(v.functions)) for v in info.versions),
        )


@module_app.command("remove")
@handles_errors
def module_remove(
    module_id: str, version: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Remove a module version nothing uses (refused, naming each use, otherwise)."""
    with open_host(database_url, home) as host:
        retention = timedelta(days=host.settings.campaign_stats_retention_days)
        host.registry.remove(module_id, version, stats_retention=retention)
        out.print(f"{module_id}@{version} removed")


# --- tenant --------------------------------------------------------------------------------


@tenant_app.command("create")
@handles_errors
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="Slug, e.g. acme.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Create a tenant and print its API key (shown this once)."""
    with open_host(database_url, home) as host:
        tenant, key = host.tenants.create(tenant_id, name)
        out.print(f"tenant {tenant.id} created")
        out.print(f"API key (shown once, store it now): {key}", markup=False, highlight=False)


@tenant_app.command("list")
@handles_errors
def tenant_list(database_url: DatabaseOption = None, home: HomeOption = None) -> None:
    with open_host(database_url, home, read_only=True) as host:
        table(
            "Tenants",
            ("id", "name", "created"),
            ((t.id, t.name, t.created_at) for t in host.tenants.list()),
        )


@tenant_app.command("rotate-key")
@handles_errors
def tenant_rotate_key(
    tenant_id: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Replace a tenant's API key; the old key stops working at once."""
    with open_host(database_url, home) as host:
        key = host.tenants.rotate_key(tenant_id)
    out.print(f"new API key of {tenant_id} (shown once, store it now): {key}", markup=False)


@tenant_app.command("delete")
@handles_errors
def tenant_delete(
    tenant_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Delete a tenant and all its data: gone from the API at once, then purged in batches
    here (interrupted, the server or the next `tenant delete` finishes the purge)."""
    with open_host(database_url, home) as host:
        if tenant_id not in host.tenant_deletion.pending():  # else: finish an interrupted purge
            host.tenants.get(tenant_id)
            if not yes:
                typer.confirm(f"Delete tenant {tenant_id} and all its data?", abort=True)
            host.tenant_deletion.tombstone(tenant_id)
        rows = host.tenant_deletion.purge(tenant_id)
        out.print(f"tenant {tenant_id} deleted: {rows} rows purged")


def parse_settings(
    pairs: list[str], settings_file: Path | None, secret_names: list[str]
) -> dict[str, Any] | None:
    """Settings from a JSON file, ``key=value`` pairs (values parsed as JSON when they can be)
    and hidden prompts for secrets (so they stay out of shell history and ``ps``)."""
    if settings_file is None and not pairs and not secret_names:
        return None
    settings: dict[str, Any] = {}
    if settings_file is not None:
        try:
            loaded = json.loads(settings_file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(
                "settings file is unreadable", [Problem(str(settings_file), str(exc))]
            ) from None
        if not isinstance(loaded, dict):
            raise InvalidInput(
                "settings file is invalid", [Problem(str(settings_file), "must hold a JSON object")]
            )
        settings.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(
                "setting is malformed", [Problem(f"--set {pair}", "expected key=value")]
            )
        try:
            settings[key] = json.loads(raw)
        except ValueError:
            settings[key] = raw
    for name in secret_names:
        settings[name] = typer.prompt(name, hide_input=True)
    return settings


SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="A setting as key=value (repeatable).")
]
SettingsFileOption = Annotated[
    Path | None, typer.Option("--settings-file", help="Settings as a JSON object.")
]
SecretOption = Annotated[
    list[str] | None,
    typer.Option("--secret", help="Prompt (hidden) for this setting's value (repeatable)."),
]


def print_enablement(info: Any) -> None:
    state = "enabled" if info.enabled else "disabled"
    out.print(f"{info.module_id}@{info.version} {state} for tenant {info.tenant_id}")
    out.print(f"webhook URL: {info.webhook_url}", markup=False, highlight=False)
    print_json(info.settings)


@tenant_app.command("enable")
@handles_errors
def tenant_enable(
    tenant_id: str,
    module_id: str,
    version: Annotated[str | None, typer.Option(help="Version to pin (default: latest).")] = None,
    set_: SetOption = None,
    settings_file: SettingsFileOption = None,
    secret: SecretOption = None,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Enable a module version for a tenant (or pin another version), with settings."""
    with open_host(database_url, home) as host:
        settings = parse_settings(set_ or [], settings_file, secret or [])
        info = host.tenants.configure(
            tenant_id, module_id, version=version, settings=settings, enabled=True
        )
        print_enablement(info)


@tenant_app.command("disable")
@handles_errors
def tenant_disable(
    tenant_id: str, module_id: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Disable a module for a tenant; its settings are kept."""
    with open_host(database_url, home) as host:
        info = host.tenants.disable(tenant_id, module_id)
        out.print(f"{info.module_id} disabled for tenant {info.tenant_id}")


@tenant_app.command("rollback")
@handles_errors
def tenant_rollback(
    tenant_id: str, module_id: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Pin the version that was pinned before the current one."""
    with open_host(database_url, home) as host:
        print_enablement(host.tenants.rollback(tenant_id, module_id))


@tenant_app.command("settings")
@handles_errors
def tenant_settings(
    tenant_id: str,
    module_id: str,
    set_: SetOption = None,
    settings_file: SettingsFileOption = None,
    secret: SecretOption = None,
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Show a tenant's settings of a module (secrets masked), or change them. Given
    settings are merged into the stored ones."""
    with open_host(database_url, home) as host:
        update = parse_settings(set_ or [], settings_file, secret or [])
        if update is None:
            print_enablement(host.tenants.enablement(tenant_id, module_id))
            return
        print_enablement(host.tenants.update_settings(tenant_id, module_id, update))


@tenant_app.command("modules")
@handles_errors
def tenant_modules(
    tenant_id: str, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Modules enabled for a tenant, with their webhook URLs."""
    with open_host(database_url, home, read_only=True) as host:
        table(
            f"Modules of {tenant_id}",
            ("module", "version", "enabled", "webhook URL"),
            (
                (e.module_id, e.version, e.enabled, e.webhook_url)
                for e in host.tenants.enablements(tenant_id)
            ),
        )


if __name__ == "__main__":  # pragma: no cover
    app()
