"""``CRM_HOST_WEBHOOK_BASE_URL`` on the real served host: the public URL is
``http://127.0.0.1:PORT`` (serve's own address) and the webhook base ``http://localhost:PORT``,
one socket, two origins told apart by the ``Host`` header alone."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.e2e.server import free_port, running_host
from tests.host.conftest import email_manifest
from tests.host.test_webhooks import WEBHOOK_SCRIPT


def test_webhooks_and_api_answer_on_their_own_origin(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://localhost:{port}"
    reply = {
        "response": {
            "status": 200,
            "headers": {"Set-Cookie": "s=1", "Content-Type": "text/html"},
            "body": "<b>hi</b>",
        }
    }
    with running_host(tmp_path, port=port, CRM_HOST_WEBHOOK_BASE_URL=base) as host:
        with host.client() as admin:
            body = {"manifest": email_manifest(), "script": WEBHOOK_SCRIPT}
            assert admin.post("/api/v1/modules", json=body).status_code == 201
            assert (
                admin.post("/api/v1/tenants", json={"id": "acme", "name": "A"}).status_code == 201
            )
            enabled = admin.put(
                "/api/v1/tenants/acme/modules/sendmail",
                json={"version": "1.0.0", "settings": {"api_key": "SG.key-123456"}},
            )
            url = enabled.json()["webhookUrl"]
            assert url.startswith(f"{base}/hooks/acme/sendmail/")
            path = urlsplit(url).path
            assert admin.post(path, content=json.dumps(reply)).status_code == 404

        hook_host = {"Host": f"localhost:{port}"}
        with httpx.Client(base_url=host.url, headers=hook_host, timeout=30) as hooks:
            answer = hooks.post(path, content=json.dumps(reply))
            assert (answer.status_code, answer.text) == (200, "<b>hi</b>")
            assert "set-cookie" not in answer.headers
            assert answer.headers["content-security-policy"] == "sandbox"
            assert answer.headers["x-content-type-options"] == "nosniff"
            admin_header = {"Authorization": f"Bearer {host.admin_token}"}
            for api_path in ("/docs", "/openapi.json", "/api/v1/tenants"):
                assert hooks.get(api_path, headers=admin_header).status_code == 404, api_path
            assert hooks.get("/healthz").status_code == 200
