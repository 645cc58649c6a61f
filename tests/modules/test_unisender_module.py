"""The Unisender example module, function by function, in the real sandbox against the local
Unisender emulator (``emulators.unisender``) on 127.0.0.1, let through by the admin allow-list
exactly as ``CRM_HOST_EGRESS_ALLOW`` does on a server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from emulators.runner import serve
from emulators.unisender import UnisenderState, create_app, sign
from host.contract.types import WebhookResult
from host.errors import ModuleCallFailed
from host.toolkit.local_run import load_module, plain
from sandbox.pool import SandboxPool
from tests.modules.module_runner import ModuleRunner
from tests.vendor_samples import VENDOR_SAMPLES

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "unisender"
SAMPLES = VENDOR_SAMPLES
GO_VECTOR = json.loads((SAMPLES / "unisender_go_signed_vector.json").read_text())
GO_BODY = (SAMPLES / "unisender_go_webhook_signed.raw").read_bytes()


@pytest.fixture(scope="module")
def module() -> Any:
    return load_module(MODULE_DIR, max_script_bytes=256 * 1024)


@pytest.fixture
def service() -> Iterator[tuple[UnisenderState, Any]]:
    state = UnisenderState()
    with serve(create_app(state)) as server:
        yield state, server


class Runner(ModuleRunner):
    def __init__(self, pool: SandboxPool, module: Any, state: UnisenderState, server: Any):
        settings = {
            "api_key": state.api_key,
            "api_base_url": f"{server.url}/ru/api",
            "list_id": 1,
            "sender_name": "Acme",
            "sender_email": "news@acme.test",
        }
        self.contacts: list[dict[str, Any]] = []
        wanted = lambda ids: [c for c in self.contacts if c["id"] in ids]  # noqa: E731
        super().__init__(pool, module, server, settings, wanted)


@pytest.fixture
def run(pool: SandboxPool, module: Any, service: tuple[UnisenderState, Any]) -> Runner:
    return Runner(pool, module, *service)


def address_key(email: str) -> str:
    """The module's attribution key of an address (a hash: no personal data in the map)."""
    return "to:" + hashlib.sha256(email.lower().encode()).hexdigest()


def webhook(body: bytes | str, method: str = "POST") -> dict[str, Any]:
    text = body.decode() if isinstance(body, bytes) else body
    return {
        "method": method,
        "url": "https://crm.example/hooks/t/unisender/token",
        "headers": {"content-type": "application/json", "x-crm-host-body-encoding": "utf-8"},
        "body": text,
        "query": {},
    }


# --- templates ----------------------------------------------------------------------------


def test_import_templates_pages_through_get_templates(run: Runner, service: Any) -> None:
    state, _ = service
    for i in range(120):
        state.add_template(f"T{i}", f"Subject {i}", f"<p>{i}</p>")
    first = run("ImportTemplates", 0, 150)
    assert len(first) == 120  # fewer than the limit: the host stops here
    assert first[0] == {
        "externalId": "4321",
        "name": "T0",
        "subject": "Subject 0",
        "html": "<p>0</p>",
    }
    calls = [dict(p) for m, p in state.calls if m == "getTemplates"]
    assert [(c["offset"], c["limit"], c["type"]) for c in calls] == [
        ("0", "100", "user"),
        ("100", "50", "user"),
    ]
    assert all(c["format"] == "json" and c["api_key"] == state.api_key for c in calls)
    assert [t["name"] for t in run("ImportTemplates", 118, 5)] == ["T118", "T119"]


def test_template_html_create_update_and_preview(run: Runner, service: Any) -> None:
    state, _ = service
    created = run("SetTemplateHTML", "<h1>Hi</h1>", "Welcome", None)
    assert state.templates[int(created)]["body"] == "<h1>Hi</h1>"
    assert run("SetTemplateHTML", "<h1>Hello</h1>", "Welcome 2", created) == created
    assert state.templates[int(created)]["title"] == "Welcome 2"
    assert run("GetTemplateHTML", created) == "<h1>Hello</h1>"


# --- contacts, campaigns, stats -----------------------------------------------------------


def test_export_contacts_imports_rows_into_the_list(run: Runner, service: Any) -> None:
    state, _ = service
    run.contacts = [
        {"id": "c1", "name": "Alex", "email": "alex@example.com", "phone": None},
        {"id": "c2", "name": "Bobby", "email": "Bobby@Example.com", "phone": None},
        {"id": "c3", "name": "No mail", "email": None, "phone": "+100"},
    ]
    assert run("ExportContacts", ["c1", "c2", "c3"]) is None
    params = next(p for m, p in state.calls if m == "importContacts")
    assert params["field_names[0]"] == "email" and params["data[1][1]"] == "Bobby"
    assert "data[2][0]" not in params  # the contact without an address is not sent
    assert {e: c["lists"] for e, c in state.contacts.items()} == {
        "alex@example.com": {1},
        "bobby@example.com": {1},
    }


