"""The Mailchimp emulator follows the published API where the module relies on it: Basic
auth, problem+json errors, offset/count paging limits, the subscriber-hash check, static
segments that only take audience members, the send checklist, quarter-hour scheduling, and
webhook registration that GETs the URL first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from emulators.mailchimp import (
    DEFAULT_API_KEY,
    DEFAULT_LIST_ID,
    MailchimpState,
    create_app,
    subscriber_hash,
)
from emulators.runner import RunningServer, serve

AUTH = ("anystring", DEFAULT_API_KEY)


@pytest.fixture
def mailchimp() -> Iterator[tuple[MailchimpState, httpx.Client]]:
    state = MailchimpState()
    with (
        serve(create_app(state)) as server,
        httpx.Client(base_url=f"{server.url}/3.0", auth=AUTH) as client,
    ):
        yield state, client


def member(client: httpx.Client, email: str) -> httpx.Response:
    return client.put(
        f"/lists/{DEFAULT_LIST_ID}/members/{subscriber_hash(email)}",
        json={"email_address": email, "status_if_new": "subscribed"},
    )


def test_every_call_needs_the_key_and_errors_are_problem_documents(
    mailchimp: tuple[MailchimpState, httpx.Client],
) -> None:
    _, client = mailchimp
    wrong = client.get("/templates", auth=("anystring", "nope-us6"))
    assert wrong.status_code == 401
    assert wrong.headers["content-type"].startswith("application/problem+json")
    assert set(wrong.json()) == {"type", "title", "status", "detail", "instance"}
    assert client.get("/campaigns/nope").json()["title"] == "Resource Not Found"


@pytest.mark.parametrize("query", [{"count": 0}, {"count": 1001}, {"offset": -1}, {"count": "x"}])
def test_paging_limits(mailchimp: tuple[MailchimpState, httpx.Client], query: Any) -> None:
    _, client = mailchimp
    assert client.get("/templates", params=query).status_code == 400


def test_templates_page_by_offset_and_count(mailchimp: tuple[MailchimpState, httpx.Client]) -> None:
    state, client = mailchimp
    for name in ("A", "B", "C"):
        state.add_template(name, f"<p>{name}</p>")
    page = client.get("/templates", params={"offset": 1, "count": 1}).json()
    assert [t["name"] for t in page["templates"]] == ["B"] and page["total_items"] == 3
    assert "html" not in page["templates"][0] and "_html" not in page["templates"][0]


def test_members_are_upserted_by_subscriber_hash(
    mailchimp: tuple[MailchimpState, httpx.Client],
) -> None:
    state, client = mailchimp
    assert member(client, "Ann@Example.com").status_code == 200
    again = client.put(
        f"/lists/{DEFAULT_LIST_ID}/members/{subscriber_hash('ann@example.com')}",
        json={"email_address": "ann@example.com", "merge_fields": {"FNAME": "Ann"}},
    )
    assert again.status_code == 200 and again.json()["full_name"] == "Ann"
    assert len(state.members()) == 1
    mismatch = client.put(
        f"/lists/{DEFAULT_LIST_ID}/members/{subscriber_hash('bob@example.com')}",
        json={"email_address": "ann@example.com", "status_if_new": "subscribed"},
    )
    assert mismatch.status_code == 400
    new_without_status = client.put(
        f"/lists/{DEFAULT_LIST_ID}/members/{subscriber_hash('cat@example.com')}",
        json={"email_address": "cat@example.com"},
    )
    assert new_without_status.status_code == 400 and len(state.members()) == 1


def test_batch_subscribe_keeps_existing_members_unless_asked(
    mailchimp: tuple[MailchimpState, httpx.Client],
) -> None:
    state, client = mailchimp
    member(client, "ann@example.com")
    state.members()[subscriber_hash("ann@example.com")]["status"] = "unsubscribed"
    body = {
        "members": [
            {"email_address": "ann@example.com", "status": "subscribed"},
            {"email_address": "bob@example.com", "status": "subscribed"},
        ],
        "update_existing": False,
    }
    result = client.post(f"/lists/{DEFAULT_LIST_ID}", json=body).json()
    assert (result["total_created"], result["error_count"]) == (1, 1)
    assert state.members()[subscriber_hash("ann@example.com")]["status"] == "unsubscribed"
    assert client.post(f"/lists/{DEFAULT_LIST_ID}", json={"members": []}).status_code == 400


def test_static_segments_take_only_audience_members(
    mailchimp: tuple[MailchimpState, httpx.Client],
) -> None:
    _, client = mailchimp
    member(client, "ann@example.com")
    segment = client.post(
        f"/lists/{DEFAULT_LIST_ID}/segments", json={"name": "S", "static_segment": []}
    ).json()
    added = client.post(
        f"/lists/{DEFAULT_LIST_ID}/segments/{segment['id']}",
        json={"members_to_add": ["ann@example.com", "ghost@example.com"]},
    ).json()
    assert (added["total_added"], added["error_count"]) == (1, 1)
    duplicate = client.post(
        f"/lists/{DEFAULT_LIST_ID}/segments", json={"name": "S", "static_segment": []}
    )
    assert duplicate.status_code == 400


def campaign(client: httpx.Client, **settings: str) -> str:
    body = {
        "type": "regular",
        "recipients": {"list_id": DEFAULT_LIST_ID},
        "settings": {"subject_line": "S", "from_name": "A", "reply_to": "a@acme.test", **settings},
    }
    return str(client.post("/campaigns", json=body).json()["id"])


def test_send_checks_the_checklist(mailchimp: tuple[MailchimpState, httpx.Client]) -> None:
    state, client = mailchimp
    member(client, "ann@example.com")
    campaign_id = campaign(client, reply_to="")
    refused = client.post(f"/campaigns/{campaign_id}/actions/send")
    assert refused.status_code == 400
    assert "reply_to" in refused.json()["detail"] and "content" in refused.json()["detail"]
    ready = campaign(client)
    client.put(f"/campaigns/{ready}/content", json={"html": "<p>x</p>"})
    assert client.post(f"/campaigns/{ready}/actions/send").status_code == 204
    assert state.campaigns[ready]["status"] == "sending"
    assert client.post(f"/campaigns/{ready}/actions/send").status_code == 400  # not twice


@pytest.mark.parametrize(
    ("when", "status"),
    [
        ("2031-01-01T10:07:00+00:00", 400),  # not a quarter hour
        ("2031-01-01T10:15:00", 400),  # no time zone
        ("2001-01-01T10:15:00+00:00", 400),  # in the past
        ("2031-01-01T10:15:00+00:00", 204),
    ],
)
def test_schedule_only_on_a_future_quarter_hour(
    mailchimp: tuple[MailchimpState, httpx.Client], when: str, status: int
) -> None:
    _, client = mailchimp
    member(client, "ann@example.com")
    campaign_id = campaign(client)
    client.put(f"/campaigns/{campaign_id}/content", json={"html": "<p>x</p>"})
    reply = client.post(f"/campaigns/{campaign_id}/actions/schedule", json={"schedule_time": when})
    assert reply.status_code == status, reply.text


def webhook_receiver(answer: int, seen: list[str]) -> Starlette:
    async def hook(request: Request) -> PlainTextResponse:
        seen.append(request.method)
        return PlainTextResponse("ok", status_code=answer)

    return Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"])])


@pytest.mark.parametrize(("answer", "accepted"), [(200, True), (403, False)])
def test_webhook_registration_validates_the_url_with_a_get(
    mailchimp: tuple[MailchimpState, httpx.Client], answer: int, accepted: bool
) -> None:
    state, client = mailchimp
    seen: list[str] = []
    receiver: RunningServer
    with serve(webhook_receiver(answer, seen)) as receiver:
        reply = client.post(
            f"/lists/{DEFAULT_LIST_ID}/webhooks", json={"url": f"{receiver.url}/hook"}
        )
        assert (reply.status_code == 200) is accepted
        assert seen == ["GET"]
        assert bool(state.hook_url) is accepted
