"""The SendGrid emulator follows the published API: bearer auth and the error envelope, token
pagination with ``_metadata``, asynchronous contact imports, single-send scheduling rules,
templates and versions, stats counted from its events, and a signed Event Webhook whose
signature verifies like SendGrid's (ECDSA P-256 over timestamp + body, key from the API)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from emulators.runner import serve
from emulators.sendgrid import SendGridState, create_app
from emulators.sendgrid_state import SIGNATURE_HEADER, TIMESTAMP_HEADER
from sandbox.signatures import verify_ecdsa_p256

KEY = "SG.emulator-test-key"


@pytest.fixture
def state() -> SendGridState:
    return SendGridState(api_keys={KEY})


@pytest.fixture
def api(state: SendGridState) -> Iterator[httpx.Client]:
    with (
        serve(create_app(state)) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as client,
    ):
        yield client


def scheduled_send(api: httpx.Client, emails: list[str], **config: Any) -> str:
    list_id = api.post("/v3/marketing/lists", json={"name": "Spring"}).json()["id"]
    contacts = [{"email": e} for e in emails]
    assert api.put("/v3/marketing/contacts", json={"list_ids": [list_id], "contacts": contacts})
    email_config = {
        "subject": "Hi",
        "html_content": "<p>Hi</p>",
        "sender_id": 1,
        "suppression_group_id": 10,
        **config,
    }
    created = api.post(
        "/v3/marketing/singlesends",
        json={
            "name": "Spring",
            "categories": ["spring"],
            "send_to": {"list_ids": [list_id]},
            "email_config": email_config,
        },
    )
    assert created.status_code == 201 and created.json()["status"] == "draft"
    send_id = str(created.json()["id"])
    scheduled = api.put(f"/v3/marketing/singlesends/{send_id}/schedule", json={"send_at": "now"})
    assert scheduled.status_code == 201 and scheduled.json()["status"] == "scheduled"
    return send_id


def test_every_call_needs_the_api_key(api: httpx.Client) -> None:
    for headers in ({"Authorization": "Bearer SG.wrong"}, {"Authorization": ""}):
        answer = api.get("/v3/marketing/lists", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["errors"][0]["field"] is None


def test_lists_page_by_token_with_metadata(api: httpx.Client) -> None:
    for i in range(5):
        assert api.post("/v3/marketing/lists", json={"name": f"L{i}"}).status_code == 201
    duplicate = api.post("/v3/marketing/lists", json={"name": "L0"})
    assert duplicate.status_code == 400 and duplicate.json()["errors"][0]["field"] == "name"
    names, url = [], "/v3/marketing/lists?page_size=2"
    while url:
        page = api.get(url).json()
        names += [item["name"] for item in page["result"]]
        assert page["_metadata"]["count"] == 5
        url = page["_metadata"].get("next")
    assert names == ["L0", "L1", "L2", "L3", "L4"]


def test_templates_need_page_size_and_list_versions_without_html(api: httpx.Client) -> None:
    assert api.get("/v3/templates").status_code == 400
    assert api.get("/v3/templates?page_size=201").status_code == 400
    tid = api.post("/v3/templates", json={"name": "T", "generation": "dynamic"}).json()["id"]
    assert tid.startswith("d-")
    v1 = api.post(
        f"/v3/templates/{tid}/versions",
        json={"name": "v1", "subject": "S", "html_content": "<p>1</p>"},
    ).json()
    v2 = api.post(
        f"/v3/templates/{tid}/versions",
        json={"name": "v2", "subject": "S", "html_content": "<p>2</p>", "active": 1},
    )
    assert api.get("/v3/templates?page_size=10").json()["result"] == []  # legacy by default
    (listed,) = api.get("/v3/templates?generations=dynamic&page_size=10").json()["result"]
    assert [(v["name"], v["active"]) for v in listed["versions"]] == [("v1", 0), ("v2", 1)]
    assert all("html_content" not in v for v in listed["versions"])
    full = api.get(f"/v3/templates/{tid}").json()
    assert [v["html_content"] for v in full["versions"]] == ["<p>1</p>", "<p>2</p>"]
    api.post(f"/v3/templates/{tid}/versions/{v1['id']}/activate")
    assert api.get(f"/v3/templates/{tid}/versions/{v2.json()['id']}").json()["active"] == 0


def test_contact_imports_are_asynchronous_jobs(api: httpx.Client, state: SendGridState) -> None:
    state.hold_imports = True
    job = api.put(
        "/v3/marketing/contacts",
        json={
            "contacts": [
                {"email": "Ann@Example.test", "first_name": "Ann"},
                {"email": "not-an-email"},
            ]
        },
    )
    assert job.status_code == 202
    status = f"/v3/marketing/contacts/imports/{job.json()['job_id']}"
    assert api.get(status).json()["status"] == "pending"
    state.finish_imports()
    done = api.get(status).json()
    assert done["status"] == "errored"
    assert done["results"] | {"requested_count": 2} == {
        "requested_count": 2,
        "created_count": 1,
        "updated_count": 0,
        "deleted_count": 0,
        "errored_count": 1,
    }
    found = api.post(
        "/v3/marketing/contacts/search/emails",
        json={"emails": ["ann@example.test", "bob@example.test"]},
    ).json()["result"]
    assert found["ann@example.test"]["contact"]["first_name"] == "Ann"
    assert found["bob@example.test"] == {"error": "contact not found"}
    unknown_list = api.put(
        "/v3/marketing/contacts", json={"list_ids": ["nope"], "contacts": [{"email": "a@b.test"}]}
    )
    assert unknown_list.status_code == 404


def test_scheduling_lists_everything_a_single_send_lacks(api: httpx.Client) -> None:
    draft = api.post("/v3/marketing/singlesends", json={"name": "Empty"}).json()
    answer = api.put(f"/v3/marketing/singlesends/{draft['id']}/schedule", json={"send_at": "now"})
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == [
        "email_config.sender_id",
        "email_config.suppression_group_id",
        "email_config",
        "send_to",
    ]
    assert api.get(f"/v3/marketing/singlesends/{draft['id']}").json()["status"] == "draft"


class Receiver:
    """A webhook endpoint that keeps the raw requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> JSONResponse:
            self.requests.append((dict(request.headers), await request.body()))
            return JSONResponse({})

        return Starlette(routes=[Route("/hook", endpoint, methods=["POST"])])


