"""The served host's logs never carry a credential: the webhook token in the path, keys and
tokens in query strings, bearer tokens; and ``CRM_HOST_LOG_FORMAT=json`` writes JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.server import RunningHost, running_host

QUICKSTART = Path(__file__).resolve().parents[2] / "module_manifests" / "quickstart"
QUERY_KEY = "query-api-key-5Yq2Lm9"


def _enabled_webhook(server: RunningHost) -> str:
    admin = server.client()
    package = {
        "manifest": json.loads((QUICKSTART / "manifest.json").read_text()),
        "script": (QUICKSTART / "module.py").read_text(),
    }
    assert admin.post("/api/v1/modules", json=package).status_code == 201
    assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).status_code == 201
    enabled = admin.put(
        "/api/v1/tenants/acme/modules/quickstart",
        json={"version": "1.0.0", "enabled": True, "settings": {"api_key": "k-0123456789"}},
    )
    assert enabled.status_code == 200, enabled.text
    url: str = enabled.json()["webhookUrl"]
    return url


def _post_hooks(server: RunningHost, webhook_url: str) -> str:
    token = webhook_url.rsplit("/", 1)[1]
    path = webhook_url.split(server.url, 1)[1]
    with server.client() as client:
        client.post(f"{path}?api_key={QUERY_KEY}&page=2", json=[])
        client.get(f"/api/v1/tenants/acme/contacts/x?access_token={QUERY_KEY}")
        client.post(f"/hooks/acme/quickstart/{token}x", json=[])  # a wrong token is logged too
    return token


def test_access_log_masks_webhook_tokens_and_query_credentials(tmp_path: Path) -> None:
    with running_host(tmp_path) as server:
        token = _post_hooks(server, _enabled_webhook(server))
    log = server.output()
    assert "/hooks/acme/quickstart/*** " in log or "/hooks/acme/quickstart/***?" in log, log
    assert token not in log
    assert QUERY_KEY not in log
    assert "api_key=***&page=2" in log, "other query parameters stay readable"
    assert server.admin_token not in log


def test_json_log_format_writes_one_object_a_line(tmp_path: Path) -> None:
    with running_host(tmp_path, CRM_HOST_LOG_FORMAT="json") as server:
        token = _post_hooks(server, _enabled_webhook(server))
    lines = [line for line in server.output().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert len(access) >= 6, server.output()
    assert {"time", "level", "logger", "message"} <= set(access[0])
    assert any("/hooks/acme/quickstart/***" in e["message"] for e in access)
    assert token not in server.output() and QUERY_KEY not in server.output()
