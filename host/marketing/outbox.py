"""The outbox: emails a module asked the host to send (SendEmail actions), delivered over an
SMTP relay by one background thread.

Queuing happens inside the webhook's transaction (so a rejected webhook queues nothing);
delivery happens later, outside any request, so a slow or unreachable relay never holds a
webhook up. Without a relay (``CRM_HOST_SMTP_HOST`` unset) messages stay ``queued`` and
visible, and are delivered once a relay is configured and the host restarts.

Each attempt is claimed with a conditional UPDATE on ``attempts`` (optimistic), so two
workers never make the same attempt. The retry delay is kept in memory: after a restart a
queued message is retried at once, and a second host process on the same database could
start the next attempt while the first is still talking to the relay, so run one outbox
worker per database (a persisted lease column would lift this). Delivery is at-least-once:
a crash between the relay's "250 OK" and the status update sends that message again.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from host.config import HostSettings
from host.db.engine import Database
from host.db.models import OutboxMessage

log = logging.getLogger(__name__)

QUEUED, SENT, FAILED = "queued", "sent", "failed"
MAX_RETRY_DELAY_S = 3600.0
MAX_ERROR_CHARS = 2000
MAX_RECIPIENT_CHARS = 320
BATCH = 50


@dataclass(frozen=True)
class SmtpRelay:
    """Where and how to hand mail over (stdlib ``smtplib``)."""

    host: str
    port: int = 25
    sender: str = "crm-host@localhost"
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: HostSettings) -> SmtpRelay | None:
        if not settings.smtp_host:
            return None
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_sender,
            starttls=settings.smtp_starttls,
            user=settings.smtp_user,
            password=password,
            timeout_s=settings.smtp_timeout_s,
        )

    @contextmanager
    def connect(self) -> Iterator[smtplib.SMTP]:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.user:
                smtp.login(self.user, self.password or "")
            yield smtp


def clean_header(value: str) -> str:
    """A header value without line breaks (a module must not inject headers)."""
    return " ".join(value.split())


def valid_recipient(address: str) -> bool:
    """Cheap shape check done when queuing (and within the 320 characters the recipient
    column holds); the relay has the final word."""
    local, at, domain = address.partition("@")
    return bool(
        at
        and local
        and "." in domain
        and len(address) <= MAX_RECIPIENT_CHARS
        and not any(c.isspace() for c in address)
    )


def queue_message(
    session: Session, tenant_id: str, module_id: str, recipient: str, subject: str, html: str
) -> OutboxMessage:
    """Add a queued message to the caller's transaction."""
    message = OutboxMessage(
        tenant_id=tenant_id,
        module_id=module_id,
        recipient=recipient.strip(),
        subject=clean_header(subject),
        html=html,
        status=QUEUED,
        attempts=0,
    )
    session.add(message)
    return message


