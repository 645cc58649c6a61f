"""The Mailchimp example module is idempotent where the contract asks it to be, in the real
sandbox against the Mailchimp emulator: a PrepareCampaign batch repeated after a crash (the
service applied it, the host lost the call's storage writes) leaves one segment with each
recipient once, and a repeated CreateCampaign — after a host died before recording the
call, or after the create request's answer was lost — returns the campaign the first call
made and creates (and sends) nothing new, as the manifest's ``idempotent`` declares."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulators.mailchimp import DEFAULT_API_KEY, DEFAULT_LIST_ID, MailchimpState, create_app
from emulators.runner import serve
from host.toolkit.local_run import load_module
from sandbox.pool import SandboxPool
from tests.modules.module_runner import ModuleRunner

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "mailchimp"
CONTACTS = [{"id": f"c{i}", "name": f"C {i}", "email": f"u{i}@example.test"} for i in range(6)]
CAMPAIGN_ID = "cmp-7"
REQUEST = {
    "campaignId": CAMPAIGN_ID,
    "name": "Launch",
    "type": "Email",
    "subject": "We launched",
    "senderName": "Acme",
    "senderEmail": "news@acme.test",
    "html": "<p>Hello</p>",
    "templateExternalId": None,
    "scheduledAt": None,
    "categoryExternalId": None,
}


@pytest.fixture
def world(pool: SandboxPool) -> Iterator[tuple[MailchimpState, ModuleRunner, httpx.Client]]:
    state = MailchimpState()
    module = load_module(MODULE_DIR, max_script_bytes=256 * 1024)
    assert module.manifest.declares_idempotent("CRM_Marketing_CreateCampaign")
    with serve(create_app(state)) as server:
        settings = {
            "api_key": DEFAULT_API_KEY,
            "list_id": DEFAULT_LIST_ID,
            "webhook_secret": "s3cret-s3cret-s3cret",
            "api_base_url": server.url,
        }
        runner = ModuleRunner(
            pool, module, server, settings, lambda ids: [c for c in CONTACTS if c["id"] in ids]
        )
        runner("CRM_Marketing_ExportContacts", [c["id"] for c in CONTACTS])
        token = base64.b64encode(f"x:{DEFAULT_API_KEY}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        with httpx.Client(base_url=server.url + "/3.0", headers=headers) as client:
            yield state, runner, client


def segment_members(state: MailchimpState) -> dict[str, int]:
    """Segment name → how many member entries it holds (an address twice would count 2)."""
    segments = state.lists[DEFAULT_LIST_ID]["segments"].values()
    return {s["name"]: len(s["emails"]) for s in segments}


def prepare(runner: ModuleRunner, emails: list[str], *, crash: bool = False) -> None:
    arguments = (CAMPAIGN_ID, "Email", emails)
    if crash:
        runner.crashed("CRM_Marketing_PrepareCampaign", *arguments)
    else:
        runner("CRM_Marketing_PrepareCampaign", *arguments)


def test_a_batch_prepared_again_after_a_crash_is_in_the_segment_once(
    world: tuple[MailchimpState, ModuleRunner, httpx.Client],
) -> None:
    state, runner, _ = world
    first = [c["email"] for c in CONTACTS[:3]]
    prepare(runner, first, crash=True)  # the service made the segment; the host forgot it
    assert runner.storage.get(f"campaign:{CAMPAIGN_ID}") is None
    prepare(runner, first)  # the same batch again, as after the restart
    prepare(runner, [c["email"] for c in CONTACTS[3:]], crash=True)
    prepare(runner, [c["email"] for c in CONTACTS[3:]])
    assert segment_members(state) == {f"CRM campaign {CAMPAIGN_ID}": len(CONTACTS)}


def test_create_called_again_after_the_host_died_returns_the_first_campaign(
    world: tuple[MailchimpState, ModuleRunner, httpx.Client],
) -> None:
    state, runner, _ = world
    prepare(runner, [c["email"] for c in CONTACTS])
    runner.crashed("CRM_Marketing_CreateCampaign", REQUEST)  # sent; the host never recorded it
    (made,) = state.campaigns
    assert state.campaigns[made]["status"] == "sending"
    again = runner("CRM_Marketing_CreateCampaign", REQUEST)
    assert again == {"externalId": made, "status": "Sending"}
    assert list(state.campaigns) == [made]  # nothing created, nothing sent twice


def test_create_called_again_after_its_answer_was_lost_sends_that_campaign(
    world: tuple[MailchimpState, ModuleRunner, httpx.Client],
) -> None:
    state, runner, client = world
    prepare(runner, [c["email"] for c in CONTACTS])
    segment_id = runner.storage[f"campaign:{CAMPAIGN_ID}"]["segmentId"]
    # what the lost POST /campaigns made in the service: a draft to the campaign's segment
    lost = client.post(
        "/campaigns",
        json={
            "type": "regular",
            "recipients": {
                "list_id": DEFAULT_LIST_ID,
                "segment_opts": {"saved_segment_id": segment_id},
            },
            "settings": {
                "subject_line": "We launched",
                "title": "Launch",
                "from_name": "Acme",
                "reply_to": "news@acme.test",
            },
        },
    )
    assert lost.status_code == 200, lost.text
    made = lost.json()["id"]
    assert runner("CRM_Marketing_CreateCampaign", REQUEST) == {
        "externalId": made,
        "status": "Sending",
    }
    assert list(state.campaigns) == [made] and state.campaigns[made]["status"] == "sending"
