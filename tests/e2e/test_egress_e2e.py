"""SPEC §4 through the real ``crm-host serve``: modules uploaded and enabled over the HTTP API
import templates from real local servers, which record every request that reached them.

The platform admin waives the loopback refusal for two services (``CRM_HOST_EGRESS_ALLOW``);
that waiver only counts for a module whose manifest declares the destination, and a redirect
between the two carries neither the Authorization header nor the tenant's secret onward."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import RunningHost, running_host
from tests.sandbox.http_servers import LocalHTTPServer, RequestHandler

API_KEY = "sk-e2e-egress-4410"

SCRIPT = """\
def CRM_Marketing_ImportTemplates(offset, limit):
    response = fetch(
        settings["base_url"] + "/templates",
        headers={"Authorization": "Bearer " + settings["api_key"],
                 "X-Api-Key": settings["api_key"], "Accept": "application/json"},
    )
    if not response.ok:
        raise ValueError("service answered " + str(response.status))
    return response.json()


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return "<p></p>"


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    response = fetch(settings["base_url"] + "/publish", method="POST", body=html)
    return "status-" + str(response.status) + " " + response.headers.get("location", "")
"""


def manifest(module_id: str, egress: list[str]) -> dict[str, Any]:
    return {
        "id": module_id,
        "name": module_id,
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "egress": egress,
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "writeOnly": True},
                "base_url": {"type": "string"},
            },
        },
    }


def templates(req: RequestHandler) -> None:
    body = json.dumps([{"externalId": "t-1", "name": "Welcome"}]).encode()
    req.reply(200, body, {"Content-Type": "application/json"})


@pytest.fixture
def services() -> Iterator[tuple[LocalHTTPServer, LocalHTTPServer, LocalHTTPServer]]:
    """``first`` redirects to ``second`` (both waived by the admin); ``unwaived`` is not."""
    with LocalHTTPServer() as first, LocalHTTPServer() as second, LocalHTTPServer() as unwaived:
        second.route("/templates")(templates)
        second.route("/publish")(lambda req: req.reply(201, b"published"))
        unwaived.route("/templates")(templates)
        first.route("/templates")(
            lambda req: req.reply(302, headers={"Location": second.url("/templates")})
        )
        first.route("/publish")(
            lambda req: req.reply(307, headers={"Location": second.url("/publish")})
        )
        yield first, second, unwaived


@pytest.fixture
def host(
    tmp_path: Path, services: tuple[LocalHTTPServer, LocalHTTPServer, LocalHTTPServer]
) -> Iterator[RunningHost]:
    first, second, _ = services
    allow = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
    with running_host(tmp_path, CRM_HOST_EGRESS_ALLOW=allow) as running:
        yield running


def enable(host: RunningHost, module_id: str, egress: list[str], base_url: str) -> None:
    with host.client() as admin:
        body = {"manifest": manifest(module_id, egress), "script": SCRIPT}
        uploaded = admin.post("/api/v1/modules", json=body)
        assert uploaded.status_code == 201, uploaded.text
        enabled = admin.put(
            f"/api/v1/tenants/acme/modules/{module_id}",
            json={"settings": {"api_key": API_KEY, "base_url": base_url}},
        )
        assert enabled.status_code == 200, enabled.text


def import_templates(host: RunningHost, module_id: str) -> Any:
    with host.client() as admin:
        return admin.post(f"/api/v1/tenants/acme/modules/{module_id}/templates/import")


def test_waiver_only_counts_for_declared_destinations_and_redirects_leak_nothing(
    host: RunningHost, services: tuple[LocalHTTPServer, LocalHTTPServer, LocalHTTPServer]
) -> None:
    first, second, unwaived = services
    with host.client() as admin:
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).status_code == 201

    # `egress: []`: the admin's waiver for 127.0.0.1:PORT is no grant.
    enable(host, "undeclared", [], first.url())
    refused = import_templates(host, "undeclared")
    assert refused.status_code == 502, refused.text
    assert refused.json()["error"] == "egress_denied"
    assert refused.json()["message"] == (
        "fetch to 127.0.0.1 denied: 127.0.0.1 is an IP address not in the module's egress "
        "list; the platform allow-list only waives the address check for destinations the "
        "manifest declares"
    )
    assert first.seen == []

    # Declared but not waived: refused at fetch time, not at upload.
    enable(host, "unwaived", [f"127.0.0.1:{unwaived.port}"], unwaived.url())
    refused = import_templates(host, "unwaived")
    assert refused.status_code == 502, refused.text
    assert refused.json()["error"] == "egress_denied"
    assert refused.json()["message"] == (
        "fetch to 127.0.0.1 denied: loopback address; the platform admin can waive it with the "
        "host's egress allow-list (CRM_HOST_EGRESS_ALLOW; --allow-host for crm-host module run)"
    )
    assert unwaived.seen == []

    # Declared and waived: allowed; the redirect to the second origin strips credentials.
    declared = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    enable(host, "declared", declared, first.url())
    imported = import_templates(host, "declared")
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == 1
    assert first.seen[0].headers["x-api-key"] == API_KEY
    [arrived] = second.seen
    assert arrived.headers["accept"] == "application/json"
    assert "authorization" not in arrived.headers and "x-api-key" not in arrived.headers
    assert API_KEY not in json.dumps(arrived.headers)

    # A cross-origin 307 that would replay the POST body is handed back to the script.
    with host.client() as admin:
        base = "/api/v1/tenants/acme"
        local = admin.post(
            f"{base}/templates", json={"module": "declared", "name": "L", "html": "<p>l</p>"}
        )
        assert local.status_code in (200, 201), local.text
        published = admin.post(f"{base}/templates/{local.json()['id']}/publish")
        assert published.status_code == 200, published.text
        assert published.json()["externalId"] == f"status-307 {second.url('/publish')}"
        assert [s.path for s in second.seen] == ["/templates"]  # nothing was replayed
        assert admin.get("/healthz").status_code == 200  # the host kept serving
    assert API_KEY not in host.output()
