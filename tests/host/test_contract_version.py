"""``contractVersion`` (SPEC §8): a manifest may name the contract it was written for; the host
stores it with the version, and refuses a version it does not serve (422 naming the field,
nothing stored)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from host.contract.functions import CONTRACT_VERSION
from tests.host.conftest import email_manifest, json_body


def test_a_declared_contract_version_is_stored_with_the_version(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = json_body(email_manifest(contractVersion=CONTRACT_VERSION))
    created = client.post("/api/v1/modules", json=body, headers=admin)
    assert created.status_code == 201, created.text
    shown = client.get("/api/v1/modules/sendmail/versions/1.0.0", headers=admin)
    assert shown.status_code == 200
    assert shown.json()["manifest"]["contractVersion"] == CONTRACT_VERSION


def test_a_manifest_without_a_contract_version_is_stored_as_uploaded(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert client.post("/api/v1/modules", json=json_body(), headers=admin).status_code == 201
    manifest: dict[str, Any] = client.get(
        "/api/v1/modules/sendmail/versions/1.0.0", headers=admin
    ).json()["manifest"]
    assert "contractVersion" not in manifest


def test_an_unknown_contract_version_is_refused_naming_the_field(
    client: TestClient, admin: dict[str, str]
) -> None:
    for bad, reason in (("9.9", 'unknown contract version "9.9"'), (1, "")):
        body = json_body(email_manifest(contractVersion=bad))
        refused = client.post("/api/v1/modules", json=body, headers=admin)
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["problems"]
        assert problem["location"] == "manifest.json: $.contractVersion"
        assert reason in problem["message"]
    listed = client.get("/api/v1/modules", headers=admin)
    assert listed.status_code == 200  # the host keeps serving
    assert listed.json() == []  # and stored nothing
    good = json_body(email_manifest(contractVersion=CONTRACT_VERSION))
    assert client.post("/api/v1/modules", json=good, headers=admin).status_code == 201
