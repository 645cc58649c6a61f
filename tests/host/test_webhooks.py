"""``ANY /hooks/{tenant}/{module}/{token}`` through the HTTP app with a real sandboxed module:
404 that says nothing, 413 before the module runs, the FetchRequest the module sees (body
bytes, headers, query), its response passed through, failures answered 500 with nothing
applied, one transaction (an exception on the 3rd action undoes the first two), replays,
skips with reasons, and tenants that never reach each other's data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.api.app import create_app
from host.db.models import (
    Campaign,
    Contact,
    Delivery,
    Invocation,
    OutboxMessage,
    WebhookReceipt,
    WebhookRequest,
)
from host.hookspecs import hookimpl
from host.marketing.actions import ActionApplier
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import EMAIL_SCRIPT, SECRET_API_KEY, email_manifest, json_body, make_host

WEBHOOK_FUNCTION = """
import json
import hashlib


def CRM_Marketing_ParseWebhookRequest(request):
    mode = request.query.get("mode", "result")
    if mode == "echo":
        raw = request.body.encode(request.headers["x-crm-host-body-encoding"])
        return {"response": {"status": 200, "body": {
            "method": request.method, "url": request.url, "headers": request.headers,
            "query": request.query, "body": request.body,
            "sha256": hashlib.sha256(raw).hexdigest()}}}
    if mode == "raise":
        raise ValueError("the service sent something odd, key " + settings["api_key"])
    if mode == "spin":
        while True:
            pass
    # default: the body is the WebhookResult itself (a malformed body fails json.loads)
    return json.loads(request.body)
"""

WEBHOOK_SCRIPT = EMAIL_SCRIPT.replace(
    "def CRM_Marketing_ParseWebhookRequest(request):\n    raise NotImplementedError\n",
    WEBHOOK_FUNCTION,
)
assert WEBHOOK_FUNCTION in WEBHOOK_SCRIPT

CRM_TABLES = (Contact, Campaign, Delivery, OutboxMessage)
API_KEYS: dict[str, str] = {}


class EventRecorder:
    """Records the host events fired, and what the database showed at that moment."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def crm_host_actions_applied(
        self, tenant_id: str, module_id: str, applied: list[Any], skipped: list[Any]
    ) -> None:
        self.events.append(
            ("applied", {"tenant": tenant_id, "applied": applied, "skipped": skipped})
        )

    @hookimpl
    def crm_host_campaign_status_changed(
        self, tenant_id: str, campaign_id: str, old_status: str, new_status: str, error: Any
    ) -> None:
        self.events.append(("campaign", {"id": campaign_id, "old": old_status, "new": new_status}))

    @hookimpl
    def crm_host_contact_unsubscribed(
        self, tenant_id: str, contact_id: str, email: str, category: Any
    ) -> None:
        self.events.append(("unsubscribed", {"contact": contact_id, "category": category}))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


def seed_crm(host: Host, tenant: str, *, external_id: str = "ext-1") -> None:
    """Two contacts, one campaign (Sending) with both as recipients (Sent)."""
    with host.db.transaction() as session:
        for cid, email in (("c1", "Ann@Example.test"), (f"c2-{tenant}", f"bob@{tenant}.test")):
            session.add(
                Contact(tenant_id=tenant, id=cid, name=cid, email=email, email_key=email.lower())
            )
        session.add(
            Campaign(
                id=f"{tenant}-spring",
                tenant_id=tenant,
                module_id="sendmail",
                module_version="1.0.0",
                type="Email",
                name="Spring",
                status="Sending",
                stage="done",  # sent by the send job; the webhook tracks it
                external_id=external_id,
            )
        )
        for cid, email in (("c1", "ann@example.test"), (f"c2-{tenant}", f"bob@{tenant}.test")):
            session.add(
                Delivery(
                    campaign_id=f"{tenant}-spring",
                    contact_id=cid,
                    email_key=email,
                    status="Sent",
                    history=[{"status": "Sent", "at": "2026-01-01T00:00:00+00:00"}],
                )
            )


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool, recorder: EventRecorder) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db", extra_plugins=[("recorder", recorder)], sandbox=pool)
    manifest = email_manifest(limits={"timeout_s": 1})
    instance.registry.upload(
        from_json_body(json_body(manifest, WEBHOOK_SCRIPT), max_script_bytes=64 * 1024)
    )
    instance.registry.upload(
        from_json_body(json_body(email_manifest(id="plainmail")), max_script_bytes=64 * 1024)
    )
    for tenant in ("acme", "globex"):
        _, API_KEYS[tenant] = instance.tenants.create(tenant, tenant.title())
        instance.tenants.configure(tenant, "sendmail", settings={"api_key": SECRET_API_KEY})
        seed_crm(instance, tenant)  # both tenants use externalId ext-1
    with instance.db.transaction() as session:
        session.add(
            Campaign(
                id="globex-only",
                tenant_id="globex",
                module_id="sendmail",
                module_version="1.0.0",
                type="Email",
                name="Globex only",
                status="Sending",
                stage="done",  # sent by the send job; the webhook tracks it
                external_id="ext-globex",
            )
        )
    yield instance
    instance.close()


