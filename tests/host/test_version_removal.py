"""Removing a module version through HTTP: refused with a 409 naming every use (pinned,
rollback target, unfinished campaign, campaign inside the stats retention), done when
nothing uses it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.db.models import Campaign, utcnow
from host.platform import Host
from tests.host.conftest import email_manifest

URL = "/api/v1/modules/sendmail/versions"


@pytest.fixture
def versions(upload: Any) -> None:
    upload()
    upload(email_manifest(version="1.1.0"))


def add_campaign(host: Host, campaign_id: str, stage: str, ended_days_ago: float | None) -> None:
    ended = utcnow() - timedelta(days=ended_days_ago) if ended_days_ago is not None else None
    with host.db.transaction() as session:
        session.add(
            Campaign(
                id=campaign_id,
                tenant_id="acme",
                module_id="sendmail",
                module_version="1.0.0",
                type="Email",
                name="c",
                stage=stage,
                created_at=ended or utcnow(),
                finished_at=ended,
            )
        )


def problems(answer: Any) -> dict[str, str]:
    assert answer.status_code == 409, answer.text
    return {p["location"]: p["message"] for p in answer.json()["problems"]}


def test_a_pinned_or_rollback_version_is_refused(
    client: TestClient, host: Host, admin: Any, tenant: Any, versions: None
) -> None:
    host.tenants.configure("acme", "sendmail", version="1.0.0", settings={"api_key": "k" * 12})
    assert problems(client.delete(f"{URL}/1.0.0", headers=admin)) == {"tenant acme": "pins it"}
    host.tenants.configure("acme", "sendmail", version="1.1.0")
    refused = problems(client.delete(f"{URL}/1.0.0", headers=admin))
    assert refused == {"tenant acme": "keeps it as its rollback version"}
    assert client.get(f"{URL}/1.0.0", headers=admin).status_code == 200  # still there


def test_campaigns_unfinished_or_inside_the_retention_are_named(
    client: TestClient, host: Host, admin: Any, tenant: Any, versions: None
) -> None:
    add_campaign(host, "running", "preparing", None)
    add_campaign(host, "recent", "done", 10)
    add_campaign(host, "old", "done", 200)
    refused = problems(client.delete(f"{URL}/1.0.0", headers=admin))
    assert refused == {
        "campaign running of tenant acme": "is unfinished (preparing)",
        "campaign recent of tenant acme": refused["campaign recent of tenant acme"],
    }
    assert "inside the stats retention (90 days)" in refused["campaign recent of tenant acme"]
    with host.db.transaction() as session:
        for campaign_id in ("running", "recent"):
            row = session.get(Campaign, campaign_id)
            assert row is not None
            row.stage, row.finished_at = "done", utcnow() - timedelta(days=91)
    assert client.delete(f"{URL}/1.0.0", headers=admin).status_code == 200


def test_an_unused_version_is_removed(
    client: TestClient, host: Host, admin: Any, tenant: Any, versions: None
) -> None:
    host.registry.stored("sendmail", "1.0.0")  # cached in this process
    removed = client.delete(f"{URL}/1.0.0", headers=admin)
    assert removed.status_code == 200
    assert removed.json() == {"id": "sendmail", "version": "1.0.0", "removed": True}
    assert client.get(f"{URL}/1.0.0", headers=admin).status_code == 404
    listed = client.get("/api/v1/modules/sendmail", headers=admin).json()
    assert [v["version"] for v in listed["versions"]] == ["1.1.0"]
    pin = client.put(
        "/api/v1/tenants/acme/modules/sendmail",
        json={"version": "1.0.0", "settings": {"api_key": "k" * 12}},
        headers=admin,
    )
    assert pin.status_code == 404  # the removed version cannot be pinned any more
    assert client.delete(f"{URL}/1.0.0", headers=admin).status_code == 404
    key = {"Authorization": f"Bearer {tenant[1]}"}
    assert client.delete(f"{URL}/1.1.0", headers=key).status_code == 403
