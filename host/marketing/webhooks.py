"""A request on a module's webhook URL, end to end: find the (tenant, module) the URL's token
belongs to, hand the request to the module's ``CRM_Marketing_ParseWebhookRequest`` as a
FetchRequest, apply the returned actions in one transaction, answer with the module's
``response``. Every request that reaches a real target leaves a WebhookReceipt, so an admin
can see why an event changed nothing.

Decisions a module author relies on:

* **Body text.** ``request.body`` is the raw body decoded as UTF-8 when it is valid UTF-8
  (every JSON or form webhook), otherwise as ISO-8859-1 (latin-1), which maps each byte to
  one character and so never fails and loses nothing. The host says which it used in the
  header ``x-crm-host-body-encoding`` (``utf-8`` or ``latin-1``; a header of that name sent by
  the caller is replaced). A module verifying a signature over the exact bytes does::

      raw = request.body.encode(request.headers["x-crm-host-body-encoding"])
      expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()

  Both decodings round-trip exactly, so ``raw`` is byte for byte what the service signed.
* **Headers** are a str→str mapping with lower-case names; a header sent several times is
  joined with ", " (RFC 9110 §5.3). **query** maps each name to a string, or to a list of
  strings when the name repeats. **url** is the full URL as received (with the token).
* **Response.** The module's ``response`` keeps its status and body: a body is sent as text
  (``text/plain; charset=utf-8`` unless the module set Content-Type) when it is a string, as
  ``application/json`` when it is any other JSON value, empty when None. No ``response`` at
  all answers ``200 {"ok": true}``; a 1xx status becomes 200 (it cannot end an exchange).
* **Response headers** are what a third party chose, served on a host origin, so only those a
  webhook caller needs are kept: ``Content-Type``, ``Cache-Control``, ``Retry-After``,
  ``WWW-Authenticate``, and ``Location`` on a 3xx. Everything else (``Set-Cookie``,
  ``Refresh``, CORS, framing headers, ...) and any value that is not valid HTTP (line
  breaks) is dropped; a name given twice in different case is kept once. Every reply carries
  ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox``, so even an
  HTML body cannot run script or act as the host's page in a browser. With
  ``CRM_HOST_WEBHOOK_BASE_URL`` set, replies are also on an origin of their own
  (:mod:`host.api.webhook_origin`).
  Secret settings are masked (``***``) in the body and the header values, like all script
  output.
* **Failures.** A module that raises, times out or returns an invalid value → 500 (501 when
  it does not implement the function) with ``{"error": kind, "message": ...}`` and nothing
  applied; the details go to the receipt and the invocation log, not to the caller. Actions
  that cannot be applied → 500 ``apply_failed``. Either way the module's storage writes of
  that request are not kept (only its ``durable=True`` writes, which commit at once).
* **Stored requests and replay.** Every request that reached a module (failed ones too) is
  stored sealed with its receipt (:mod:`host.marketing.webhook_store`), so an admin can
  replay it against the pinned or another version, for real or as a dry run
  (:mod:`host.marketing.webhook_replay`). A receipt keeps the actions the module returned
  (masked), so a shadow run of another version can diff against them
  (:mod:`host.marketing.shadow_runs`).
* **Acknowledge-first intake.** A module whose manifest has ``"webhook": {"mode":
  "acknowledge-first"}`` is not called while the service waits: the request is stored and
  answered ``200 {"ok": true}`` at once, then run in the background with retries
  (:mod:`host.marketing.webhook_backlog`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from host.calls import ModuleResult, mask_secrets
from host.contract.types import FetchRequest, WebhookResponse, WebhookResult
from host.db.engine import Database
from host.db.models import WebhookReceipt, WebhookRequest
from host.errors import Conflict, ModuleCallFailed, NotFound
from host.invoker import ModuleInvoker
from host.marketing.action_diff import action_records
from host.marketing.actions import ActionApplier, ApplyOutcome, describe_all
from host.marketing.webhook_backlog import WebhookBacklog
from host.marketing.webhook_store import list_requests, open_request, seal_request, store_request
from host.secrets import SecretBox
from host.tenants import RuntimeEnablement, TenantService
from sandbox.invocation import redact_data

log = logging.getLogger(__name__)

FUNCTION = "CRM_Marketing_ParseWebhookRequest"
BODY_ENCODING_HEADER = "x-crm-host-body-encoding"
MAX_ERROR_CHARS = 2000
KEPT_RESPONSE_HEADERS = frozenset(
    {"content-type", "cache-control", "retry-after", "www-authenticate"}
)
"""Module response headers passed to the caller (lower-case); ``location`` only on a 3xx."""
REPLY_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}
"""Added to every webhook reply: no MIME sniffing, and a body rendered in a browser is a
sandboxed document (no script, no forms, an opaque origin)."""
HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
DEFAULT_BODY = {"ok": True}


@dataclass(frozen=True)
class IncomingRequest:
    """The HTTP request as the route received it, before any interpretation."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]]
    query_string: str
    body: bytes


