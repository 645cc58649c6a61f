"""Campaigns end to end: the real ``crm-host serve`` sends to a few thousand contacts in the
background, resumes after being killed mid-send, and ``crm-host campaign send`` runs a job
with its progress bar, fails with exit 1, and stops cleanly (resumably) on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from host.platform import Host
from tests.cli_runner import CRM_HOST, Cli
from tests.e2e.server import RunningHost, running_host
from tests.host.conftest import SECRET_KEY, email_manifest, make_settings

SCRIPT = """\
import time


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    time.sleep(settings.get("delay", 0))
    storage.set("prepare", (storage.get("prepare") or []) + [contacts[0], len(contacts)])


def CRM_Marketing_CreateCampaign(request):
    if settings.get("fail_create"):
        raise RuntimeError("the service refused the campaign")
    storage.set("created", (storage.get("created") or 0) + 1)
    return {"externalId": "svc-" + request["campaignId"][:6], "status": "Sent"}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""

SETTINGS = {
    "type": "object",
    "properties": {"delay": {"type": "number"}, "fail_create": {"type": "boolean"}},
}
MANIFEST = email_manifest(id="bulk", settings=SETTINGS)


def insert_contacts(db: Path, count: int) -> None:
    created = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(db, timeout=30) as connection:
        connection.executemany(
            "INSERT INTO contacts (tenant_id, id, name, email, email_key, phone, status, "
            "created_at, updated_at) VALUES ('acme', ?, ?, ?, ?, NULL, 'Subscribed', ?, ?)",
            (
                (
                    f"c{i:06d}",
                    f"C {i}",
                    f"u{i}@example.test",
                    f"u{i}@example.test",
                    created,
                    created,
                )
                for i in range(count)
            ),
        )


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute(sql, args).fetchall()


def prepared_batches(db: Path) -> list[tuple[str, int]]:
    rows = query(db, "SELECT data FROM module_storage WHERE module_id = 'bulk'")
    flat = json.loads(rows[0][0]).get("prepare", []) if rows else []
    return list(zip(flat[::2], flat[1::2], strict=True))


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def setup_over_http(server: RunningHost, contacts: int, **settings: Any) -> None:
    with server.client() as admin:
        assert admin.post(
            "/api/v1/modules", json={"manifest": MANIFEST, "script": SCRIPT}
        ).is_success
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).is_success
        enabled = admin.put("/api/v1/tenants/acme/modules/bulk", json={"settings": settings})
        assert enabled.status_code == 200, enabled.text
    insert_contacts(server.workdir / "host.db", contacts)


CAMPAIGN = {
    "module": "bulk",
    "name": "Launch",
    "type": "Email",
    "subject": "We launched",
    "senderName": "Acme",
    "senderEmail": "news@acme.test",
    "html": "<p>Hello</p>",
    "contactIds": "all",
}


def test_server_sends_to_thousands_in_the_background(tmp_path: Path) -> None:
    with running_host(tmp_path) as server:
        setup_over_http(server, 3000)
        with server.client() as admin:
            created = admin.post("/api/v1/tenants/acme/campaigns", json=CAMPAIGN)
            assert created.status_code == 202, created.text
            url = f"/api/v1/tenants/acme/campaigns/{created.json()['id']}"
            seen_percent: list[float] = []

            def sent() -> bool:
                shown = admin.get(url).json()
                seen_percent.append(shown["progress"]["percent"])
                return bool(shown["status"] == "Sent")

            wait_until(sent)
            shown = admin.get(url).json()
            assert shown["progress"]["prepared"] == 3000, shown
            assert shown["progress"]["batches"] == 3, shown
            assert shown["externalId"].startswith("svc-")
            assert seen_percent == sorted(seen_percent), seen_percent
            page = admin.get(url + "/deliveries", params={"limit": 1000}).json()
            assert len(page["items"]) == 1000 and page["next"] == "c000999", page["next"]
    assert [n for _, n in prepared_batches(tmp_path / "host.db")] == [1000, 1000, 1000]