def test_a_delivered_send_posts_signed_events_and_counts_stats(
    api: httpx.Client, state: SendGridState
) -> None:
    receiver = Receiver()
    send_id = scheduled_send(api, ["a@x.test", "b@x.test", "c@x.test", "d@x.test"])
    with serve(receiver.app()) as target:
        api.patch(
            "/v3/user/webhooks/event/settings",
            json={"enabled": True, "url": f"{target.url}/hook", "deferred": False},
        )
        key = api.patch("/v3/user/webhooks/event/settings/signed", json={"enabled": True})
        public_key = key.json()["public_key"]
        assert api.get("/v3/user/webhooks/event/settings/signed").json() == key.json()
        delivered = api.post(
            f"/_emulator/singlesends/{send_id}/deliver",
            json={
                "outcomes": {
                    "a@x.test": "click",
                    "b@x.test": "bounce",
                    "c@x.test": "deferred",
                    "d@x.test": "dropped",
                }
            },
        )
        assert delivered.json() == {"events": 4 + 2 + 3 + 1, "posts": [200]}

    ((headers, body),) = receiver.requests
    assert body.endswith(b"]\r\n") and b"},\r\n{" in body
    assert verify_ecdsa_p256(
        public_key,
        headers[SIGNATURE_HEADER.lower()],
        headers[TIMESTAMP_HEADER.lower()].encode() + body,
    )
    assert not verify_ecdsa_p256(
        public_key,
        headers[SIGNATURE_HEADER.lower()],
        headers[TIMESTAMP_HEADER.lower()].encode() + body[:-2],
    )
    events = json.loads(body)
    assert "deferred" not in [e["event"] for e in events]  # switched off in the settings
    first = events[0]
    assert first["singlesend_id"] == send_id and first["asm_group_id"] == 10
    assert first["category"] == ["spring"] and isinstance(first["timestamp"], int)
    assert base64.urlsafe_b64decode(first["sg_event_id"] + "==").startswith(b"processed-")
    bounce = next(e for e in events if e["event"] == "bounce")
    assert (bounce["type"], bounce["status"]) == ("bounce", "5.1.1")

    stats = api.get(f"/v3/marketing/stats/singlesends/{send_id}?aggregated_by=total").json()
    (result,) = stats["results"]
    assert result["aggregation"] == "total" and result["ab_variation"] == "all"
    assert result["stats"] == {
        "requests": 4,
        "delivered": 2,
        "bounces": 1,
        "bounce_drops": 1,
        "spam_report_drops": 0,
        "invalid_emails": 0,
        "opens": 1,
        "unique_opens": 1,
        "clicks": 1,
        "unique_clicks": 1,
        "unsubscribes": 0,
        "spam_reports": 0,
    }
    assert api.get(f"/v3/marketing/singlesends/{send_id}").json()["status"] == "triggered"
    assert api.get("/v3/marketing/stats/singlesends/unknown").status_code == 404


def test_unknown_outcomes_are_refused(api: httpx.Client) -> None:
    send_id = scheduled_send(api, ["a@x.test"])
    answer = api.post(f"/_emulator/singlesends/{send_id}/deliver", json={"default": "lost"})
    assert answer.status_code == 400 and "lost" in answer.json()["errors"][0]["message"]


def test_a_rate_limited_key_gets_429_with_sendgrids_headers_until_the_reset(
    api: httpx.Client, state: SendGridState
) -> None:
    clock = [1_700_000_000.5]
    state.clock = lambda: clock[0]
    state.api_keys.add("SG.other")
    switched = api.put(
        "/_emulator/rate-limits", json={"apiKey": KEY, "requests": 2, "perSeconds": 10}
    )
    assert switched.status_code == 200, switched.text
    first, second, third = (api.get("/v3/marketing/lists") for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert third.headers["x-ratelimit-remaining"] == "0"
    assert third.headers["x-ratelimit-reset"] == "1700000011"  # the period's end, epoch s
    assert third.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    assert state.throttled == ["GET /v3/marketing/lists"]
    # another key is not limited, and its answers carry no rate-limit headers
    other = api.get("/v3/marketing/lists", headers={"Authorization": "Bearer SG.other"})
    assert other.status_code == 200 and "x-ratelimit-limit" not in other.headers
    clock[0] += 10  # the refresh period is over
    assert api.get("/v3/marketing/lists").status_code == 200
    # switched off: no budget, no headers
    assert api.put("/_emulator/rate-limits", json={"apiKey": KEY, "requests": None}).is_success
    assert all(api.get("/v3/marketing/lists").status_code == 200 for _ in range(3))


def test_rate_limit_controls_refuse_bad_values(api: httpx.Client) -> None:
    for body, field in (
        ({"requests": 1}, "apiKey"),
        ({"apiKey": KEY, "requests": -1}, "requests"),
        ({"apiKey": KEY, "requests": "5"}, "requests"),
        ({"apiKey": KEY, "requests": 1, "perSeconds": 0}, "perSeconds"),
    ):
        answer = api.put("/_emulator/rate-limits", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["errors"][0]["field"] == field
