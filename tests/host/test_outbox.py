"""The outbox against a REAL local SMTP server (aiosmtpd on 127.0.0.1, a free port): mail
arrives with the right envelope, subject and HTML; a refused recipient fails after the
configured attempts with the relay's answer; an unreachable relay retries with backoff; no
relay leaves mail queued; the Host's background worker delivers what a webhook queued."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from host.api.app import create_app
from host.contract.types import SendEmailAction
from host.db.models import OutboxMessage, Tenant
from host.marketing.outbox import OutboxWorker, SmtpRelay, queue_message
from host.platform import Host
from tests.host.conftest import ADMIN_TOKEN, make_host

REFUSED = "nobody@refused.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every message; refuses one recipient with 550."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def parsed(self, index: int = 0) -> email.message.EmailMessage:
        message = email.message_from_bytes(self.messages[index][2], policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        return message


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    instance = make_host(tmp_path / "host.db")
    with instance.db.transaction() as session:
        session.add(Tenant(id="acme", name="Acme", api_key_hash="h"))
    yield instance
    instance.close()


def queue(host: Host, recipient: str, subject: str = "Welcome", html: str = "<h1>Hi</h1>") -> int:
    with host.db.transaction() as session:
        message = queue_message(session, "acme", "sendmail", recipient, subject, html)
        session.flush()
        return message.id


def stored(host: Host, message_id: int) -> OutboxMessage:
    with host.db.transaction() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


def worker(host: Host, port: int, clock: Clock, **options: Any) -> OutboxWorker:
    relay = SmtpRelay("127.0.0.1", port, sender="crm@host.test", timeout_s=5)
    return OutboxWorker(host.db, relay, clock=clock, **{"retry_s": 10.0, **options})


def test_message_arrives_with_recipient_subject_and_html(
    host: Host, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    message_id = queue(
        host, "ann@example.test", "Please confirm", "<p>Click <a href='x'>here</a></p>"
    )
    assert worker(host, port, Clock()).deliver_due() == 1
    [(sender, recipients, _)] = inbox.messages
    assert (sender, recipients) == ("crm@host.test", ["ann@example.test"])
    parsed = inbox.parsed()
    assert parsed["Subject"] == "Please confirm"
    assert parsed["To"] == "ann@example.test" and parsed["From"] == "crm@host.test"
    assert parsed.get_content_type() == "text/html"
    assert parsed.get_content().strip() == "<p>Click <a href='x'>here</a></p>"
    row = stored(host, message_id)
    assert (row.status, row.attempts, row.error) == ("sent", 1, None)
    assert row.sent_at is not None


def test_refused_recipient_fails_after_retries_with_backoff(
    host: Host, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    clock = Clock()
    bad = queue(host, REFUSED)
    good = queue(host, "bob@example.test")
    outbox = worker(host, port, clock, max_attempts=3)
    assert outbox.deliver_due() == 2  # one connection: bob delivered, the refusal retried
    assert stored(host, good).status == "sent"
    assert (stored(host, bad).status, stored(host, bad).attempts) == ("queued", 1)
    assert outbox.deliver_due() == 0  # backing off: not due yet
    clock.now += 10  # first retry after retry_s
    assert outbox.deliver_due() == 1
    clock.now += 10  # the second retry waits twice as long
    assert outbox.deliver_due() == 0
    clock.now += 10
    assert outbox.deliver_due() == 1
    row = stored(host, bad)
    assert (row.status, row.attempts) == ("failed", 3)
    assert "550" in row.error and REFUSED in row.error
    clock.now += 10_000
    assert outbox.deliver_due() == 0  # failed is final
    assert [m[1] for m in inbox.messages] == [["bob@example.test"]]


def test_unreachable_relay_retries_then_fails(host: Host) -> None:
    clock = Clock()
    message_id = queue(host, "ann@example.test")
    outbox = worker(host, free_port(), clock, max_attempts=2)  # nothing listens there
    assert outbox.deliver_due() == 1
    assert stored(host, message_id).status == "queued"
    assert "ConnectionRefusedError" in (stored(host, message_id).error or "")
    clock.now += 10
    outbox.deliver_due()
    assert (stored(host, message_id).status, stored(host, message_id).attempts) == ("failed", 2)


def test_without_a_relay_mail_stays_queued(host: Host) -> None:
    message_id = queue(host, "ann@example.test")
    assert host.outbox.relay is None
    host.outbox.start()  # no thread without a relay
    assert host.outbox._thread is None
    assert host.outbox.deliver_due() == 0
    assert (stored(host, message_id).status, stored(host, message_id).attempts) == ("queued", 0)


def test_an_attempt_is_claimed_once(host: Host, smtp: tuple[Inbox, int]) -> None:
    _inbox, port = smtp
    queue(host, "ann@example.test")
    first, second = worker(host, port, Clock()), worker(host, port, Clock())
    seen_by_first, seen_by_second = first.due(), second.due()  # both saw attempt 0
    assert first._claim(seen_by_first[0]) is True
    assert second._claim(seen_by_second[0]) is False  # lost the race for that attempt


def test_host_worker_delivers_what_an_action_queued(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    instance = make_host(
        tmp_path / "host.db", smtp_host="127.0.0.1", smtp_port=port, smtp_sender="crm@host.test"
    )
    try:
        assert instance.outbox._thread is None  # an opened host runs no thread
        instance.start()
        assert instance.outbox._thread is not None
        with instance.db.transaction() as session:
            session.add(Tenant(id="acme", name="Acme", api_key_hash="h"))
        action = SendEmailAction(
            type="SendEmail", email="ann@example.test", subject="Hi", html="<i>x</i>"
        )
        instance.actions.apply("acme", "sendmail", [action])  # wakes the worker
        deadline = time.monotonic() + 10
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert inbox.parsed()["Subject"] == "Hi"
        while time.monotonic() < deadline:
            with instance.db.transaction() as session:
                if session.scalars(select(OutboxMessage.status)).one() == "sent":
                    break
            time.sleep(0.02)
        else:
            pytest.fail("message never marked sent")
    finally:
        instance.close()
    assert instance.outbox._thread is None


def test_outbox_is_listed_through_the_api(host: Host) -> None:
    queue(host, "ann@example.test", "Queued one", "<p>big html</p>")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(host)) as client:
        [listed] = client.get("/api/v1/tenants/acme/outbox", headers=admin).json()
        assert (listed["recipient"], listed["subject"], listed["status"]) == (
            "ann@example.test",
            "Queued one",
            "queued",
        )
        assert "html" not in listed
        assert client.get("/api/v1/tenants/acme/outbox?status=sent", headers=admin).json() == []
        assert client.get("/api/v1/tenants/nosuch/outbox", headers=admin).status_code == 404