def test_killed_server_is_resumed_by_the_next_one(tmp_path: Path) -> None:
    db = tmp_path / "host.db"
    with running_host(tmp_path) as server:
        setup_over_http(server, 3000, delay=0.3)
        with server.client() as admin:
            created = admin.post(
                "/api/v1/tenants/acme/campaigns", json=CAMPAIGN | {"batchSize": 300}
            )
            campaign_id = created.json()["id"]
        wait_until(lambda: query(db, "SELECT batches_done FROM campaigns")[0][0] >= 2)
        server.process.kill()  # no shutdown: the lease stays, as after a crash
        server.process.wait()
    done_before = query(db, "SELECT batches_done, lease_owner FROM campaigns")[0]
    assert done_before[1] is not None

    with running_host(tmp_path) as restarted, restarted.client() as admin:
        url = f"/api/v1/tenants/acme/campaigns/{campaign_id}"
        wait_until(lambda: admin.get(url).json()["status"] == "Sent")
        assert admin.get(url).json()["progress"]["batches"] == 10
    assert query(db, "SELECT COUNT(*) FROM deliveries WHERE status = 'Sent'") == [(3000,)]
    batches = prepared_batches(db)
    firsts = [first for first, _ in batches]
    # Batches committed before the kill are never prepared again; only the one in flight
    # when the process died may have reached the module twice.
    assert len(batches) - len(set(firsts)) <= 1
    assert firsts[: done_before[0]] == [f"u{i * 300}@example.test" for i in range(done_before[0])]
    assert sorted(set(firsts)) == sorted(f"u{i * 300}@example.test" for i in range(10))


# --- the CLI ---------------------------------------------------------------------------------


def cli_setup(tmp_path: Path, contacts: int, **settings: Any) -> Cli:
    host = Host(make_settings(tmp_path / "host.db"), load_entry_points=False).open()
    try:
        from host.modules.packages import from_json_body

        body = {"manifest": MANIFEST, "script": SCRIPT}
        host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
        host.tenants.create("acme", "Acme")
        host.tenants.configure("acme", "bulk", settings=settings)
    finally:
        host.close()
    insert_contacts(tmp_path / "host.db", contacts)
    (tmp_path / "mail.html").write_text("<p>Hello</p>")
    return Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEY=SECRET_KEY)


SEND = [
    "campaign",
    "send",
    "acme",
    "bulk",
    "--name",
    "Launch",
    "--type",
    "Email",
    "--subject",
    "We launched",
    "--sender-name",
    "Acme",
    "--sender-email",
    "news@acme.test",
    "--html",
    "mail.html",
    "--all",
]


def test_cli_send_runs_the_job_with_progress(tmp_path: Path) -> None:
    cli = cli_setup(tmp_path, 1200)
    result = cli.run(*SEND, "--batch-size", "500")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert ": Sent, externalId svc-" in summary and "1200 recipients" in summary
    assert "3 batches" in summary and "contacts/s" in summary
    campaign_id = summary.split()[1].rstrip(":")
    status = cli.run("campaign", "status", "acme", campaign_id)
    assert status.returncode == 0 and "Sent" in status.stdout and "svc-" in status.stdout


def test_cli_send_exits_1_when_the_campaign_fails(tmp_path: Path) -> None:
    cli = cli_setup(tmp_path, 10, fail_create=True)
    result = cli.run(*SEND)
    assert result.returncode == 1
    assert "Failed, externalId -" in result.stdout
    assert (
        "error: campaign failed: script_error: RuntimeError: the service refused the campaign"
        in (result.stderr)
    )


def test_cli_validation_errors_are_one_line_each(tmp_path: Path) -> None:
    cli = cli_setup(tmp_path, 1)
    result = cli.run(*[a if a != "news@acme.test" else "nope" for a in SEND])
    assert result.returncode != 0
    assert "error: campaign is invalid" in result.stderr
    assert "senderEmail: is not an email address" in result.stderr


def test_ctrl_c_stops_cleanly_and_the_job_resumes(tmp_path: Path) -> None:
    cli = cli_setup(tmp_path, 2000, delay=0.15)
    db = tmp_path / "host.db"
    process = subprocess.Popen(
        [str(CRM_HOST), *SEND, "--batch-size", "100"],
        cwd=tmp_path,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        wait_until(lambda: bool(query(db, "SELECT 1 FROM campaigns WHERE batches_done >= 2")))
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted: campaign" in stderr and "crm-host campaign run acme" in stderr
    campaign_id, stage, status, owner, batches, error = query(
        db, "SELECT id, stage, status, lease_owner, batches_done, error FROM campaigns"
    )[0]
    assert (stage, status, owner) == ("preparing", "Draft", None), (stderr, error)
    assert 2 <= batches < 20

    resumed = cli.run("campaign", "run", "acme", campaign_id)
    assert resumed.returncode == 0, resumed.stderr
    assert ": Sent, externalId svc-" in resumed.stdout
    firsts = [first for first, _ in prepared_batches(db)]
    assert firsts == [
        f"u{i * 100}@example.test" for i in range(20)
    ]  # nothing repeated, nothing lost
    assert query(db, "SELECT COUNT(*) FROM deliveries") == [(2000,)]