@dataclass(frozen=True)
class WebhookReply:
    """What to answer the caller."""

    status: int
    headers: dict[str, str]
    body: bytes
    media_type: str | None = None


def decode_body(raw: bytes) -> tuple[str, str]:
    """The body as text and the encoding that gives back the exact bytes."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def parse_query(query_string: str) -> dict[str, str | list[str]]:
    query: dict[str, str | list[str]] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        current = query.get(name)
        if current is None:
            query[name] = value
        elif isinstance(current, list):
            current.append(value)
        else:
            query[name] = [current, value]
    return query


def fetch_request(incoming: IncomingRequest) -> dict[str, Any]:
    """The FetchRequest the module receives (see the module docstring)."""
    headers: dict[str, str] = {}
    for name, value in incoming.headers:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    body, encoding = decode_body(incoming.body)
    headers[BODY_ENCODING_HEADER] = encoding
    request = FetchRequest(
        method=incoming.method.upper(),
        url=incoming.url,
        headers=headers,
        body=body,
        query=parse_query(incoming.query_string),
    )
    return request.model_dump(mode="json")


def json_reply(status: int, body: Any) -> WebhookReply:
    return WebhookReply(
        status, dict(REPLY_SECURITY_HEADERS), json.dumps(body).encode(), "application/json"
    )


def kept_headers(status: int, headers: dict[str, str]) -> dict[str, str]:
    """The module's headers that may reach the caller, lower-cased, first spelling wins."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        allowed = key in KEPT_RESPONSE_HEADERS or (key == "location" and 300 <= status < 400)
        if allowed and key not in kept and HEADER_VALUE.fullmatch(value):
            kept[key] = value
    return kept


def reply_from(response: WebhookResponse | None) -> WebhookReply:
    """The module's response made safe to send (see the module docstring)."""
    if response is None:
        return json_reply(200, DEFAULT_BODY)
    status = response.status if response.status >= 200 else 200
    headers = kept_headers(status, response.headers)
    has_type = "content-type" in headers
    headers.update(REPLY_SECURITY_HEADERS)
    body = response.body
    if status in (204, 304) or body is None:
        return WebhookReply(status, headers, b"", None)
    if isinstance(body, str):
        return WebhookReply(
            status, headers, body.encode(), None if has_type else "text/plain; charset=utf-8"
        )
    return WebhookReply(
        status, headers, json.dumps(body).encode(), None if has_type else "application/json"
    )


def masked_response(
    response: WebhookResponse | None, secrets: Sequence[str]
) -> WebhookResponse | None:
    """The module's response with every secret masked in its body and headers: the reply to
    the caller is script output, and the caller is whoever knows the URL."""
    if response is None or not secrets:
        return response
    return response.model_copy(
        update={
            "headers": redact_data(response.headers, secrets),
            "body": redact_data(response.body, secrets),
        }
    )


def failure_reply(status: int, kind: str) -> WebhookReply:
    """A small body for the caller; what went wrong is in the receipt, not here."""
    return json_reply(status, {"error": kind, "message": "the webhook could not be processed"})


@dataclass(frozen=True)
class Provenance:
    """Where a processed request comes from: its stored copy (None: not stored yet, store
    it) and, for a replay, the receipt it replays."""

    request_id: int | None = None
    replay_of: int | None = None


