"""Idempotent creation: a request sent with an ``Idempotency-Key`` header is carried out once;
a retry with the same key gets the first answer again (a CRM that timed out and retries does
not create a second campaign).

* A key is scoped to (tenant, route): the same key on another route or of another tenant is
  another key. It is 1-255 visible ASCII characters.
* The first answer (status and body) is stored with a SHA-256 of the request, in the **same
  transaction** as the effect itself: a crash leaves either both or neither, never a campaign
  without its key or a key without its campaign.
* The key row is the first thing the effect's transaction writes, and (tenant, route, key) is
  its primary key. Two concurrent requests with one key cannot both commit: the second waits
  for the first (SQLite's write lock, PostgreSQL's unique index), then fails, its effect is
  rolled back, and it answers with what the first stored.
* The same key with a different request is a 422 naming the header; nothing is done.
* A request that fails (4xx) stores nothing, so a corrected retry may reuse the key.
* Keys expire :data:`KEY_TTL` after the first answer; after that the key is free again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import IdempotencyKey, utcnow
from host.errors import InvalidInput, Problem

HEADER = "Idempotency-Key"
LOCATION = f"header.{HEADER}"
KEY_TTL = timedelta(hours=24)
"""How long a first answer is replayed to retries."""

_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def fingerprint(*parts: str | bytes) -> str:
    """SHA-256 of a request's parts (each length-prefixed, so parts cannot run together)."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big") + raw)
    return digest.hexdigest()


class KeyTaken(Exception):
    """A concurrent request with the same key committed first; this one's effect rolled
    back."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Any
    replayed: bool


@dataclass(frozen=True)
class IdempotentRequest:
    """One request with a key; the service carrying it out calls :meth:`claim` first and
    :meth:`complete` last inside the transaction of its effect."""

    tenant_id: str
    route: str
    key: str
    request_sha256: str
    now: datetime = field(default_factory=utcnow)

    def _pk(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.route, self.key)

    def claim(self, session: Session) -> None:
        """Write the key first (an expired one is dropped): SQLite then holds its write
        lock before the effect reads anything, and a concurrent duplicate waits here."""
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == self.tenant_id,
                IdempotencyKey.route == self.route,
                IdempotencyKey.key == self.key,
                IdempotencyKey.expires_at <= self.now,
            )
        )
        session.add(
            IdempotencyKey(
                tenant_id=self.tenant_id,
                route=self.route,
                key=self.key,
                request_sha256=self.request_sha256,
                status_code=0,
                response=None,
                created_at=self.now,
                expires_at=self.now + KEY_TTL,
            )
        )
        try:
            session.flush()
        except IntegrityError:
            raise KeyTaken from None

    def complete(self, session: Session, status_code: int, body: Any) -> None:
        row = session.get(IdempotencyKey, self._pk())
        assert row is not None, "complete() without claim()"
        row.status_code = status_code
        row.response = body


class IdempotencyKeys:
    """Looks keys up and runs effects under them (see the module doc)."""

    def __init__(self, db: Database):
        self.db = db

    @staticmethod
    def request(
        tenant_id: str, route: str, key: str | None, request_sha256: str
    ) -> IdempotentRequest | None:
        """The request for ``key`` (the header's value), None without a header; a malformed
        key is a 422 naming the header."""
        if key is None:
            return None
        if not _KEY.fullmatch(key):
            raise InvalidInput(
                "request is invalid",
                [Problem(LOCATION, "must be 1-255 visible ASCII characters")],
            )
        return IdempotentRequest(tenant_id, route, key, request_sha256)

    def stored(self, request: IdempotentRequest) -> Answer | None:
        """The live answer stored for the request's key; a 422 if the key was used for
        another request."""
        with self.db.transaction() as session:
            row = session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.tenant_id == request.tenant_id,
                    IdempotencyKey.route == request.route,
                    IdempotencyKey.key == request.key,
                    IdempotencyKey.expires_at > utcnow(),
                )
            )
            if row is None:
                return None
            if row.request_sha256 != request.request_sha256:
                raise InvalidInput(
                    "request is invalid",
                    [
                        Problem(
                            LOCATION,
                            "was already used with a different request; use a new key for "
                            "a new request",
                        )
                    ],
                )
            return Answer(row.status_code, row.response, replayed=True)

    def run(
        self,
        request: IdempotentRequest | None,
        effect: Callable[[IdempotentRequest | None], tuple[int, Any]],
    ) -> Answer:
        """The stored answer for a repeated key, else the effect's (which stores it)."""
        if request is not None and (answer := self.stored(request)) is not None:
            return answer
        try:
            status_code, body = effect(request)
        except KeyTaken:
            assert request is not None
            answer = self.stored(request)
            if answer is None:  # the first one's key expired in between: vanishingly rare
                raise
            return answer
        return Answer(status_code, body, replayed=False)
