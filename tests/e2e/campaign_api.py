"""Starting a campaign through the tenant API and waiting until the module created it in the
service: what the vendor-sample journeys do before the service's webhooks arrive."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient


def created_in_service(
    client: TestClient, tenant: str, draft: dict[str, Any], headers: dict[str, str]
) -> tuple[str, str]:
    """POST the draft, then poll until the campaign has its service id (``externalId``) or
    failed; returns (CRM campaign id, service campaign id) of a campaign now Sending."""
    reply = client.post(f"/api/v1/tenants/{tenant}/campaigns", json=draft, headers=headers)
    assert reply.status_code == 202, reply.text
    campaign_id = reply.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = client.get(f"/api/v1/tenants/{tenant}/campaigns/{campaign_id}", headers=headers)
        shown = view.json()
        if shown["externalId"] or shown["status"] == "Failed":
            break
        time.sleep(0.1)
    assert shown["status"] == "Sending", shown
    return campaign_id, shown["externalId"]