@dataclass(frozen=True)
class Processed:
    """One request processed: the reply, its receipt and the actions' outcome (None when
    the module or applying failed)."""

    reply: WebhookReply
    receipt_id: int | None
    outcome: ApplyOutcome | None


@dataclass(frozen=True)
class Staged:
    """A successful call's value made ready before the write transaction opens: the reply
    to send (secrets masked), the actions described for the receipt's applied/skipped lists
    and recorded (masked) for shadow runs."""

    result: WebhookResult
    reply: WebhookReply
    descriptions: list[dict[str, Any]]
    records: list[dict[str, Any]]

    @classmethod
    def of(cls, result: WebhookResult, secrets: Sequence[str]) -> Staged:
        return cls(
            result,
            reply_from(masked_response(result.response, secrets)),
            describe_all(result.actions),
            action_records(result.actions, secrets),
        )


RECEIPT_INSERT = insert(WebhookReceipt.__table__)  # type: ignore[arg-type]
"""Built once: the values travel as parameters, so the statement is never rebuilt."""


def insert_receipt(session: Session, **values: Any) -> int:
    """Add a receipt in the caller's transaction; its id. A Core INSERT: a live webhook
    writes its receipt inside its write transaction."""
    inserted = session.connection().execute(RECEIPT_INSERT, values)
    key = inserted.inserted_primary_key
    assert key is not None  # an INSERT of one row with an autoincrement id
    return int(key[0])


class ApplyFailed(Exception):
    """Applying a webhook's actions (or writing its receipt) failed: everything of the
    request, its storage writes included, is rolled back and the receipt says why."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def request_size(incoming: IncomingRequest) -> int:
    """Bytes a stored request counts against the tenant's quota (body and headers)."""
    return len(incoming.body) + sum(len(k) + len(v) for k, v in incoming.headers)


def incoming_of(box: SecretBox, sealed: str) -> IncomingRequest:
    """A stored request as the route received it."""
    opened = open_request(box, sealed)
    return IncomingRequest(
        opened["method"], opened["url"], opened["headers"], opened["query"], opened["body"]
    )


@dataclass(frozen=True)
class ReceiptView:
    """What one request on a webhook URL led to: the status answered, the actions applied,
    the skipped ones with their reasons, or the error."""

    id: int
    module: str
    received_at: datetime
    status: int
    applied: int
    skipped: list[Any]
    error: str | None
    version: str | None = None
    request_id: int | None = None
    replay_of: int | None = None


