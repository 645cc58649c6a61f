"""The README walkthrough against the real server: upload, create a tenant, enable with
settings, get the webhook URL — and the secret never comes back."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import time
import zipfile
from pathlib import Path

import httpx

from tests.e2e.server import CRM_HOST, free_port, running_host

QUICKSTART = Path(__file__).resolve().parents[2] / "module_manifests" / "quickstart"
SECRET = "SG.e2e-secret-value-7731"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ("manifest.json", "module.py"):
            zf.write(QUICKSTART / name, name)
    return buffer.getvalue()


def test_walkthrough_over_http(tmp_path: Path) -> None:
    with running_host(tmp_path) as host, host.client() as admin:
        upload = admin.post("/api/v1/modules", files={"package": ("m.zip", _zip())})
        assert upload.status_code == 201, upload.text
        assert upload.json()["functions"] == ["CRM_Marketing_ParseWebhookRequest"]

        same = admin.post(
            "/api/v1/modules",
            json={
                "manifest": json.loads((QUICKSTART / "manifest.json").read_text()),
                "script": (QUICKSTART / "module.py").read_text(),
            },
        )
        assert same.status_code == 200  # identical content as JSON: accepted as a no-op

        tenant = admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme Corp"})
        assert tenant.status_code == 201
        api_key = tenant.json()["apiKey"]

        enabled = admin.put(
            "/api/v1/tenants/acme/modules/quickstart",
            json={
                "version": "1.0.0",
                "settings": {"api_key": SECRET, "sender_email": "n@acme.test"},
            },
        )
        assert enabled.status_code == 200, enabled.text
        body = enabled.json()
        assert body["enabled"] is True
        assert body["webhookUrl"].startswith(f"{host.url}/hooks/acme/quickstart/")
        assert body["settings"]["api_key"] == "***set***"

        with host.client(api_key) as tenant_client:
            own = tenant_client.get("/api/v1/tenants/acme/modules/quickstart")
            assert own.status_code == 200
            assert own.json()["webhookUrl"] == body["webhookUrl"]
            assert tenant_client.get("/api/v1/modules").status_code == 403

        docs = admin.get("/openapi.json").json()
        assert "/api/v1/tenants/{tenant_id}/modules/{module_id}" in docs["paths"]

        everything = [upload.text, same.text, tenant.text, enabled.text, own.text]
        everything.append(admin.get("/api/v1/tenants/acme/modules").text)
    assert all(SECRET not in text for text in everything)
    assert SECRET not in host.output()
    raw = (tmp_path / "host.db").read_bytes()
    wal = tmp_path / "host.db-wal"
    assert SECRET.encode() not in raw + (wal.read_bytes() if wal.exists() else b"")


def test_generated_admin_token_is_printed_once(tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "CRM_HOST_DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}"}
    process = subprocess.Popen(
        [str(CRM_HOST), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        token_line = process.stderr.readline().strip()
        assert "first start: admin token 'default' created (shown once" in first
        assert len(token_line) >= 40
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token_line}"}
        assert httpx.get(url + "/api/v1/modules", headers=auth).status_code == 200
        assert (
            httpx.get(url + "/api/v1/modules", headers={"Authorization": "Bearer x"}).status_code
            == 401
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_cli_block() -> list[list[str]]:
    """The commands of the README's "same steps from the CLI" block, as argument lists."""
    text = README.read_text()
    start = text.index("```sh", text.index("The same steps from the CLI"))
    block = text[start + len("```sh") : text.index("```", start + 5)]
    return [shlex.split(line, comments=True) for line in block.strip().splitlines()]


def test_readme_cli_block_works_after_the_curl_block(tmp_path: Path) -> None:
    """What a reader does: the curl block against the server, then the CLI block."""
    repository = README.parent
    with running_host(tmp_path) as host, host.client() as admin:
        body = {
            "manifest": json.loads((QUICKSTART / "manifest.json").read_text()),
            "script": (QUICKSTART / "module.py").read_text(),
        }
        assert admin.post("/api/v1/modules", json=body).status_code == 201
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme Corp"}).is_success
        settings = {"api_key": "SG.xxxx", "sender_email": "news@acme.test"}
        enable = {"version": "1.0.0", "settings": settings}
        assert admin.put("/api/v1/tenants/acme/modules/quickstart", json=enable).is_success

        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
        env["CRM_HOST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'host.db'}"
        commands = readme_cli_block()
        assert len(commands) >= 5
        for command in commands:
            assert command[0] == ".venv/bin/crm-host"
            result = subprocess.run(
                [str(CRM_HOST), *command[1:]],
                cwd=repository,
                env=env,
                input=SECRET + "\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, (command, result.stderr)
            assert SECRET not in result.stdout + result.stderr
        assert admin.get("/api/v1/tenants/globex/modules/quickstart").json()["enabled"] is False
        assert admin.get("/api/v1/tenants/acme/modules/quickstart").json()["enabled"] is True
