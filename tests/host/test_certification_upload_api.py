"""``POST /api/v1/modules`` on a host with ``CRM_HOST_REQUIRE_CERTIFIED=1``: a zip that brings
its tests/ and passes is stored with its report; one that fails is a 422 listing each failed
check, and a bare JSON upload (no cases) is refused too — nothing stored either way, and the
host keeps serving. One host for the whole file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import ADMIN_TOKEN, make_host, table_dump, zip_bytes

QUICKSTART = Path(__file__).resolve().parents[2] / "module_manifests" / "quickstart"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

#: The quickstart's first version, before it answered malformed bodies: it raises on them.
RAISING_SCRIPT = """\
import json


def CRM_Marketing_ParseWebhookRequest(request):
    payload = json.loads(request.body or "{}")
    return {"actions": [
        {"type": "Unsubscribe", "email": e["email"], "externalId": {"all": True}}
        for e in payload.get("events", []) if e.get("event") == "unsubscribe"
    ]}
"""


def quickstart_zip(*, module_id: str = "quickstart", script: str | None = None) -> bytes:
    manifest = json.loads((QUICKSTART / "manifest.json").read_text())
    manifest["id"] = module_id
    entries: dict[str, str | bytes] = {
        "manifest.json": json.dumps(manifest),
        "module.py": script if script is not None else (QUICKSTART / "module.py").read_text(),
    }
    for path in sorted((QUICKSTART / "tests").rglob("*.json")):
        entries[path.relative_to(QUICKSTART).as_posix()] = path.read_bytes()
    return zip_bytes(entries)


@pytest.fixture(scope="module")
def strict_host(tmp_path_factory: pytest.TempPathFactory, pool: SandboxPool) -> Iterator[Host]:
    db = tmp_path_factory.mktemp("certified") / "host.db"
    host = make_host(db, sandbox=pool, require_certified=True)
    yield host
    host.close()


@pytest.fixture(scope="module")
def client(strict_host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(strict_host)) as test_client:
        yield test_client


def upload_zip(client: TestClient, data: bytes) -> Any:
    return client.post(
        "/api/v1/modules",
        headers=ADMIN,
        files={"package": ("module.zip", data, "application/zip")},
    )


def test_a_passing_upload_is_stored_with_its_valid_report(client: TestClient) -> None:
    stored = upload_zip(client, quickstart_zip())
    assert stored.status_code == 201, stored.text
    assert stored.json()["id"] == "quickstart"
    report = client.get(
        "/api/v1/modules/quickstart/versions/1.0.0/certification", headers=ADMIN
    ).json()
    assert report["passed"] is True and report["valid"] is True
    assert {c["name"] for c in report["checks"]} >= {"cases", "webhook-malformed"}
    assert all(c["passed"] for c in report["checks"])


def test_a_failing_upload_is_refused_listing_each_failed_check(
    client: TestClient, strict_host: Host
) -> None:
    before = table_dump(strict_host)
    refused = upload_zip(client, quickstart_zip(module_id="raising", script=RAISING_SCRIPT))
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert "raising@1.0.0 is not certified" in body["message"]
    problems = [(p["location"], p["message"]) for p in body["problems"]]
    locations = {location for location, _ in problems}
    assert locations == {"certification: cases", "certification: webhook-malformed"}, problems
    messages = "\n".join(message for _, message in problems)
    assert "tests/webhook.json::a body that is not JSON is answered 400" in messages
    assert "invalid JSON: raised script_error: JSONDecodeError" in messages
    assert "Traceback" not in refused.text
    # nothing stored: no module, no version, no report; the host keeps serving
    assert table_dump(strict_host) == before
    assert client.get("/api/v1/modules/raising", headers=ADMIN).status_code == 404
    listed = client.get("/api/v1/modules", headers=ADMIN)
    assert listed.status_code == 200 and "raising" not in [m["id"] for m in listed.json()]


def test_a_bare_json_upload_gets_the_static_checks_and_is_refused(
    client: TestClient, strict_host: Host
) -> None:
    before = table_dump(strict_host)
    manifest = json.loads((QUICKSTART / "manifest.json").read_text())
    bare = {
        "manifest": {**manifest, "id": "bare"},
        "script": (QUICKSTART / "module.py").read_text(),
    }
    refused = client.post("/api/v1/modules", headers=ADMIN, json=bare)
    assert refused.status_code == 422, refused.text
    problems = refused.json()["problems"]
    listed = {(p["location"], p["message"]) for p in problems}
    assert listed == {
        (
            "certification: cases",
            "CRM_Marketing_ParseWebhookRequest is implemented but no case in tests/ calls it",
        ),
        (
            "certification: cases",
            "no cases: add *.json case files to tests/ (see `crm-host module test`)",
        ),
        (
            "certification: webhook-malformed",
            "CRM_Marketing_ParseWebhookRequest has no case to start from",
        ),
    }
    assert table_dump(strict_host) == before
    assert client.get("/api/v1/modules/bare", headers=ADMIN).status_code == 404
