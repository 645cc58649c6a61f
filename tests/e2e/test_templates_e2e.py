"""Templates end to end: the real ``crm-host serve``, a module that fetches a small local
fake email service (paginated templates, HTML, publishing), over HTTP with a tenant's key.
The secret API key reaches the service and nowhere else."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.server import running_host

API_KEY = "SG.e2e-templates-secret-5521"

SCRIPT = '''\
"""Email module of the fake service: templates are paged with offset/limit."""


def service_get(path):
    response = fetch(
        settings["base_url"] + path,
        headers={"Authorization": "Bearer " + settings["api_key"]},
    )
    if not response.ok:
        raise ValueError("service answered " + str(response.status))
    return response.json()


def CRM_Marketing_ImportTemplates(offset, limit):
    data = service_get("/v3/templates?offset=" + str(offset) + "&limit=" + str(limit))
    return [{"externalId": t["id"], "name": t["name"]} for t in data["result"]]


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return service_get("/v3/templates/" + templateExternalId)["html"]


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    response = fetch(
        settings["base_url"] + "/v3/templates",
        method="POST",
        headers={"Authorization": "Bearer " + settings["api_key"]},
        json={"name": name, "html": html, "id": templateExternalId},
    )
    return response.json()["id"]
'''

MANIFEST: dict[str, Any] = {
    "id": "fakesend",
    "name": "FakeSend",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
    "description": "Module of the e2e fake email service",
    "egress": ["127.0.0.1"],
    "settings": {
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True},
            "base_url": {"type": "string"},
        },
        "required": ["api_key", "base_url"],
    },
}


@dataclass
class FakeService:
    """Five templates; records (method, path, authorization) of every request."""

    url: str = ""
    templates: list[dict[str, str]] = field(
        default_factory=lambda: [{"id": f"sv-{i}", "name": f"Template {i}"} for i in range(5)]
    )
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization", "")
            fake.seen.append((self.command, self.path, auth))
            if auth != f"Bearer {API_KEY}":
                self._answer(401, {"error": "bad key"})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            parts = urlsplit(self.path)
            if parts.path == "/v3/templates":
                query = parse_qs(parts.query)
                offset, limit = int(query["offset"][0]), int(query["limit"][0])
                self._answer(200, {"result": fake.templates[offset : offset + limit]})
            elif parts.path.startswith("/v3/templates/"):
                template_id = parts.path.rsplit("/", 1)[1]
                self._answer(200, {"html": f"<h1>{template_id} from the service</h1>"})
            else:
                self._answer(404, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            if not self._authorised():
                return
            fake.published.append(payload)
            self._answer(201, {"id": payload.get("id") or f"sv-new-{len(fake.published)}"})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_import_preview_publish_over_http(tmp_path: Path, service: FakeService) -> None:
    with running_host(tmp_path, CRM_HOST_EGRESS_ALLOW="127.0.0.1") as host, host.client() as admin:
        uploaded = admin.post("/api/v1/modules", json={"manifest": MANIFEST, "script": SCRIPT})
        assert uploaded.status_code == 201, uploaded.text
        key = admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).json()["apiKey"]
        enabled = admin.put(
            "/api/v1/tenants/acme/modules/fakesend",
            json={"settings": {"api_key": API_KEY, "base_url": service.url}},
        )
        assert enabled.status_code == 200, enabled.text

        with host.client(key) as tenant:
            base = "/api/v1/tenants/acme"
            imported = tenant.post(f"{base}/modules/fakesend/templates/import?pageSize=2")
            assert imported.status_code == 200, imported.text
            assert imported.json() == {
                "imported": 5,
                "pages": 3,
                "truncated": False,
                "created": 5,
                "updated": 0,
            }
            pages = [p for m, p, _ in service.seen if p.startswith("/v3/templates?")]
            assert pages == [f"/v3/templates?offset={o}&limit=2" for o in (0, 2, 4)]

            # a second import updates in place
            service.templates[0]["name"] = "Renamed"
            again = tenant.post(f"{base}/modules/fakesend/templates/import?pageSize=2").json()
            assert (again["created"], again["updated"]) == (0, 5)
            listed = tenant.get(f"{base}/templates").json()
            assert len(listed) == 5
            first = next(t for t in listed if t["externalId"] == "sv-0")
            assert first["name"] == "Renamed"

            html_url = f"{base}/templates/{first['id']}/html"
            for _ in range(2):  # the second preview comes from the cache
                preview = tenant.get(html_url)
                assert preview.json()["html"] == "<h1>sv-0 from the service</h1>"
            assert sum(p == "/v3/templates/sv-0" for _, p, _ in service.seen) == 1

            local = tenant.post(
                f"{base}/templates",
                json={"module": "fakesend", "name": "Launch", "html": "<p>launch</p>"},
            ).json()
            published = tenant.post(f"{base}/templates/{local['id']}/publish")
            assert published.status_code == 200, published.text
            assert published.json()["externalId"] == "sv-new-1"
            assert service.published == [{"name": "Launch", "html": "<p>launch</p>", "id": None}]

            log = tenant.get(f"{base}/invocations", params={"function": "ImportTemplates"})
            items = log.json()["items"]
            assert len(items) == 6 and {i["outcome"] for i in items} == {"ok"}
            assert items[0]["fetches"][0]["status"] == 200
            assert API_KEY not in log.text

        # the key went to the service only
        assert {auth for _, _, auth in service.seen} == {f"Bearer {API_KEY}"}
        assert API_KEY not in host.output()