@pytest.fixture
def client(host: Host) -> Iterator[TestClient]:
    with TestClient(create_app(host), raise_server_exceptions=False) as test_client:
        yield test_client


def hook_url(host: Host, tenant: str = "acme", module: str = "sendmail") -> str:
    url = host.tenants.enablement(tenant, module).webhook_url
    return url.removeprefix(host.settings.public_url)


def crm_state(host: Host) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the CRM tables a webhook may change."""
    state = {}
    with host.db.transaction() as session:
        for model in CRM_TABLES:
            columns = list(model.__table__.columns)
            rows = session.execute(select(*columns)).all()
            state[model.__tablename__] = sorted(tuple(map(repr, row)) for row in rows)
    return state


def delivery(host: Host, campaign: str, contact: str) -> Delivery:
    with host.db.transaction() as session:
        row = session.get(Delivery, (campaign, contact))
        assert row is not None
        return row


def campaign(host: Host, campaign_id: str) -> Campaign:
    with host.db.transaction() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        return row


def receipts(host: Host) -> list[WebhookReceipt]:
    with host.db.transaction() as session:
        return list(session.scalars(select(WebhookReceipt).order_by(WebhookReceipt.id)))


def invocation_count(host: Host) -> int:
    with host.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Invocation)) or 0)


def status(email: str, state: str, external_id: str = "ext-1") -> dict[str, Any]:
    return {
        "type": "UpdateDeliveryStatus",
        "email": email,
        "externalId": external_id,
        "status": state,
    }


STATS = {"type": "UpdateCampaignStats", "externalId": "ext-1", "stats": {"total": 2, "sent": 2}}


def post(client: TestClient, url: str, result: Any, **kwargs: Any) -> Any:
    return client.post(url, content=json.dumps(result), **kwargs)


# --- the happy path -------------------------------------------------------------------------


def test_every_action_kind_applied_in_one_request(
    host: Host, client: TestClient, recorder: EventRecorder
) -> None:
    result = {
        "actions": [
            status("ANN@example.test", "Delivered"),
            {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Sent"},
            STATS,
            {"type": "Unsubscribe", "email": "ann@example.test", "externalId": "newsletter"},
            {"type": "Unsubscribe", "email": "bob@acme.test", "externalId": {"all": True}},
            {
                "type": "SendEmail",
                "email": "ann@example.test",
                "subject": "Bye",
                "html": "<p>x</p>",
            },
        ]
    }
    answer = post(client, hook_url(host), result)
    assert answer.status_code == 200
    assert answer.json() == {"ok": True}
    assert answer.headers["content-type"] == "application/json"

    row = delivery(host, "acme-spring", "c1")
    assert row.status == "Delivered"
    assert [h["status"] for h in row.history] == ["Sent", "Delivered"]
    spring = campaign(host, "acme-spring")
    assert (spring.status, spring.stats["total"], spring.stats["opened"]) == ("Sent", 2, 0)
    assert spring.stats_fetched_at is not None and spring.finished_at is not None
    with host.db.transaction() as session:
        assert session.get(Contact, ("acme", "c2-acme")).status == "Unsubscribed"
        assert session.get(Contact, ("acme", "c1")).status == "Subscribed"
        mail = session.scalars(select(OutboxMessage)).one()
        assert (mail.recipient, mail.subject, mail.status) == ("ann@example.test", "Bye", "queued")
    [receipt] = receipts(host)
    assert (receipt.status_code, receipt.applied, receipt.skipped, receipt.error) == (
        200,
        6,
        [],
        None,
    )
    assert recorder.names() == ["campaign", "unsubscribed", "unsubscribed", "applied"]
    assert recorder.events[0][1] == {"id": "acme-spring", "old": "Sending", "new": "Sent"}
    # globex's campaign with the same externalId was not touched
    assert campaign(host, "globex-spring").status == "Sending"
    assert delivery(host, "globex-spring", "c1").status == "Sent"


# --- failures: 500, nothing applied ---------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "body", "kind"),
    [
        ("?mode=raise", "{}", "script_error"),
        ("?mode=spin", "{}", "timeout"),
        ("", "this is { not json", "script_error"),
        (
            "",
            json.dumps(
                {"actions": [status("ann@example.test", "Opened"), status("x", "Teleported")]}
            ),
            "invalid_return",
        ),
        ("", json.dumps({"actions": [STATS, {"type": "Explode"}]}), "invalid_return"),
    ],
    ids=["raises", "timeout", "malformed-body", "invalid-status", "unknown-action-type"],
)
def test_module_failure_is_500_and_nothing_applied(
    host: Host, client: TestClient, recorder: EventRecorder, query: str, body: str, kind: str
) -> None:
    before = crm_state(host)
    answer = client.post(hook_url(host) + query, content=body)
    assert answer.status_code == 500
    assert answer.json() == {"error": kind, "message": "the webhook could not be processed"}
    assert SECRET_API_KEY not in answer.text
    assert crm_state(host) == before
    [receipt] = receipts(host)
    assert receipt.status_code == 500 and receipt.applied == 0
    assert receipt.error is not None and receipt.error.startswith(kind)
    assert SECRET_API_KEY not in receipt.error
    assert recorder.events == []


def test_module_without_the_function_is_501(host: Host, client: TestClient) -> None:
    host.tenants.configure("acme", "plainmail", settings={"api_key": SECRET_API_KEY})
    answer = client.post(hook_url(host, module="plainmail"), content="{}")
    assert answer.status_code == 501
    assert answer.json()["error"] == "not_implemented"


def test_exception_on_the_third_action_undoes_the_first_two(
    host: Host, client: TestClient, recorder: EventRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ActionApplier, "_update_stats", broken)
    before = crm_state(host)
    result = {
        "actions": [
            status("ann@example.test", "Clicked"),
            {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Sent"},
            STATS,
            {"type": "SendEmail", "email": "ann@example.test", "subject": "s", "html": "h"},
        ]
    }
    answer = post(client, hook_url(host), result)
    assert answer.status_code == 500
    assert answer.json()["error"] == "apply_failed"
    assert crm_state(host) == before
    [receipt] = receipts(host)
    assert receipt.error == "apply_failed: RuntimeError: disk on fire"
    assert recorder.events == []  # no event for a change that never committed


# --- replays and skips ----------------------------------------------------------------------


def test_replayed_webhook_changes_nothing_more(host: Host, client: TestClient) -> None:
    result = {
        "actions": [
            status("ann@example.test", "Clicked"),
            {"type": "UpdateCampaign", "externalId": "ext-1", "status": "Sent"},
            STATS,
            {"type": "Unsubscribe", "email": "ann@example.test", "externalId": "news"},
            {"type": "SendEmail", "email": "ann@example.test", "subject": "s", "html": "h"},
        ]
    }
    assert post(client, hook_url(host), result).status_code == 200
    once = crm_state(host)
    assert post(client, hook_url(host), result).status_code == 200
    assert crm_state(host) == once
    first, second = receipts(host)
    assert (first.applied, second.applied) == (5, 0)
    assert {s["reason"] for s in second.skipped} == {"no_change"}

    # a late "Delivered" never downgrades "Clicked"; stats set again are the same values
    late = {"actions": [status("ann@example.test", "Delivered"), STATS]}
    assert post(client, hook_url(host), late).status_code == 200
    assert crm_state(host) == once
    row = delivery(host, "acme-spring", "c1")
    assert row.status == "Clicked"
    assert [h["status"] for h in row.history] == ["Sent", "Clicked"]
    assert campaign(host, "acme-spring").stats["sent"] == 2


def test_unknown_campaign_and_email_are_skipped_with_reasons(
    host: Host, client: TestClient, recorder: EventRecorder
) -> None:
    result = {
        "actions": [
            status("ann@example.test", "Opened", external_id="no-such-campaign"),
            status("stranger@example.test", "Opened"),
            {"type": "Unsubscribe", "email": "stranger@example.test", "externalId": {"all": True}},
            {"type": "SendEmail", "email": "not an address", "subject": "s", "html": "h"},
            status("bob@acme.test", "Opened"),
        ]
    }
    answer = post(client, hook_url(host), result)
    assert answer.status_code == 200
    [receipt] = receipts(host)
    assert receipt.applied == 1
    assert [(s["index"], s["reason"]) for s in receipt.skipped] == [
        (0, "unknown_campaign"),
        (1, "unknown_recipient"),
        (2, "unknown_contact"),
        (3, "invalid_recipient"),
    ]
    assert all(s["detail"] for s in receipt.skipped)
    [(name, event)] = recorder.events
    assert name == "applied"
    assert event["skipped"] == receipt.skipped
    assert [a["index"] for a in event["applied"]] == [4]
    assert delivery(host, "acme-spring", "c2-acme").status == "Opened"


# --- tenants never reach each other ---------------------------------------------------------


def test_a_tenants_webhook_never_changes_another_tenants_data(
    host: Host, client: TestClient
) -> None:
    globex_before = {
        k: [r for r in rows if "globex" in "".join(r)] for k, rows in crm_state(host).items()
    }
    result = {
        "actions": [
            status("bob@globex.test", "Clicked"),  # globex's recipient, acme's campaign
            status("bob@globex.test", "Clicked", external_id="ext-globex"),
            {"type": "UpdateCampaign", "externalId": "ext-globex", "status": "Cancelled"},
            {"type": "UpdateCampaignStats", "externalId": "ext-globex", "stats": {"total": 9}},
            {"type": "Unsubscribe", "email": "bob@globex.test", "externalId": {"all": True}},
        ]
    }
    answer = post(client, hook_url(host, "acme"), result)
    assert answer.status_code == 200
    [receipt] = receipts(host)
    assert receipt.applied == 0
    assert [s["reason"] for s in receipt.skipped] == [
        "unknown_recipient",
        "unknown_campaign",
        "unknown_campaign",
        "unknown_campaign",
        "unknown_contact",
    ]
    globex_after = {
        k: [r for r in rows if "globex" in "".join(r)] for k, rows in crm_state(host).items()
    }
    assert globex_after == globex_before


def test_every_wrong_url_is_the_same_404(host: Host, client: TestClient) -> None:
    acme = hook_url(host, "acme")
    _, _, tenant, module, token = acme.split("/")
    globex_token = hook_url(host, "globex").rsplit("/", 1)[1]
    host.tenants.configure("globex", "plainmail", settings={"api_key": SECRET_API_KEY})
    host.tenants.disable("globex", "plainmail")
    disabled = hook_url(host, "globex", "plainmail")
    wrong = [
        f"/hooks/{tenant}/{module}/{token[:-1]}x",
        f"/hooks/{tenant}/{module}/{globex_token}",  # another tenant's token on acme's path
        f"/hooks/nosuch/{module}/{token}",
        f"/hooks/{tenant}/nosuch/{token}",
        f"/hooks/{tenant}/plainmail/{token}",
        disabled,
    ]
    before = crm_state(host)
    bodies = set()
    for url in wrong:
        answer = post(client, url, {"actions": [status("ann@example.test", "Clicked")]})
        assert answer.status_code == 404, url
        bodies.add(answer.text)
    assert len(bodies) == 1
    assert json.loads(bodies.pop())["message"] == "no such webhook"
    assert crm_state(host) == before
    assert invocation_count(host) == 0 and receipts(host) == []


# --- the request the module sees ------------------------------------------------------------


def test_oversized_body_is_413_without_calling_the_module(host: Host, client: TestClient) -> None:
    host.webhooks.max_body_bytes = 2048
    url = hook_url(host)
    answer = client.post(url, content=b"x" * 2049)
    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(5):
            yield b"y" * 1000

    assert client.post(url, content=chunks()).status_code == 413
    assert invocation_count(host) == 0
    assert [r.status_code for r in receipts(host)] == [413, 413]
    assert client.post(url + "?mode=echo", content=b"z" * 2048).status_code == 200


def test_query_headers_method_and_url_reach_the_module(host: Host, client: TestClient) -> None:
    url = hook_url(host) + "?mode=echo&tag=a&tag=b&empty=&name=J%C3%BCrgen"
    answer = client.put(
        url,
        content='{"événement": "ouvert"}'.encode(),
        headers=[("X-Signature", "sig=1"), ("X-Multi", "one"), ("X-Multi", "two")],
    )
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["method"] == "PUT"
    assert seen["url"] == "http://testserver" + url
    assert seen["query"] == {"mode": "echo", "tag": ["a", "b"], "empty": "", "name": "Jürgen"}
    assert seen["headers"]["x-signature"] == "sig=1"
    assert seen["headers"]["x-multi"] == "one, two"
    assert seen["headers"]["x-crm-host-body-encoding"] == "utf-8"
    assert all(name == name.lower() for name in seen["headers"])
    assert seen["body"] == '{"événement": "ouvert"}'
    assert seen["sha256"] == hashlib.sha256('{"événement": "ouvert"}'.encode()).hexdigest()


def test_non_utf8_body_reaches_the_module_losslessly(host: Host, client: TestClient) -> None:
    raw = b"caf\xe9 \xff\xfe\x00 end"
    answer = client.post(
        hook_url(host) + "?mode=echo",
        content=raw,
        headers={"x-crm-host-body-encoding": "utf-8"},  # a caller cannot spoof it
    )
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["headers"]["x-crm-host-body-encoding"] == "latin-1"
    assert seen["body"] == raw.decode("latin-1")
    assert seen["sha256"] == hashlib.sha256(raw).hexdigest()


def test_get_without_body_reaches_the_module(host: Host, client: TestClient) -> None:
    answer = client.get(hook_url(host) + "?mode=echo&challenge=42")
    assert answer.status_code == 200
    assert answer.json()["method"] == "GET"
    assert answer.json()["body"] == ""


@pytest.mark.parametrize(
    ("response", "status_code", "content_type", "content"),
    [
        ({"status": 202, "body": "accepted"}, 202, "text/plain; charset=utf-8", b"accepted"),
        ({"body": {"received": 3}}, 200, "application/json", b'{"received": 3}'),
        (
            {"status": 401, "headers": {"Content-Type": "text/xml"}, "body": "<no/>"},
            401,
            "text/xml",
            b"<no/>",
        ),
        ({"status": 204}, 204, None, b""),
        ({"status": 200, "body": None}, 200, None, b""),
    ],
    ids=["text", "json", "own-content-type", "no-content", "empty"],
)
def test_module_response_is_passed_through(
    host: Host,
    client: TestClient,
    response: dict[str, Any],
    status_code: int,
    content_type: str | None,
    content: bytes,
) -> None:
    answer = post(client, hook_url(host), {"response": response})
    assert answer.status_code == status_code
    assert answer.headers.get("content-type") == content_type
    assert answer.content == content


SECURITY_HEADERS = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox"}


def test_only_caller_facing_response_headers_are_kept(host: Host, client: TestClient) -> None:
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Retry-After": "120",
        "WWW-Authenticate": 'Basic realm="hooks"',
        "Set-Cookie": "session=planted; Path=/",
        "Refresh": "0; url=https://evil.example/",
        "Location": "https://evil.example/",  # not a 3xx: dropped
        "Access-Control-Allow-Origin": "*",
        "Content-Security-Policy": "default-src *",
        "X-Content-Type-Options": "sniff-please",
        "X-Challenge": "abc",
        "Content-Length": "999",
        "Transfer-Encoding": "chunked",
        "content-type": "text/plain",  # the same name again: the first spelling wins
    }
    body = "<script>fetch('/api/v1/tenants')</script>"
    answer = post(
        client, hook_url(host), {"response": {"status": 200, "headers": headers, "body": body}}
    )
    assert answer.status_code == 200
    assert answer.text == body
    assert answer.headers.get_list("content-type") == ["text/html; charset=utf-8"]
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["retry-after"] == "120"
    assert answer.headers["www-authenticate"] == 'Basic realm="hooks"'
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get_list(name) == [value]
    assert answer.headers["content-length"] == str(len(body))
    for dropped in (
        "set-cookie",
        "refresh",
        "location",
        "access-control-allow-origin",
        "x-challenge",
        "transfer-encoding",
    ):
        assert dropped not in answer.headers, dropped
    assert not answer.cookies


def test_location_is_kept_on_a_redirect_only(host: Host, client: TestClient) -> None:
    result = {"response": {"status": 302, "headers": {"Location": "https://svc.example/ok"}}}
    answer = post(client, hook_url(host), result, follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://svc.example/ok"
    assert answer.headers["content-security-policy"] == "sandbox"


def test_header_injection_is_dropped(host: Host, client: TestClient) -> None:
    headers = {"Cache-Control": "no-store\r\nSet-Cookie: session=stolen", "Bad Name": "v"}
    answer = post(client, hook_url(host), {"response": {"headers": headers, "body": "ok"}})
    assert answer.status_code == 200
    assert "cache-control" not in answer.headers and "set-cookie" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("query", "result", "status_code"),
    [("", {}, 200), ("?mode=raise", {}, 500), ("?mode=spin", {}, 500)],
    ids=["default-reply", "module-raised", "module-timed-out"],
)
def test_every_reply_carries_the_security_headers(
    host: Host, client: TestClient, query: str, result: Any, status_code: int
) -> None:
    answer = post(client, hook_url(host) + query, result)
    assert answer.status_code == status_code
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get_list(name) == [value]


def test_response_with_actions_applies_them(host: Host, client: TestClient) -> None:
    result = {"actions": [status("ann@example.test", "Opened")], "response": {"status": 202}}
    answer = post(client, hook_url(host), result)
    assert answer.status_code == 202
    assert delivery(host, "acme-spring", "c1").status == "Opened"
    assert receipts(host)[0].status_code == 202


def test_receipts_are_listed_for_their_tenant_only(host: Host, client: TestClient) -> None:
    post(client, hook_url(host), {"actions": [status("nobody@example.test", "Opened")]})
    client.post(hook_url(host) + "?mode=raise", content="{}")
    acme = {"Authorization": f"Bearer {API_KEYS['acme']}"}
    listed = client.get("/api/v1/tenants/acme/webhooks/receipts", headers=acme)
    assert listed.status_code == 200
    failed, ok = listed.json()
    assert (failed["status"], failed["applied"]) == (500, 0)
    assert failed["error"].startswith("script_error") and SECRET_API_KEY not in failed["error"]
    assert (ok["status"], ok["module"], ok["error"]) == (200, "sendmail", None)
    assert ok["skipped"][0]["reason"] == "unknown_recipient"
    globex = {"Authorization": f"Bearer {API_KEYS['globex']}"}
    assert client.get("/api/v1/tenants/globex/webhooks/receipts", headers=globex).json() == []
    assert client.get("/api/v1/tenants/acme/webhooks/receipts", headers=globex).status_code == 403
    assert client.get("/api/v1/tenants/acme/webhooks/receipts").status_code == 401


# --- stored requests, replay, event ids -------------------------------------------------------

FIXED_SCRIPT = WEBHOOK_SCRIPT.replace('if mode == "raise":', 'if mode == "never":')


def stored_count(host: Host) -> int:
    with host.db.transaction() as session:
        return session.scalar(select(func.count()).select_from(WebhookRequest)) or 0


def contact_emails(host: Host, tenant: str = "acme") -> set[str]:
    with host.db.transaction() as session:
        return set(session.scalars(select(Contact.email).where(Contact.tenant_id == tenant)))


def test_a_failed_request_is_replayed_dry_then_for_real_on_a_fixed_version(
    host: Host, client: TestClient
) -> None:
    host.registry.upload(
        from_json_body(
            json_body(email_manifest(version="1.0.1"), FIXED_SCRIPT), max_script_bytes=64 * 1024
        )
    )
    acme = {"Authorization": f"Bearer {API_KEYS['acme']}"}
    result = {
        "actions": [
            {
                "type": "UpdateContact",
                "email": "new@example.test",
                "name": f"leaked {SECRET_API_KEY}",  # a secret in the body: masked when shown
                "eventId": "ev-1",
            }
        ]
    }
    answer = client.post(
        hook_url(host) + "?mode=raise",
        content=json.dumps(result),
        headers={"X-Hub-Signature-256": "sha256=s1"},
    )
    assert answer.status_code == 500
    [failed] = client.get("/api/v1/tenants/acme/webhooks/receipts", headers=acme).json()
    assert failed["requestId"] is not None and failed["version"] == "1.0.0"
    [shown] = client.get("/api/v1/tenants/acme/webhooks/requests", headers=acme).json()
    assert shown["id"] == failed["requestId"] and shown["url"].endswith("/***?mode=raise")
    assert ["x-hub-signature-256", "***"] in shown["headers"]
    assert SECRET_API_KEY not in json.dumps(shown) and "***" in shown["body"]

    replay = f"/api/v1/tenants/acme/webhooks/receipts/{failed['id']}/replay"
    still = client.post(replay, json={"dryRun": True}, headers=acme).json()  # pinned: raises
    assert (still["status"], still["applied"]) == (500, [])
    assert still["error"].startswith("script_error") and SECRET_API_KEY not in still["error"]
    dry = client.post(replay, json={"version": "1.0.1", "dryRun": True}, headers=acme)
    assert dry.status_code == 200, dry.text
    assert [a["email"] for a in dry.json()["applied"]] == ["new@example.test"]
    assert dry.json()["receipt"] is None
    assert "new@example.test" not in contact_emails(host)  # a dry run keeps nothing
    assert len(receipts(host)) == 1

    real = client.post(replay, json={"version": "1.0.1"}, headers=acme).json()
    assert [a["eventId"] for a in real["applied"]] == ["ev-1"]
    assert "new@example.test" in contact_emails(host)
    again = client.post(replay, json={"version": "1.0.1"}, headers=acme).json()
    assert [(s["eventId"], s["reason"]) for s in again["skipped"]] == [("ev-1", "duplicate_event")]
    listed = client.get("/api/v1/tenants/acme/webhooks/receipts", headers=acme).json()
    assert [(r["replayOf"], r["version"], r["status"]) for r in listed] == [
        (failed["id"], "1.0.1", 200),
        (failed["id"], "1.0.1", 200),
        (None, "1.0.0", 500),
    ]
    assert stored_count(host) == 1  # a replay does not store the request again


def test_stored_requests_and_replays_stay_within_their_tenant(
    host: Host, client: TestClient
) -> None:
    post(client, hook_url(host), {"actions": []})
    [receipt] = receipts(host)
    globex = {"Authorization": f"Bearer {API_KEYS['globex']}"}
    assert client.get("/api/v1/tenants/globex/webhooks/requests", headers=globex).json() == []
    assert client.get("/api/v1/tenants/acme/webhooks/requests", headers=globex).status_code == 403
    assert client.get("/api/v1/tenants/acme/webhooks/requests").status_code == 401
    foreign = client.post(
        f"/api/v1/tenants/globex/webhooks/receipts/{receipt.id}/replay", headers=globex
    )
    assert foreign.status_code == 404
    acme = {"Authorization": f"Bearer {API_KEYS['acme']}"}
    for path in ("0/replay", "x/replay"):
        bad = client.post(f"/api/v1/tenants/acme/webhooks/receipts/{path}", headers=acme)
        assert bad.status_code == 422
    bad_limit = client.get("/api/v1/tenants/acme/webhooks/requests?limit=0", headers=acme)
    assert bad_limit.status_code == 422
    assert len(receipts(host)) == 1


def test_oversized_or_unstored_requests_cannot_be_replayed(host: Host, client: TestClient) -> None:
    host.webhooks.max_body_bytes = 2048
    assert client.post(hook_url(host), content=b"x" * 4096).status_code == 413
    host.webhooks.store_requests = False  # CRM_HOST_WEBHOOK_REQUESTS_MAX_BYTES_PER_TENANT=0
    assert post(client, hook_url(host), {"actions": []}).status_code == 200
    assert stored_count(host) == 0
    acme = {"Authorization": f"Bearer {API_KEYS['acme']}"}
    for receipt in receipts(host):
        assert receipt.request_id is None
        answer = client.post(
            f"/api/v1/tenants/acme/webhooks/receipts/{receipt.id}/replay", headers=acme
        )
        assert answer.status_code == 404 and "is not stored" in answer.json()["message"]
    assert len(receipts(host)) == 2
