"""Shared fixtures of the host tests: a Host on a temporary database (a SQLite file, and on
the PostgreSQL parametrisation a fresh PostgreSQL database: ``tests/conftest.py``), a
TestClient of its HTTP app, and builders for sample module packages (directory, zip, JSON body).

The builders are plain functions so other test folders can reuse them; ``tests/plugins``
loads this file by path (see ``load_host_support`` there)."""

from __future__ import annotations

import copy
import io
import json
import sqlite3
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from host.api.app import create_app
from host.config import HostSettings
from host.platform import Host
from tests.postgres import backend, database_url

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
SECRET_KEY = "a passphrase of the test suite, long enough"
SECRET_API_KEY = "SG.super-secret-api-key-7f3a9c1e5b"

EMAIL_SCRIPT = '''\
"""A sample email module."""


def CRM_Marketing_ImportTemplates(offset, limit):
    names = ["Welcome", "Newsletter", "Promo"]
    page = names[offset:offset + limit]
    return [{"externalId": "t" + str(offset + i), "name": n} for i, n in enumerate(page)]


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "c-" + request["campaignId"]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 3, "sent": 3}


def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    """Not supported by this service."""
    raise NotImplementedError("no previews")


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "tpl-1"
'''

EMAIL_FUNCTIONS = [
    "CRM_Marketing_ImportTemplates",
    "CRM_Marketing_ExportContacts",
    "CRM_Marketing_PrepareCampaign",
    "CRM_Marketing_CreateCampaign",
    "CRM_Marketing_GetCampaignStats",
    "CRM_Marketing_SetTemplateHTML",
]
"""What the registry reports for EMAIL_SCRIPT: the two stubs are left out."""

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "writeOnly": True, "minLength": 8},
        "sender_email": {"type": "string", "format": "email"},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    "required": ["api_key"],
    "additionalProperties": False,
}


def email_manifest(**overrides: Any) -> dict[str, Any]:
    """The manifest of the sample email module, with top-level keys overridden (a value of
    ``None`` removes the key)."""
    manifest: dict[str, Any] = {
        "id": "sendmail",
        "name": "SendMail",
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "description": "Sample email module of the test suite",
        "egress": ["api.sendmail.test"],
        "settings": copy.deepcopy(SETTINGS_SCHEMA),
    }
    for key, value in overrides.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    return manifest


def write_package(
    directory: Path, manifest: dict[str, Any] | None = None, script: str | bytes = EMAIL_SCRIPT
) -> Path:
    """A package directory: ``manifest.json`` plus the script the manifest names."""
    manifest = email_manifest() if manifest is None else manifest
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    raw = script.encode() if isinstance(script, str) else script
    (directory / str(manifest.get("script", "module.py"))).write_bytes(raw)
    return directory


def zip_bytes(entries: dict[str, str | bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def package_zip(
    manifest: dict[str, Any] | None = None, script: str | bytes = EMAIL_SCRIPT, *, folder: str = ""
) -> bytes:
    """A package zip, at the archive root or inside ``folder/``."""
    manifest = email_manifest() if manifest is None else manifest
    prefix = f"{folder}/" if folder else ""
    return zip_bytes(
        {
            prefix + "manifest.json": json.dumps(manifest),
            prefix + str(manifest.get("script", "module.py")): script,
        }
    )


def json_body(manifest: dict[str, Any] | None = None, script: str = EMAIL_SCRIPT) -> dict[str, Any]:
    return {"manifest": email_manifest() if manifest is None else manifest, "script": script}


def make_settings(db_path: Path, **overrides: Any) -> HostSettings:
    values: dict[str, Any] = {
        "admin_token": ADMIN_TOKEN,
        "secret_key": SECRET_KEY,
        "public_url": "https://crm.example.test/",
        "plugins": [],
    }
    values.update(overrides)
    if "database_url" not in values:
        values["database_url"] = database_url(db_path)
    return HostSettings(**values)


def make_host(
    db_path: Path, *, extra_plugins: Any = (), sandbox: Any = None, **overrides: Any
) -> Host:
    """An opened Host on ``db_path`` (migrated; no background thread runs until ``start()``
    or a TestClient's lifespan); pass the suite's shared ``pool`` as ``sandbox`` to run
    modules without starting workers of its own."""
    return Host(
        make_settings(db_path, **overrides),
        extra_plugins=extra_plugins,
        load_entry_points=False,
        sandbox=sandbox,
    ).open()


def table_dump(host: Host) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every host table, for "nothing was written" assertions (either backend)."""
    with host.db.engine.connect() as connection:
        tables = sorted(inspect(connection).get_table_names())
        return {
            t: sorted(map(tuple, connection.exec_driver_sql(f'SELECT * FROM "{t}"')), key=repr)
            for t in tables
        }


def database_bytes(db_path: Path) -> bytes:
    """What the database holds, for "this value is nowhere in it" assertions: on SQLite the
    bytes of the file and its -wal/-shm companions, read without checkpointing (whatever is
    on disk, wherever it is); on PostgreSQL every row of every table, as text."""
    url = backend.postgres_url(db_path)
    if url is not None:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                rows = {
                    table: connection.exec_driver_sql(f'SELECT * FROM "{table}"').all()
                    for table in inspect(connection).get_table_names()
                }
        finally:
            engine.dispose()
        return repr(rows).encode()
    data = b""
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(db_path) + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


def checkpoint(db_path: Path) -> None:
    """Move SQLite's WAL into the main file (PostgreSQL: nothing to do)."""
    if backend.postgres_url(db_path) is not None:
        return
    with sqlite3.connect(db_path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture
def host(db_path: Path) -> Iterator[Host]:
    instance = make_host(db_path)
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host)) as test_client:
        yield test_client


@pytest.fixture
def admin() -> dict[str, str]:
    """Headers of the platform admin."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def upload(host: Host) -> Callable[..., Any]:
    """Store a version of the sample module directly through the registry."""
    from host.modules.packages import from_json_body

    def _upload(manifest: dict[str, Any] | None = None, script: str = EMAIL_SCRIPT) -> Any:
        package = from_json_body(json_body(manifest, script), max_script_bytes=64 * 1024)
        return host.registry.upload(package)

    return _upload


@pytest.fixture
def tenant(host: Host) -> tuple[str, str]:
    """A tenant ``acme`` and its API key."""
    info, key = host.tenants.create("acme", "Acme Corp")
    return info.id, key
