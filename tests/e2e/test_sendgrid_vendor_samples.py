"""Every published SendGrid Event Webhook sample, as its exact bytes, on the real webhook
endpoint of a tenant with the SendGrid module enabled — and the effect INDEX.md lists for it
asserted on the CRM database. Then the Signed Event Webhook: the SDK vectors (valid accepted,
every invalid one refused with 401/403 and nothing applied) and batches signed by the emulator.

The samples are copied byte for byte into ``module_manifests/sendgrid/tests/fixtures/vendor``
(their checksums are verified first). Most docs samples carry no campaign id, so a delivery
status cannot be tied to a campaign: their exact bytes must change no delivery, and the same
events carrying ``singlesend_id`` of a seeded campaign ("variant") show the delivery mapping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from emulators.runner import serve
from emulators.sendgrid import SendGridState
from emulators.sendgrid_state import SIGNATURE_HEADER, TIMESTAMP_HEADER, event_body
from host.api.app import create_app
from host.db.models import Campaign, Contact, ContactUnsubscription, Delivery, WebhookReceipt
from host.modules.packages import from_directory
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.host.conftest import make_host

MODULE_DIR = Path(__file__).resolve().parents[2] / "module_manifests" / "sendgrid"
VENDOR = MODULE_DIR / "tests" / "fixtures" / "vendor"
VARIANT = "ss-variant"
PLACEHOLDERS = ("sg_event_id", "sendgrid_internal_event_id")
EX, ALEX, JOHN, JANE = (
    "example@test.com",
    "alex@example.com",
    "john.doe@sendgrid.com",
    ("jane.doe@sendgrid.com"),
)
EMAIL, NICK, TAD1, TAD10 = (
    "email@example.com",
    "nick@sendgrid.com",
    ("tadpole_0001@stbase-018.sjc1.sendgrid.net"),
    "tadpole_0010@stbase-018.sjc1.sendgrid.net",
)
EVERYONE = [EX, ALEX, JOHN, JANE, EMAIL, NICK, TAD1, TAD10, "hello@world.com", "invalid@gmail.com"]
NATIVE = {"sendgrid_singlesend_id": [EMAIL], "12345": [EMAIL], "23314": [TAD1, TAD10]}
"""Campaigns whose ids the samples themselves carry (single send, legacy MC campaigns)."""


@dataclass(frozen=True)
class Effect:
    received: int
    variant: dict[str, str] = field(default_factory=dict)  # email → status on VARIANT
    native: dict[tuple[str, str], str] = field(default_factory=dict)  # (campaign, email)
    unsubscribed: frozenset[str] = frozenset()  # from everything
    categories: dict[str, list[str]] = field(default_factory=dict)


EFFECTS: dict[str, Effect] = {
    "sendgrid_event_processed.json": Effect(1, {EX: "Sent"}),
    "sendgrid_event_dropped.json": Effect(1, {EX: "Failed"}),
    "sendgrid_event_delivered.json": Effect(1, {EX: "Delivered"}),
    "sendgrid_event_deferred.json": Effect(1, {EX: "Sent"}),
    "sendgrid_event_deferred.current.json": Effect(1, {ALEX: "Sent"}),
    "sendgrid_event_bounce_hard.json": Effect(1, {EX: "Bounced"}),
    "sendgrid_event_bounce_hard.current.json": Effect(1, {ALEX: "Bounced"}),
    "sendgrid_event_bounce_blocked.json": Effect(1, {EX: "SoftBounced"}),
    "sendgrid_event_bounce_blocked.current.json": Effect(1, {ALEX: "SoftBounced"}),
    "sendgrid_event_open.json": Effect(1, {EX: "Opened"}),
    "sendgrid_event_open.current.json": Effect(1, {ALEX: "Opened"}),
    "sendgrid_event_click.json": Effect(1, {EX: "Clicked"}),
    "sendgrid_event_click_full.json": Effect(1, {EMAIL: "Clicked"}),
    "sendgrid_event_click_unique_args.json": Effect(1, {JOHN: "Clicked"}),
    "sendgrid_event_category_array.json": Effect(2, {JOHN: "Opened", JANE: "Opened"}),
    "sendgrid_event_spamreport.json": Effect(1, {EX: "Complained"}, unsubscribed=frozenset({EX})),
    "sendgrid_event_unsubscribe.json": Effect(
        1, {EX: "Unsubscribed"}, unsubscribed=frozenset({EX})
    ),
    "sendgrid_event_group_unsubscribe.json": Effect(
        1, {EX: "Unsubscribed"}, categories={EX: ["10"]}
    ),
    # a re-subscribe to group 10: nothing to lift here (see the module README)
    "sendgrid_event_group_resubscribe.json": Effect(1, {EX: "Pending"}),
    "sendgrid_event_legacy_newsletter_unsubscribe.json": Effect(
        1, {NICK: "Unsubscribed"}, unsubscribed=frozenset({NICK})
    ),
    "sendgrid_event_account_status_change.current.json": Effect(1),
    "sendgrid_event_singlesend_open.json": Effect(
        1, native={("sendgrid_singlesend_id", EMAIL): "Opened"}
    ),
    "sendgrid_event_mc_campaign_processed.object.json": Effect(
        1, native={("12345", EMAIL): "Sent"}
    ),
    "sendgrid_event_mc_ab_test_processed.object.json": Effect(1, native={("23314", TAD10): "Sent"}),
    "sendgrid_event_mc_ab_winner_delivered.object.json": Effect(
        1, native={("23314", TAD1): "Delivered"}
    ),
    # docs' one-of-each batch (placeholder ids must not collapse it): the complaint outranks
    # the rest; unsubscribed from everything; group 10 left, then re-subscribed (it comes last)
    "sendgrid_events_all.json": Effect(11, {EX: "Complained"}, unsubscribed=frozenset({EX})),
    "sendgrid_signed_single.body": Effect(1, {"hello@world.com": "Failed"}),
    "sendgrid_signed_multi.body": Effect(2, {"invalid@gmail.com": "SoftBounced"}),
}


def new_host(tmp_path: Path, pool: SandboxPool, **settings: Any) -> Host:
    host = make_host(tmp_path / "host.db", sandbox=pool)
    host.registry.upload(from_directory(MODULE_DIR, max_script_bytes=512 * 1024))
    host.tenants.create("acme", "Acme")
    host.tenants.configure("acme", "sendgrid", settings={"api_key": "SG.not-used-here", **settings})
    with host.db.transaction() as session:
        for index, email in enumerate(EVERYONE):
            session.add(
                Contact(tenant_id="acme", id=f"c{index}", name=email, email=email, email_key=email)
            )
        for external_id, emails in [(VARIANT, EVERYONE), *NATIVE.items()]:
            session.add(
                Campaign(
                    id=f"cmp-{external_id}",
                    tenant_id="acme",
                    module_id="sendgrid",
                    module_version="1.0.0",
                    type="Email",
                    name=external_id,
                    status="Sending",
                    external_id=external_id,
                )
            )
            for email in emails:
                session.add(
                    Delivery(
                        campaign_id=f"cmp-{external_id}",
                        contact_id=f"c{EVERYONE.index(email)}",
                        email_key=email,
                        status="Pending",
                        history=[],
                    )
                )
    return host


@pytest.fixture
def host(tmp_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = new_host(tmp_path, pool)
    yield instance
    instance.close()


def hook_path(host: Host) -> str:
    return urlsplit(host.tenants.enablement("acme", "sendgrid").webhook_url).path


def crm_state(host: Host) -> dict[str, Any]:
    """Deliveries, contact statuses and category unsubscribes, keyed by email."""
    with host.db.transaction() as session:
        deliveries = {
            (c.external_id, d.email_key): d.status
            for d, c in session.execute(
                select(Delivery, Campaign).join(Campaign, Campaign.id == Delivery.campaign_id)
            )
        }
        contacts = {c.id: c for c in session.scalars(select(Contact))}
        status = {c.email: c.status for c in contacts.values()}
        categories: dict[str, list[str]] = {}
        for row in session.scalars(select(ContactUnsubscription)):
            categories.setdefault(contacts[row.contact_id].email, []).append(row.category)
    return {"deliveries": deliveries, "status": status, "categories": categories}


def receipts(host: Host) -> list[tuple[int, int, str | None]]:
    with host.db.transaction() as session:
        rows = session.scalars(select(WebhookReceipt).order_by(WebhookReceipt.id))
        return [(r.status_code, r.applied, r.error) for r in rows]


def with_single_send(raw: bytes, single_send_id: str) -> bytes:
    """The sample's events tied to a campaign: other events, so other sg_event_ids (the host
    applies an event id once; the docs' placeholder ids stay as they are)."""
    events = json.loads(raw)
    events = events if isinstance(events, list) else [events]
    return json.dumps(
        [
            {
                **e,
                "singlesend_id": single_send_id,
                **(
                    {"sg_event_id": f"{e['sg_event_id']}-{single_send_id}"}
                    if "sg_event_id" in e and e["sg_event_id"] not in PLACEHOLDERS
                    else {}
                ),
            }
            for e in events
        ]
    ).encode()