def prepared_campaign(run: Runner, state: UnisenderState, **request: Any) -> Any:
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        state.contacts[email] = {"email": email, "lists": {1}, "fields": {}}
    run("PrepareCampaign", "cmp1", "Email", ["a@example.com"])
    run("PrepareCampaign", "cmp1", "Email", ["b@example.com", "a@example.com"])
    assert run.storage["recipients:cmp1"] == ["a@example.com", "b@example.com"]
    values = {
        "campaignId": "cmp1",
        "name": "Spring",
        "type": "Email",
        "subject": "Spring news",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hi</p>",
    }
    values.update(request)
    return run("CreateCampaign", values)


def test_create_campaign_sends_to_the_prepared_recipients_only(run: Runner, service: Any) -> None:
    state, _ = service
    created = prepared_campaign(run, state)
    campaign = state.campaigns[int(created["externalId"])]
    assert created["status"] == "Sending"
    assert sorted(campaign["recipients"]) == ["a@example.com", "b@example.com"]
    message = state.messages[campaign["message_id"]]
    assert (message["subject"], message["body"], message["list_id"]) == (
        "Spring news",
        "<p>Hi</p>",
        "1",
    )
    assert "recipients:cmp1" not in run.storage
    assert "last_campaign" not in run.storage  # attribution is the host's map, not "latest"
    assert run.campaign_keys == {
        address_key("a@example.com"): "crm:cmp1",
        address_key("b@example.com"): "crm:cmp1",
        "crm:cmp1": created["externalId"],
    }


def test_create_called_again_after_a_crash_makes_no_second_campaign(
    run: Runner, service: Any
) -> None:
    """The manifest declares CreateCampaign idempotent: a repeated call for a campaignId
    whose message already has a campaign returns it (the message id was stored durably)."""
    state, _ = service
    assert run.module.manifest.declares_idempotent("CRM_Marketing_CreateCampaign")
    first = prepared_campaign(run, state)
    (made,) = state.campaigns
    assert first["externalId"] == str(made)
    # the host died before recording the call: its storage writes are lost except the
    # durable message id (a lost answer of createCampaign leaves the same state behind)
    (message_id,) = state.messages
    run.storage = {
        "recipients:cmp1": ["a@example.com", "b@example.com"],
        "message:cmp1": str(message_id),
    }
    run.campaign_keys.pop("crm:cmp1")
    again = run(
        "CreateCampaign",
        {
            "campaignId": "cmp1",
            "name": "Spring",
            "type": "Email",
            "subject": "Spring news",
            "senderName": "Acme",
            "senderEmail": "news@acme.test",
            "html": "<p>Hi</p>",
        },
    )
    assert again == {"externalId": str(made), "status": "Sending"}
    assert list(state.campaigns) == [made] and list(state.messages) == [message_id]
    assert run.campaign_keys["crm:cmp1"] == str(made)
    assert "recipients:cmp1" not in run.storage and "message:cmp1" not in run.storage


def test_create_with_a_stored_message_and_no_campaign_creates_it_once(
    run: Runner, service: Any
) -> None:
    """Killed during createCampaign before Unisender acted: the stored message is used."""
    state, _ = service
    for email in ("a@example.com", "b@example.com"):
        state.contacts[email] = {"email": email, "lists": {1}, "fields": {}}
    run("PrepareCampaign", "cmp1", "Email", ["a@example.com", "b@example.com"])
    request = {
        "campaignId": "cmp1",
        "name": "Spring",
        "type": "Email",
        "subject": "Spring news",
        "senderName": "Acme",
        "senderEmail": "news@acme.test",
        "html": "<p>Hi</p>",
    }
    state.fail_next("createCampaign", "invalid_arg", "connection reset")  # a lost request
    with pytest.raises(ModuleCallFailed):
        run("CreateCampaign", request)
    (message_id,) = state.messages
    assert run.storage["message:cmp1"] == str(message_id)  # durable: survived the failure
    created = run("CreateCampaign", request)
    (made,) = state.campaigns
    assert created["externalId"] == str(made) and list(state.messages) == [message_id]


def test_scheduled_campaign_passes_start_time_in_utc(run: Runner, service: Any) -> None:
    state, _ = service
    created = prepared_campaign(run, state, scheduledAt="2030-01-02T05:04:00+02:00")
    assert created["status"] == "Scheduled"
    params = next(p for m, p in state.calls if m == "createCampaign")
    assert (params["start_time"], params["time_zone"]) == ("2030-01-02 03:04", "UTC")


def test_campaign_stats_map_common_stats(run: Runner, service: Any) -> None:
    state, _ = service
    created = prepared_campaign(run, state)
    campaign = state.campaigns[int(created["externalId"])]
    campaign["recipients"].update(
        {"a@example.com": "ok_link_visited", "b@example.com": "err_user_unknown"}
    )
    assert run("GetCampaignStats", created["externalId"]) == {
        "total": 2,
        "sent": 2,
        "delivered": 1,
        "opened": 1,
        "clicked": 1,
        "bounced": 0,
        "unsubscribed": 0,
        "complained": 0,
        "failed": 0,
    }