def build_email(message: OutboxMessage, sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.recipient
    email["Subject"] = clean_header(message.subject)
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = make_msgid(idstring=f"outbox-{message.id}")
    email.set_content(message.html, subtype="html")
    return email


class OutboxWorker:
    """Delivers due queued messages; ``deliver_due()`` is one pass (tests call it
    directly), ``start()`` runs passes in a daemon thread until ``stop()``."""

    def __init__(
        self,
        db: Database,
        relay: SmtpRelay | None,
        *,
        max_attempts: int = 5,
        retry_s: float = 30.0,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.db = db
        self.relay = relay
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        self.poll_s = poll_s
        self.clock = clock
        self._not_before: dict[int, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, db: Database, settings: HostSettings) -> OutboxWorker:
        return cls(
            db,
            SmtpRelay.from_settings(settings),
            max_attempts=settings.outbox_max_attempts,
            retry_s=settings.outbox_retry_s,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread; without a relay there is nothing to deliver to."""
        if self.relay is None or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="crm-host-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)

    def wake(self) -> None:
        """New mail was committed: deliver now instead of at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_due()
            except Exception:
                log.exception("outbox pass failed")
            self._wake.wait(self._next_wait())
            self._wake.clear()

    def _next_wait(self) -> float:
        now = self.clock()
        upcoming = [t - now for t in self._not_before.values()]
        return max(0.01, min([self.poll_s, *upcoming]))

    # --- delivery -------------------------------------------------------------------------

    def retry_delay(self, attempts: int) -> float:
        """Exponential backoff after the ``attempts``-th failed attempt."""
        return float(min(self.retry_s * 2 ** (attempts - 1), MAX_RETRY_DELAY_S))

    def due(self) -> list[OutboxMessage]:
        now = self.clock()
        with self.db.transaction() as session:
            rows = session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.status == QUEUED)
                .order_by(OutboxMessage.id)
                .limit(BATCH * 4)
            ).all()
        return [m for m in rows if self._not_before.get(m.id, 0.0) <= now][:BATCH]

    def deliver_due(self) -> int:
        """One pass: try every due message once. Returns how many were attempted."""
        if self.relay is None:
            return 0
        messages = [m for m in self.due() if self._claim(m)]
        if not messages:
            return 0
        pending = list(messages)
        try:
            with self.relay.connect() as smtp:
                while pending:
                    self._send_one(smtp, pending[0])
                    pending.pop(0)
        except (OSError, smtplib.SMTPException) as exc:
            # The connection failed (refused, dropped, login rejected): every message not
            # yet settled in this pass failed this attempt.
            for message in pending:
                self._settle(message, f"{type(exc).__name__}: {exc}")
        return len(messages)

    def _claim(self, message: OutboxMessage) -> bool:
        with self.db.transaction() as session:
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.status == QUEUED,
                    OutboxMessage.attempts == message.attempts,
                )
                .values(attempts=message.attempts + 1)
            )
            claimed = result.rowcount
        if claimed:
            message.attempts += 1
        return bool(claimed)

    def _send_one(self, smtp: smtplib.SMTP, message: OutboxMessage) -> None:
        assert self.relay is not None
        try:
            smtp.send_message(build_email(message, self.relay.sender))
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPException as exc:
            self._settle(message, _describe(exc))
            return
        self._settle(message, None)

    def _settle(self, message: OutboxMessage, error: str | None) -> None:
        """Record an attempt's outcome: sent, queued for a retry, or failed for good."""
        if error is None:
            status = SENT
        elif message.attempts >= self.max_attempts:
            status = FAILED
        else:
            status = QUEUED
        with self.db.transaction() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message.id)
                .values(
                    status=status,
                    error=error[:MAX_ERROR_CHARS] if error else None,
                    sent_at=datetime.now(UTC) if status == SENT else None,
                )
            )
        message.status = status
        if status == QUEUED:
            self._not_before[message.id] = self.clock() + self.retry_delay(message.attempts)
        else:
            self._not_before.pop(message.id, None)
        if status == FAILED:
            log.warning("outbox message %s failed after %s attempts", message.id, message.attempts)


def _describe(exc: smtplib.SMTPException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"recipient {rcpt} refused: {code} {_text(reply)}"
            for rcpt, (code, reply) in exc.recipients.items()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


@dataclass(frozen=True)
class OutboxEntry:
    """A queued, sent or failed mail, without its HTML."""

    id: int
    module: str
    recipient: str
    subject: str
    status: str
    attempts: int
    error: str | None
    created_at: datetime
    sent_at: datetime | None


def list_messages(
    db: Database, tenant_id: str, *, status: str | None = None, limit: int = 100
) -> list[OutboxEntry]:
    """A tenant's outbox, newest first, without the HTML (what an admin checks: was it
    sent, how many attempts, what the relay said)."""
    query = select(OutboxMessage).where(OutboxMessage.tenant_id == tenant_id)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    with db.transaction() as session:
        rows = session.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit)).all()
        return [
            OutboxEntry(
                id=row.id,
                module=row.module_id,
                recipient=row.recipient,
                subject=row.subject,
                status=row.status,
                attempts=row.attempts,
                error=row.error,
                created_at=row.created_at,
                sent_at=row.sent_at,
            )
            for row in rows
        ]