def test_the_copied_samples_are_the_published_bytes() -> None:
    listed = {}
    for line in (VENDOR / "CHECKSUMS.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    events = {n for n in listed if n != "sendgrid_signed_vector.json"}
    assert events == set(EFFECTS), "every sample has an expected effect"


@pytest.mark.parametrize("name", sorted(EFFECTS))
def test_a_sample_posted_as_published_has_the_listed_effect(host: Host, name: str) -> None:
    effect = EFFECTS[name]
    raw = (VENDOR / name).read_bytes()
    before = crm_state(host)
    with TestClient(create_app(host)) as client:
        answer = client.post(
            hook_path(host), content=raw, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 200, receipts(host)
        assert answer.json() == {"received": effect.received}
        after = crm_state(host)
        expected = dict(before["deliveries"])
        expected.update(effect.native)
        assert after["deliveries"] == expected  # no campaign id → no delivery changed
        unsubscribed = {e for e, s in after["status"].items() if s == "Unsubscribed"}
        assert unsubscribed == set(effect.unsubscribed)
        assert after["categories"] == effect.categories

        if effect.variant:  # the same events, tied to a campaign
            variant = client.post(hook_path(host), content=with_single_send(raw, VARIANT))
            assert variant.status_code == 200, receipts(host)
            final = crm_state(host)["deliveries"]
            changed = {e: s for (c, e), s in final.items() if c == VARIANT and s != "Pending"}
            assert changed == {e: s for e, s in effect.variant.items() if s != "Pending"}


# --- signed webhooks ------------------------------------------------------------------------

VECTORS = json.loads((VENDOR / "sendgrid_signed_vector.json").read_text())


def vector_body(case: dict[str, Any]) -> bytes:
    if "body_literal" in case:
        return str(case["body_literal"]).encode()
    raw = (VENDOR / case["body_file"]).read_bytes()
    transform = case.get("body_transform", "")
    if transform.startswith("strip trailing"):
        return raw.removesuffix(b"\r\n")
    if transform.startswith("json.loads"):
        return json.dumps(json.loads(raw), indent=2).encode()
    return raw


def signed_headers(signature: str, timestamp: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature,
        TIMESTAMP_HEADER: timestamp,
    }


def post_signed(host: Host, body: bytes, headers: dict[str, str]) -> Any:
    with TestClient(create_app(host)) as client:
        return client.post(hook_path(host), content=body, headers=headers)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_signature_vectors(tmp_path: Path, pool: SandboxPool, case: dict[str, Any]) -> None:
    host = new_host(tmp_path, pool, webhook_public_key=case["public_key"])
    try:
        before = crm_state(host)
        body = vector_body(case)
        answer = post_signed(host, body, signed_headers(case["signature"], case["timestamp"]))
        if case["expect"]:
            assert answer.status_code == 200
            assert receipts(host)[-1][0] == 200
        else:
            assert answer.status_code in (401, 403)
            assert answer.json() == {"error": "invalid signature"}
            assert crm_state(host) == before
            assert receipts(host) == [(answer.status_code, 0, None)]
    finally:
        host.close()


def unsubscribe_batch(state: SendGridState) -> tuple[bytes, dict[str, str]]:
    events = [
        {
            "email": EX,
            "event": "delivered",
            "singlesend_id": VARIANT,
            "timestamp": 1,
            "sg_event_id": "ZGVsaXZlcmVkLTE",
        },
        {
            "email": EX,
            "event": "unsubscribe",
            "singlesend_id": VARIANT,
            "timestamp": 2,
            "sg_event_id": "dW5zdWJzY3JpYmUtMQ",
        },
    ]
    state.signed = True
    return state.webhook_request(events)


def test_a_signed_batch_is_applied_and_any_tampering_refused(tmp_path: Path, pool: SandboxPool):
    state = SendGridState()
    host = new_host(
        tmp_path, pool, webhook_public_key=state.public_key(), webhook_max_age_seconds=300
    )
    try:
        body, headers = unsubscribe_batch(state)
        before = crm_state(host)
        refused = [  # refused before any cryptography: no headers, a stale timestamp
            post_signed(host, body, {"Content-Type": "application/json"}),
            post_signed(host, body, {**headers, TIMESTAMP_HEADER: "1600000000"}),
        ]
        refused += [  # the signature does not cover these bytes
            post_signed(host, body.replace(b"unsubscribe", b"unsubscribd"), headers),
            post_signed(host, body + b" ", headers),
        ]
        assert [r.status_code for r in refused] == [401, 403, 403, 403]
        assert crm_state(host) == before
        assert [applied for _, applied, _ in receipts(host)] == [0, 0, 0, 0]

        accepted = post_signed(host, body, headers)
        assert accepted.status_code == 200
        after = crm_state(host)
        assert after["deliveries"][(VARIANT, EX)] == "Unsubscribed"
        assert after["status"][EX] == "Unsubscribed"
    finally:
        host.close()


def test_the_emulator_posts_signed_events_to_the_served_host(tmp_path: Path, pool: SandboxPool):
    state = SendGridState()
    host = new_host(tmp_path, pool, webhook_public_key=state.public_key())
    try:
        with serve(create_app(host)) as server:
            state.configure_webhook(server.url + hook_path(host), signed=True)
            events = [
                {
                    "email": ALEX,
                    "event": "bounce",
                    "type": "bounce",
                    "timestamp": 5,
                    "singlesend_id": VARIANT,
                    "sg_event_id": "Ym91bmNlLTE",
                }
            ]
            assert event_body(events).endswith(b"]\r\n")
            statuses = state.post_events(events)
        assert statuses == [200]
        assert crm_state(host)["deliveries"][(VARIANT, ALEX)] == "Bounced"
    finally:
        host.close()