def test_api_errors_name_unisender_code(run: Runner, service: Any) -> None:
    run.settings["api_key"] = "wrong-key-0123"
    with pytest.raises(ModuleCallFailed) as failure:
        run("ImportTemplates", 0, 10)
    assert failure.value.kind == "script_error"
    assert "invalid_api_key" in failure.value.message
    assert "wrong-key-0123" not in failure.value.message


# --- the webhook --------------------------------------------------------------------------


def parse(run: Runner, body: bytes | str, method: str = "POST") -> WebhookResult:
    value = run.result("ParseWebhookRequest", webhook(body, method)).value
    assert isinstance(value, WebhookResult)
    return value


def test_go_vector_valid_is_accepted_and_mapped(run: Runner) -> None:
    run.settings["api_key"] = GO_VECTOR["api_key"]
    run.campaign_keys.update({address_key("unisendergo@anymail.dev"): "crm:c1", "crm:c1": "987654"})
    result = parse(run, GO_BODY)
    assert result.response is not None and result.response.status == 200
    assert plain(result)["actions"] == [
        {
            "type": "UpdateDeliveryStatus",
            "externalId": "987654",
            "email": "unisendergo@anymail.dev",
            "status": "Clicked",
        }
    ]


@pytest.mark.parametrize(
    "case",
    [
        "wrong_api_key",
        "reserialized",
        "auth_missing",
        "auth_changed",
        "body_changed",
    ],
)
def test_invalid_auth_is_refused_with_401_and_no_actions(run: Runner, case: str) -> None:
    run.settings["api_key"] = GO_VECTOR["api_key"]
    body = GO_BODY.decode()
    if case == "wrong_api_key":
        run.settings["api_key"] = "TEST_API_KEY"
    elif case == "reserialized":
        body = json.dumps(json.loads(body))
    elif case == "auth_missing":
        body = body.replace('"auth":"b3cb4d6aef9d07095805c39e792e0542",', "")
    elif case == "auth_changed":
        body = body.replace("b3cb4d6aef9d", "b3cb4d6aef9e")
    elif case == "body_changed":
        body = body.replace("clicked", "opened")
    result = parse(run, body)
    assert result.response is not None and result.response.status == 401
    assert result.actions == []


def classic(events: list[dict[str, Any]], key: str) -> str:
    payload = {"auth": key, "events_by_user": [{"login": "acme", "events": events}]}
    return sign(json.dumps(payload, separators=(",", ":")), key)


def status_event(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "email_status",
        "event_time": "2024-01-01 10:00:00",
        "event_data": {"email": "x@example.com", "status": status, "email_id": 1, **extra},
    }


def test_classic_events_become_actions(run: Runner) -> None:
    key = run.settings["api_key"]
    body = classic(
        [
            status_event("ok_delivered", campaign_id=55),
            status_event("ok_read", campaign_id=55),
            status_event("err_mailbox_full", campaign_id=55),
            status_event("ok_unsubscribed", campaign_id=55),
            status_event("ok_fbl"),  # no campaign_id and no campaign created yet
            status_event("not_sent", campaign_id=55),
            {
                "event_name": "campaign_status",
                "event_data": {"campaign_id": 55, "status": "completed"},
            },
            {"event_name": "spam_block", "event_data": {"block_type": "one_smtp"}},
            "not an event",
        ],
        key,
    )
    assert (
        hashlib.md5(body.replace(json.loads(body)["auth"], key).encode()).hexdigest()
        == json.loads(body)["auth"]
    )
    actions = plain(parse(run, body))["actions"]

    def delivery(s):
        return {
            "type": "UpdateDeliveryStatus",
            "email": "x@example.com",
            "externalId": "55",
            "status": s,
        }

    everything = {"type": "Unsubscribe", "email": "x@example.com", "externalId": {"all": True}}
    assert actions == [
        delivery("Delivered"),
        delivery("Opened"),
        delivery("SoftBounced"),
        delivery("Unsubscribed"),
        everything,
        everything,
        {"type": "UpdateCampaign", "externalId": "55", "status": "Sent"},
    ]


def test_url_check_and_broken_bodies(run: Runner) -> None:
    check = parse(run, "", method="GET")
    assert (check.response.status, check.actions) == (200, [])  # type: ignore[union-attr]
    broken = parse(run, "{not json")
    assert (broken.response.status, broken.actions) == (400, [])  # type: ignore[union-attr]


def test_emulator_form_matches_the_published_import_sample(run: Runner, service: Any) -> None:
    """The module's importContacts body has the published sample's shape (field order aside)."""
    state, _ = service
    run.contacts = [{"id": "1", "name": "Alex", "email": "alex@example.com", "phone": None}]
    run("ExportContacts", ["1"])
    sample = dict(
        parse_qsl(
            (SAMPLES / "unisender_api_importContacts_request.RECONSTRUCTED.form")
            .read_text()
            .strip()
        )
    )
    sent = next(p for m, p in state.calls if m == "importContacts")
    assert {k for k in sent if k.startswith("field_names")} <= set(sample)
    assert sent["format"] == sample["format"] == "json"