class WebhookReceiver:
    """Serves ``ANY /hooks/{tenant}/{module}/{token}`` for the HTTP route (and embedders)."""

    def __init__(
        self,
        db: Database,
        tenants: TenantService,
        invoker: ModuleInvoker,
        actions: ActionApplier,
        box: SecretBox,
        *,
        max_body_bytes: int,
        store_requests: bool = True,
        retry_attempts: int = 5,
        retry_s: float = 10.0,
        background_workers: int = 2,
        on_receipt: Callable[[int], None] | None = None,
    ):
        self.db = db
        #: told the HTTP status of every receipt once it is committed (metrics count them)
        self.on_receipt = on_receipt
        self.tenants = tenants
        self.invoker = invoker
        self.actions = actions
        self.box = box
        self.max_body_bytes = max_body_bytes
        self.store_requests = store_requests
        self.backlog = WebhookBacklog(
            self.process_stored,
            max_attempts=retry_attempts,
            retry_s=retry_s,
            workers=background_workers,
        )

    def target(self, tenant_id: str, module_id: str, token: str) -> RuntimeEnablement:
        """The enabled module the URL points to. Unknown tenant, module or token and a
        disabled module all raise the same NotFound, so a probe learns nothing."""
        try:
            return self.tenants.webhook_target(tenant_id, module_id, token)
        except (NotFound, Conflict):
            raise NotFound("no such webhook") from None

    def refuse_oversized(self, target: RuntimeEnablement) -> WebhookReply:
        """413 for a body over the cap; the module is not called (nor the body stored)."""
        error = f"body_too_large: over {self.max_body_bytes} bytes"
        self._record_failure(target, 413, error, None, Provenance())
        return failure_reply(413, "body_too_large")

    def handle(self, target: RuntimeEnablement, incoming: IncomingRequest) -> WebhookReply:
        """Call the module and apply its actions; never raises for the module's faults. A
        module with acknowledge-first intake is only stored and queued here."""
        if target.manifest.acknowledges_first:
            return self._acknowledge(target, incoming)
        return self.process(target, incoming, Provenance()).reply

    def _acknowledge(self, target: RuntimeEnablement, incoming: IncomingRequest) -> WebhookReply:
        """Store the request as pending and answer 200 at once; the backlog runs it. Stored
        even with storing turned off (0 bytes per tenant): it is the only copy."""
        sealed = self._sealed(incoming)
        try:
            with self.db.transaction() as session:
                request_id = store_request(
                    session,
                    target.tenant_id,
                    target.module_id,
                    sealed,
                    request_size(incoming),
                    pending=True,
                )
        except Exception:
            log.exception("could not store a webhook request of %s", target.module_id)
            return failure_reply(503, "unavailable")  # the service retries later
        self.backlog.submit(request_id)
        return json_reply(200, DEFAULT_BODY)

    def pending_requests(self) -> list[int]:
        """Acknowledged requests not processed yet (a restart resumes them), oldest first."""
        with self.db.transaction() as session:
            return list(
                session.scalars(
                    select(WebhookRequest.id)
                    .where(WebhookRequest.pending.is_(True))
                    .order_by(WebhookRequest.id)
                )
            )

    def process_stored(self, request_id: int, last_attempt: bool) -> bool:
        """Run an acknowledged request on the module's pinned version (for the backlog);
        False asks for a retry. A module disabled or removed meanwhile ends it."""
        with self.db.transaction() as session:
            row = session.get(WebhookRequest, request_id)
            if row is None or not row.pending:
                return True
            tenant_id, module_id, sealed = row.tenant_id, row.module_id, row.sealed
        try:
            target = self.tenants.runtime(tenant_id, module_id)
            processed = self.process(target, incoming_of(self.box, sealed), Provenance(request_id))
        except (NotFound, Conflict) as exc:
            log.warning("webhook request %s dropped: %s", request_id, exc)
            processed = None
        if processed is not None and processed.outcome is None and not last_attempt:
            return False
        with self.db.transaction() as session:
            row = session.get(WebhookRequest, request_id)
            if row is not None:
                row.pending = False
        return True

    def process(
        self, target: RuntimeEnablement, incoming: IncomingRequest, origin: Provenance
    ) -> Processed:
        """Call the module and apply its actions, storing the request with the receipt.

        The call's storage writes, the actions, the stored request and the receipt are
        committed in ONE transaction by the invoker (:meth:`ModuleInvoker.call_resolved`),
        so a request that failed — the module, its value, or applying the actions — keeps
        none of them (its request and a failure receipt are then stored on their own)."""
        tenant_id, module_id = target.tenant_id, target.module_id
        staged: list[Staged] = []
        done: list[Processed] = []
        # sealed now, outside the write transaction: it holds the database's write lock
        keep = origin.request_id is None and self.store_requests
        sealed = self._sealed(incoming) if keep else None

        def stage(called: ModuleResult) -> None:
            """Everything that needs no database, before the write transaction opens."""
            try:
                staged.append(Staged.of(called.value, target.secret_values))
            except Exception as exc:
                raise ApplyFailed(exc) from exc

        def commit_with(session: Session, _called: ModuleResult) -> None:
            """Inside the write transaction: statements only."""
            ready = staged[0]
            try:
                outcome = self.actions.apply_in(
                    session, tenant_id, module_id, ready.result.actions, ready.descriptions
                )
                receipt_id = insert_receipt(
                    session,
                    tenant_id=tenant_id,
                    module_id=module_id,
                    status_code=ready.reply.status,
                    applied=len(outcome.applied),
                    skipped=outcome.skipped,
                    request_id=self._stored(session, target, incoming, origin, sealed),
                    replay_of=origin.replay_of,
                    module_version=target.version,
                    actions=ready.records,
                )
            except Exception as exc:
                raise ApplyFailed(exc) from exc
            done.append(Processed(ready.reply, receipt_id, outcome))

        try:
            self.invoker.call_resolved(
                target,
                FUNCTION,
                effects=commit_with,
                prepare=stage,
                request=fetch_request(incoming),
            )
        except ModuleCallFailed as exc:
            status = 501 if exc.kind == "not_implemented" else 500
            receipt_id = self._record_failure(
                target, status, f"{exc.kind}: {exc.message}", incoming, origin, sealed
            )
            return Processed(failure_reply(status, exc.kind), receipt_id, None)
        except ApplyFailed as failed:
            cause = failed.cause
            log.exception("applying webhook actions of %s/%s failed", tenant_id, module_id)
            error = f"apply_failed: {type(cause).__name__}: {cause}"
            receipt_id = self._record_failure(target, 500, error, incoming, origin, sealed)
            return Processed(failure_reply(500, "apply_failed"), receipt_id, None)
        except (NotFound, Conflict):
            # disabled or removed between the lookup and the call
            raise NotFound("no such webhook") from None
        processed = done[0]
        assert processed.outcome is not None
        self._receipt_recorded(processed.reply.status)
        self.actions.announce(tenant_id, module_id, staged[0].result.actions, processed.outcome)
        return processed

    def _stored(
        self,
        session: Session,
        target: RuntimeEnablement,
        incoming: IncomingRequest | None,
        origin: Provenance,
        sealed: str | None = None,
    ) -> int | None:
        """The id of the request's stored copy, storing it now unless it already is (a
        replay, a background run), it is not to be kept (no ``incoming``: an oversized
        body) or storing is turned off. ``sealed``: the request sealed beforehand."""
        if origin.request_id is not None:
            return origin.request_id
        if incoming is None or not self.store_requests:
            return None
        sealed = sealed or self._sealed(incoming)
        return store_request(
            session, target.tenant_id, target.module_id, sealed, request_size(incoming)
        )

    def _sealed(self, incoming: IncomingRequest) -> str:
        return seal_request(
            self.box,
            incoming.method,
            incoming.url,
            incoming.headers,
            incoming.query_string,
            incoming.body,
        )

    def _record_failure(
        self,
        target: RuntimeEnablement,
        status: int,
        error: str,
        incoming: IncomingRequest | None,
        origin: Provenance,
        sealed: str | None = None,
    ) -> int | None:
        masked = mask_secrets(error, target.secret_values) or error
        try:
            with self.db.transaction() as session:
                receipt_id = insert_receipt(
                    session,
                    tenant_id=target.tenant_id,
                    module_id=target.module_id,
                    status_code=status,
                    applied=0,
                    skipped=[],
                    error=masked[:MAX_ERROR_CHARS],
                    request_id=self._stored(session, target, incoming, origin, sealed),
                    replay_of=origin.replay_of,
                    module_version=target.version,
                )
        except Exception:
            log.exception("could not record a webhook receipt")
            return None
        self._receipt_recorded(status)
        return receipt_id

    def _receipt_recorded(self, status: int) -> None:
        if self.on_receipt is not None:
            self.on_receipt(status)

    # --- stored requests and replay ----------------------------------------------------

    def stored_requests(
        self, tenant_id: str, *, module_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The tenant's stored requests, newest first, masked for display."""
        secrets = self.tenants.secret_values_of(tenant_id)
        return list_requests(
            self.db, self.box, tenant_id, secrets, module_id=module_id, limit=limit
        )

    def receipts(self, tenant_id: str, *, limit: int = 100) -> list[ReceiptView]:
        """The tenant's latest webhook receipts, newest first: what each request led to."""
        with self.db.transaction() as session:
            rows = session.scalars(
                select(WebhookReceipt)
                .where(WebhookReceipt.tenant_id == tenant_id)
                .order_by(WebhookReceipt.id.desc())
                .limit(limit)
            ).all()
            return [
                ReceiptView(
                    id=row.id,
                    module=row.module_id,
                    received_at=row.received_at,
                    status=row.status_code,
                    applied=row.applied,
                    skipped=row.skipped,
                    error=row.error,
                    version=row.module_version,
                    request_id=row.request_id,
                    replay_of=row.replay_of,
                )
                for row in rows
            ]
