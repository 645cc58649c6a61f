"""Secret settings are located by key paths, not dotted strings: a ``writeOnly`` property
named ``api.key``, with ``/``, ``~``, spaces or unicode, inside nested objects or array
elements is sealed at rest, never echoed by PUT/PATCH/GET, kept across edits, masked in the
module's output, and reaches the module as the raw value. Secrets sealed in the old dotted
format still open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from host.api.app import create_app
from host.db.models import Enablement, Template
from host.modules.packages import from_json_body
from host.platform import Host
from host.settings_schema import SECRET_MARKER as SET
from sandbox.pool import SandboxPool
from tests.host.conftest import (
    ADMIN_TOKEN,
    EMAIL_SCRIPT,
    checkpoint,
    database_bytes,
    email_manifest,
    make_host,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
URL = "/api/v1/tenants/acme/modules/odd"

ODD_NAME = "a/b ~0 ключ"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "api.key": {"type": "string", "writeOnly": True},
        # a plain setting whose dotted path would have been confused with "api.key"
        "api": {"type": "object", "properties": {"key": {"type": "string"}}},
        ODD_NAME: {"type": "string", "writeOnly": True},
        "outer": {
            "type": "object",
            "properties": {
                "in.ner": {
                    "type": "object",
                    "properties": {"tok en": {"type": "string", "writeOnly": True}},
                }
            },
        },
        "accounts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "token": {"type": "string", "writeOnly": True},
                },
            },
        },
        "pins": {"type": "array", "items": {"type": "string", "writeOnly": True}},
    },
    "additionalProperties": False,
}

SECRETS = {
    "dotted": "dotted-name-secret-1a2b3c",
    "odd": "odd-name-secret-4d5e6f",
    "nested": "nested-secret-7a8b9c0d",
    "acc0": "account-zero-secret-0000",
    "acc1": "account-one-secret-1111",
    "pin1": "pin-list-secret-aaaa",
    "pin2": "pin-list-secret-bbbb",
}
SETTINGS: dict[str, Any] = {
    "api.key": SECRETS["dotted"],
    "api": {"key": "plain-visible-value"},
    ODD_NAME: SECRETS["odd"],
    "outer": {"in.ner": {"tok en": SECRETS["nested"]}},
    "accounts": [
        {"name": "eu", "token": SECRETS["acc0"]},
        {"name": "us", "token": SECRETS["acc1"]},
    ],
    "pins": [SECRETS["pin1"], SECRETS["pin2"]],
}
MASKED: dict[str, Any] = {
    "api.key": SET,
    "api": {"key": "plain-visible-value"},
    ODD_NAME: SET,
    "outer": {"in.ner": {"tok en": SET}},
    "accounts": [{"name": "eu", "token": SET}, {"name": "us", "token": SET}],
    "pins": SET,
}

# ImportTemplates returns (and logs) every secret: the module sees them raw.
SCRIPT = EMAIL_SCRIPT.replace(
    """def CRM_Marketing_ImportTemplates(offset, limit):
    names = ["Welcome", "Newsletter", "Promo"]""",
    """def CRM_Marketing_ImportTemplates(offset, limit):
    values = [settings["api.key"], settings["a/b ~0 ключ"],
              settings["outer"]["in.ner"]["tok en"]]
    values += [a["token"] for a in settings["accounts"]] + list(settings["pins"])
    log("settings:", values)
    return [{"externalId": "t" + str(i), "name": v} for i, v in enumerate(values)]
    names = ["Welcome", "Newsletter", "Promo"]""",
)


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    body = {"manifest": email_manifest(id="odd", settings=SCHEMA), "script": SCRIPT}
    instance.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    instance.tenants.create("acme", "Acme")
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host)) as test_client:
        yield test_client


def assert_no_secret(text: str) -> None:
    for secret in SECRETS.values():
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text  # nor its JSON-escaped form


def test_odd_names_are_sealed_masked_and_reach_the_module_raw(
    host: Host, client: TestClient, db_path: Path
) -> None:
    put = client.put(URL, headers=ADMIN, json={"settings": SETTINGS})
    assert put.status_code == 200, put.text
    assert put.json()["settings"] == MASKED
    got = client.get(URL, headers=ADMIN)
    listed = client.get("/api/v1/tenants/acme/modules", headers=ADMIN)
    for response in (put, got, listed):
        assert_no_secret(response.text)
    assert got.json()["settings"] == MASKED

    assert host.tenants.runtime("acme", "odd").settings == SETTINGS  # stored is the raw value
    raw = database_bytes(db_path)
    assert b"plain-visible-value" in raw  # a plaintext value would be seen
    checkpoint(db_path)
    raw += database_bytes(db_path)
    for secret in SECRETS.values():
        assert secret.encode() not in raw


def test_edits_keep_secrets_by_key_path_and_null_removes(host: Host, client: TestClient) -> None:
    assert client.put(URL, headers=ADMIN, json={"settings": SETTINGS}).status_code == 200
    # the masked answer sent back whole keeps every secret (replace)
    shown = client.get(URL, headers=ADMIN).json()["settings"]
    again = client.put(URL, headers=ADMIN, json={"settings": shown})
    assert again.status_code == 200, again.text
    assert host.tenants.runtime("acme", "odd").settings == SETTINGS

    # patch: rename an account (its token kept by position), drop the dotted secret only
    patch = {"accounts": [{"name": "eu-1", "token": SET}, {"name": "us"}], "api.key": None}
    patched = client.patch(URL, headers=ADMIN, json={"settings": patch})
    assert patched.status_code == 200, patched.text
    assert_no_secret(patched.text)
    expected = {k: v for k, v in SETTINGS.items() if k != "api.key"}
    expected["accounts"] = [
        {"name": "eu-1", "token": SECRETS["acc0"]},
        {"name": "us", "token": SECRETS["acc1"]},
    ]
    assert host.tenants.runtime("acme", "odd").settings == expected
    # the plain "api" object was never touched by the removal of "api.key"
    assert patched.json()["settings"]["api"] == {"key": "plain-visible-value"}
    assert "api.key" not in patched.json()["settings"]


def test_a_bad_secret_in_an_array_is_located_without_echo(client: TestClient) -> None:
    bad = {**SETTINGS, "accounts": [{"name": "eu", "token": 12345678901}]}
    answer = client.put(URL, headers=ADMIN, json={"settings": bad})
    assert answer.status_code == 422
    locations = [p["location"] for p in answer.json()["problems"]]
    assert locations == ["settings.accounts[0].token"]
    assert "12345678901" not in answer.text
    assert client.get(URL, headers=ADMIN).status_code == 404  # nothing stored


def test_the_module_output_masks_every_key_path_secret(host: Host, client: TestClient) -> None:
    assert client.put(URL, headers=ADMIN, json={"settings": SETTINGS}).status_code == 200
    imported = client.post(f"{URL}/templates/import", headers=ADMIN)
    assert imported.status_code == 200, imported.text
    templates = client.get("/api/v1/tenants/acme/templates", headers=ADMIN)
    invocations = client.get("/api/v1/tenants/acme/invocations", headers=ADMIN)
    for response in (templates, invocations):
        assert response.status_code == 200
        assert_no_secret(response.text)
    assert [t["name"] for t in templates.json()] == ["***"] * 7
    assert "settings: [" in invocations.text and "***" in invocations.text
    with host.db.transaction() as session:  # stored as returned
        names = set(session.scalars(select(Template.name)))
    assert names == set(SECRETS.values())


def test_secrets_sealed_in_the_old_dotted_format_still_open(host: Host, client: TestClient) -> None:
    """Rows written before key paths sealed ``{"dotted.path": value}``; they are read as is
    and rewritten in the new format by the next settings change."""
    simple = {
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True},
            "auth": {
                "type": "object",
                "properties": {"token": {"type": "string", "writeOnly": True}},
            },
            "region": {"type": "string"},
        },
    }
    body = {"manifest": email_manifest(id="legacy", settings=simple), "script": EMAIL_SCRIPT}
    host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    host.tenants.configure("acme", "legacy", settings={"region": "eu"})
    old = {"api_key": "legacy-api-key-123456", "auth.token": "legacy-token-abcdef"}
    with host.db.transaction() as session:
        row = session.get(Enablement, ("acme", "legacy"))
        assert row is not None
        row.secrets_encrypted = host.tenants.box.seal(old)

    full = {"region": "eu", "api_key": old["api_key"], "auth": {"token": old["auth.token"]}}
    assert host.tenants.runtime("acme", "legacy").settings == full
    shown = client.get("/api/v1/tenants/acme/modules/legacy", headers=ADMIN)
    assert shown.json()["settings"] == {"region": "eu", "api_key": SET, "auth": {"token": SET}}
    assert old["api_key"] not in shown.text

    edited = client.patch(
        "/api/v1/tenants/acme/modules/legacy", headers=ADMIN, json={"settings": {"region": "us"}}
    )
    assert edited.status_code == 200, edited.text
    with host.db.transaction() as session:
        row = session.get(Enablement, ("acme", "legacy"))
        assert row is not None
        sealed = host.tenants.box.open(row.secrets_encrypted)
    assert sealed == [[["api_key"], old["api_key"]], [["auth", "token"], old["auth.token"]]]
    assert host.tenants.runtime("acme", "legacy").settings == {**full, "region": "us"}
