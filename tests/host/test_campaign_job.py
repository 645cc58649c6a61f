"""The campaign send job through real sandboxed modules: batching, recipients per type,
skips, failures, crash/resume, cancel and the lease. Modules record what they were called
with in ``storage`` so the assertions see the module's side of every call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from host.db.models import Campaign, Contact, ContactUnsubscription, Delivery, Invocation
from host.marketing.campaign_job import CampaignProgress, LeaseLost
from host.marketing.campaigns import CampaignDraft
from host.marketing.job_runner import CampaignJobRunner, new_owner
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import email_manifest, make_host

RECORDING_SCRIPT = """\
def record(key, value):
    calls = storage.get(key) or []
    calls.append(value)
    storage.set(key, calls)


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    record("export", len(contactIds))


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    fail_batch = settings.get("fail_batch")
    if fail_batch is not None and len(storage.get("prepare") or []) + 1 == fail_batch:
        raise ValueError("service rejected batch " + str(fail_batch))
    record("prepare", len(contacts))
    seen = storage.get("seen") or []
    storage.set("seen", seen + list(contacts))
    storage.set("type", type)


def CRM_Marketing_CreateCampaign(request):
    if settings.get("fail_create"):
        raise RuntimeError("quota exceeded")
    record("create", request["campaignId"])
    return {"externalId": "ext-" + request["campaignId"][:8]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    raise NotImplementedError


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    raise NotImplementedError


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "x"
"""

SETTINGS_SCHEMA = {
    "type": "object",
    "properties": {"fail_batch": {"type": "integer"}, "fail_create": {"type": "boolean"}},
}


def open_host(db_path: Path, pool: SandboxPool) -> Host:
    return make_host(db_path, sandbox=pool)


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = open_host(db_path, pool)
    yield instance
    instance.close()


def setup_tenant(host: Host, settings: dict[str, Any] | None = None) -> None:
    manifest = email_manifest(id="rec", settings=SETTINGS_SCHEMA)
    body = {"manifest": manifest, "script": RECORDING_SCRIPT}
    host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    host.tenants.create("acme", "Acme")
    host.tenants.configure("acme", "rec", settings=settings or {})


def add_contacts(host: Host, count: int, **overrides: Any) -> list[str]:
    now = datetime.now(UTC) - timedelta(seconds=1)
    rows = []
    for i in range(count):
        row = {
            "tenant_id": "acme",
            "id": f"c{i:06d}",
            "name": f"Contact {i}",
            "email": f"user{i}@example.test",
            "email_key": f"user{i}@example.test",
            "phone": f"+1555{i:07d}",
            "status": "Subscribed",
            "created_at": now,
            "updated_at": now,
        }
        row.update(overrides)
        rows.append(row)
    with host.db.transaction() as session:
        session.execute(insert(Contact), rows)
    return [r["id"] for r in rows]


def draft(**overrides: Any) -> CampaignDraft:
    values: dict[str, Any] = {
        "module": "rec",
        "name": "Spring sale",
        "type": "Email",
        "subject": "Hello",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hi</p>",
        "contactIds": "all",
    }
    values.update(overrides)
    return CampaignDraft(**values)


def storage(host: Host) -> dict[str, Any]:
    return dict(host.module_storage.load("acme", "rec"))


def run_in_process(host: Host, campaign_id: str, **kwargs: Any) -> str:
    owner = new_owner()
    assert host.campaign_runner.claim(campaign_id, owner=owner) == campaign_id
    return host.campaign_runner.run(campaign_id, owner=owner, **kwargs)


def campaign(host: Host, campaign_id: str) -> Campaign:
    with host.db.transaction() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        return row


def deliveries(host: Host, campaign_id: str) -> list[Delivery]:
    with host.db.transaction() as session:
        query = select(Delivery).where(Delivery.campaign_id == campaign_id)
        return list(session.scalars(query.order_by(Delivery.contact_id)))


def test_batches_of_1000_every_recipient_once_create_after_the_last(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 2500)
    created = host.campaigns.create("acme", draft())
    assert run_in_process(host, created.id) == "done"

    recorded = storage(host)
    assert recorded["prepare"] == [1000, 1000, 500]
    assert recorded["export"] == [1000, 1000, 500]
    assert sorted(recorded["seen"]) == sorted(f"user{i}@example.test" for i in range(2500))
    assert recorded["type"] == "Email"
    assert recorded["create"] == [created.id]
    with host.db.transaction() as session:
        functions = session.scalars(select(Invocation.function).order_by(Invocation.id)).all()
    prepares = [i for i, f in enumerate(functions) if f == "CRM_Marketing_PrepareCampaign"]
    assert functions.count("CRM_Marketing_CreateCampaign") == 1
    assert functions.index("CRM_Marketing_CreateCampaign") > max(prepares)

    row = campaign(host, created.id)
    assert (row.status, row.stage, row.external_id) == ("Sending", "done", row.external_id)
    assert row.external_id.startswith("ext-")
    assert (row.total, row.exported, row.prepared, row.batches_done) == (2500, 2500, 2500, 3)
    sent = deliveries(host, created.id)
    assert len(sent) == 2500 and {d.status for d in sent} == {"Sent"}
    assert [h["status"] for h in sent[0].history] == ["Pending", "Sent"]
    assert row.lease_owner is None


def test_sms_gets_phone_numbers_and_skips_contacts_without_one(host: Host) -> None:
    setup_tenant(host)
    ids = add_contacts(host, 5)
    with host.db.transaction() as session:
        session.execute(update(Contact).where(Contact.id == ids[0]).values(phone=None))
    created = host.campaigns.create(
        "acme", draft(type="Sms", subject=None, senderEmail=None, html="Sale today")
    )
    assert run_in_process(host, created.id) == "done"
    recorded = storage(host)
    assert recorded["type"] == "Sms"
    assert sorted(recorded["seen"]) == [f"+1555{i:07d}" for i in range(1, 5)]
    row = campaign(host, created.id)
    assert (row.total, row.skipped, row.prepared) == (5, 1, 4)
    assert [d.phone for d in deliveries(host, created.id)] == recorded["seen"]


def test_unsubscribed_bounced_complained_and_category_opt_outs_are_skipped(host: Host) -> None:
    setup_tenant(host)
    ids = add_contacts(host, 8)
    with host.db.transaction() as session:
        for contact_id, status in zip(
            ids[:3], ("Unsubscribed", "Bounced", "Complained"), strict=True
        ):
            session.execute(update(Contact).where(Contact.id == contact_id).values(status=status))
        session.add(ContactUnsubscription(tenant_id="acme", contact_id=ids[3], category="news"))
    created = host.campaigns.create("acme", draft(categoryExternalId="news"))
    assert run_in_process(host, created.id) == "done"
    assert sorted(storage(host)["seen"]) == [f"user{i}@example.test" for i in range(4, 8)]
    row = campaign(host, created.id)
    assert (row.total, row.skipped, row.prepared) == (8, 4, 4)


def test_explicit_ids_in_batches(host: Host) -> None:
    setup_tenant(host)
    ids = add_contacts(host, 30)
    chosen = ids[5:25]
    created = host.campaigns.create("acme", draft(contactIds=chosen, batchSize=7))
    assert run_in_process(host, created.id) == "done"
    assert storage(host)["prepare"] == [7, 7, 6]
    assert [d.contact_id for d in deliveries(host, created.id)] == chosen


def test_module_failure_in_batch_2_fails_the_campaign_without_external_id(
    db_path: Path, pool: SandboxPool
) -> None:
    host = open_host(db_path, pool)
    try:
        setup_tenant(host, {"fail_batch": 2})
        add_contacts(host, 2500)
        created = host.campaigns.create("acme", draft())
        events: list[dict[str, Any]] = []

        class Listener:
            from host.hookspecs import hookimpl

            @hookimpl
            def crm_host_campaign_status_changed(
                self, campaign_id: str, old_status: str, new_status: str, error: str | None
            ) -> None:
                events.append({"old_status": old_status, "new_status": new_status})

        host.hooks.register(Listener())
        assert run_in_process(host, created.id) == "failed"
        row = campaign(host, created.id)
        assert row.status == "Failed" and row.external_id is None
        assert row.error.startswith("script_error: ")
        assert "service rejected batch 2" in row.error
        assert row.batches_done == 1 and "create" not in storage(host)
        assert events[-1]["new_status"] == "Failed" and events[-1]["old_status"] == "Draft"
    finally:
        host.close()


def test_create_campaign_failure_fails_the_campaign(db_path: Path, pool: SandboxPool) -> None:
    host = open_host(db_path, pool)
    try:
        setup_tenant(host, {"fail_create": True})
        add_contacts(host, 3)
        created = host.campaigns.create("acme", draft())
        assert run_in_process(host, created.id) == "failed"
        row = campaign(host, created.id)
        assert row.status == "Failed" and row.external_id is None
        assert "quota exceeded" in row.error
        assert {d.status for d in deliveries(host, created.id)} == {"Pending"}
    finally:
        host.close()


class Crash(BaseException):
    """Simulates the process dying: nothing after it runs, the lease stays held."""


def test_restart_after_a_crash_resumes_without_repeating_a_batch(
    db_path: Path, pool: SandboxPool
) -> None:
    first = open_host(db_path, pool)
    setup_tenant(first)
    add_contacts(first, 2500)
    created = first.campaigns.create("acme", draft())

    def crash_after_first_prepared_batch(progress: CampaignProgress) -> None:
        if progress.batches == 1:
            raise Crash

    with pytest.raises(Crash):
        run_in_process(first, created.id, on_progress=crash_after_first_prepared_batch)
    first.close()
    row = campaign(open_host(db_path, pool), created.id)
    assert (row.stage, row.batches_done, row.lease_owner is not None) == ("preparing", 1, True)

    second = open_host(db_path, pool)
    try:
        # The dead process's lease has not expired: nobody may take it yet.
        assert second.campaign_runner.claim(created.id) is None
        with second.db.transaction() as session:
            session.execute(
                update(Campaign).values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        second.campaign_runner.start()
        wait_for(lambda: campaign(second, created.id).stage == "done")
        assert storage(second)["prepare"] == [1000, 1000, 500]
        assert len(deliveries(second, created.id)) == 2500
        assert len(storage(second)["create"]) == 1
    finally:
        second.close()


def interrupt_while_creating(host: Host, campaign_id: str) -> None:
    """Run the job until it has committed the creating stage, then die (no release)."""

    def crash_when_creating(progress: CampaignProgress) -> None:
        if progress.stage == "creating":
            raise Crash

    with pytest.raises(Crash):
        run_in_process(host, campaign_id, on_progress=crash_when_creating)
    with host.db.transaction() as session:
        session.execute(update(Campaign).values(lease_until=datetime.now(UTC)))


def test_interrupted_create_of_an_undeclared_module_needs_attention(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 3)
    created = host.campaigns.create("acme", draft())
    interrupt_while_creating(host, created.id)

    assert run_in_process(host, created.id) == "creating"
    row = campaign(host, created.id)
    assert (row.stage, row.status, row.error, row.external_id) == ("creating", "Draft", None, None)
    assert row.attention_reason and "CRM_Marketing_CreateCampaign" in row.attention_reason
    assert row.attention_at is not None and row.lease_owner is None
    assert "create" not in storage(host)
    assert host.campaign_runner.claim(created.id) is None  # no job takes a flagged campaign
    shown = host.campaigns.get("acme", created.id, with_stats=False)
    assert shown.attention is not None and shown.attention.reason == row.attention_reason


def test_interrupted_create_of_a_declared_module_is_called_again(host: Host) -> None:
    manifest = email_manifest(
        id="rec", settings=SETTINGS_SCHEMA, idempotent={"CRM_Marketing_CreateCampaign": True}
    )
    body = {"manifest": manifest, "script": RECORDING_SCRIPT}
    host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))
    host.tenants.create("acme", "Acme")
    host.tenants.configure("acme", "rec", settings={})
    add_contacts(host, 3)
    created = host.campaigns.create("acme", draft())
    interrupt_while_creating(host, created.id)

    assert run_in_process(host, created.id) == "done"
    row = campaign(host, created.id)
    assert row.attention_reason is None and row.external_id == "ext-" + created.id[:8]
    assert storage(host)["create"] == [created.id]
    assert {d.status for d in deliveries(host, created.id)} == {"Sent"}


def test_cancel_stops_before_the_next_batch(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 30)
    created = host.campaigns.create("acme", draft(batchSize=10))

    def cancel_after_first_batch(progress: CampaignProgress) -> None:
        if progress.batches == 1 and progress.stage == "preparing":
            host.campaigns.cancel("acme", created.id)

    assert run_in_process(host, created.id, on_progress=cancel_after_first_batch) == ("cancelled")
    row = campaign(host, created.id)
    assert (row.status, row.batches_done, row.external_id) == ("Cancelled", 1, None)
    assert storage(host)["prepare"] == [10]


def test_stop_leaves_the_job_resumable_and_releases_the_lease(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 30)
    created = host.campaigns.create("acme", draft(batchSize=10))
    stop = threading.Event()

    def stop_after_first_batch(progress: CampaignProgress) -> None:
        if progress.batches == 1:
            stop.set()

    assert run_in_process(host, created.id, stop=stop, on_progress=stop_after_first_batch) == (
        "preparing"
    )
    assert campaign(host, created.id).lease_owner is None
    assert run_in_process(host, created.id) == "done"
    assert storage(host)["prepare"] == [10, 10, 10]


def test_the_lease_keeps_a_second_runner_out(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 5)
    created = host.campaigns.create("acme", draft())
    first, second = (
        CampaignJobRunner(
            host.db, host.invoker, host.hooks, workers=1, lease_seconds=60, poll_seconds=1
        )
        for _ in range(2)
    )
    assert first.claim() == created.id
    assert second.claim() is None
    assert second.claim(created.id) is None
    # A job whose lease was taken over cannot write anything.
    with host.db.transaction() as session:
        session.execute(update(Campaign).values(lease_owner="elsewhere:1:x"))
    with pytest.raises(LeaseLost):
        first.run(created.id)
    assert campaign(host, created.id).batches_done == 0


@pytest.mark.parametrize("limit", [1, 2])
def test_a_tenants_campaigns_take_at_most_its_share_of_the_job_threads(
    host: Host, limit: int
) -> None:
    """Acme queues two campaigns before beta queues one: with a limit of one campaign a
    tenant, the second thread takes beta's, not acme's second; acme's waits for a free
    share (a limit of two lets it run)."""
    setup_tenant(host)
    add_contacts(host, 3)
    host.tenants.create("beta", "Beta")
    host.tenants.configure("beta", "rec", settings={})
    add_contacts(host, 1, tenant_id="beta")
    acme = [host.campaigns.create("acme", draft()).id for _ in range(2)]
    beta = host.campaigns.create("beta", draft()).id
    runner = CampaignJobRunner(
        host.db,
        host.invoker,
        host.hooks,
        workers=3,
        lease_seconds=60,
        poll_seconds=1,
        tenant_concurrency=limit,
    )
    claimed = [runner.claim(owner=new_owner()) for _ in range(3)]
    if limit == 1:
        assert claimed == [acme[0], beta, None]
    else:
        assert claimed == [acme[0], acme[1], beta]
    # the limit is the server's threads': a campaign asked for by id (the CLI) is not held
    assert runner.claim(acme[1], owner=new_owner()) == (acme[1] if limit == 1 else None)


def test_a_lease_of_a_dead_local_process_is_taken_over_at_once(host: Host) -> None:
    import subprocess
    import sys

    from host.marketing import job_runner

    setup_tenant(host)
    add_contacts(host, 2)
    created = host.campaigns.create("acme", draft())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owner = f"{job_runner.HOSTNAME}:{dead.stdout.strip()}:gone"
    with host.db.transaction() as session:
        session.execute(
            update(Campaign).values(
                lease_owner=owner, lease_until=datetime.now(UTC) + timedelta(hours=1)
            )
        )
    assert host.campaign_runner.claim() == created.id


def test_the_background_runner_picks_up_new_campaigns(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 12)
    host.campaign_runner.start()
    created = host.campaigns.create("acme", draft(batchSize=5))
    wait_for(lambda: campaign(host, created.id).stage == "done")
    assert storage(host)["prepare"] == [5, 5, 2]


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_campaign_keeps_its_module_version_when_the_admin_repins(host: Host) -> None:
    setup_tenant(host)
    add_contacts(host, 2500)
    created = host.campaigns.create("acme", draft())
    newer = email_manifest(id="rec", version="1.1.0", settings=SETTINGS_SCHEMA)
    body = {
        "manifest": newer,
        "script": RECORDING_SCRIPT.replace("def record", "# 1.1.0\ndef record"),
    }
    host.registry.upload(from_json_body(body, max_script_bytes=64 * 1024))

    def repin_after_first_batch(progress: CampaignProgress) -> None:
        if progress.batches == 1 and host.tenants.enablement("acme", "rec").version != "1.1.0":
            host.tenants.configure("acme", "rec", version="1.1.0")

    run_in_process(host, created.id, on_progress=repin_after_first_batch)
    assert campaign(host, created.id).stage == "done"
    assert host.tenants.enablement("acme", "rec").version == "1.1.0"
    with host.db.transaction() as session:
        versions = set(session.scalars(select(Invocation.version)))
    assert versions == {"1.0.0"}
    assert storage(host)["prepare"] == [1000, 1000, 500]
