"""Admin credentials that persist across restarts: named tokens, stored as SHA-256 only.

On the first start with no ``CRM_HOST_ADMIN_TOKEN`` and no stored token, ``serve`` creates one
named ``default`` and prints it once; later starts print nothing and the same token keeps
working. Operators add one token per person or system (``crm-host admin token create NAME``),
rotate one (``rotate NAME``: a new value under the same name, the old one stops working at
once) and revoke one; either ends the console sessions signed in with it, as a leaked token
is what they are for. ``CRM_HOST_ADMIN_TOKEN``, when set, is accepted as well: deployments that
keep the credential in a secret store keep working. A console session remembers the SHA-256 of
the value it began with and lives only while :meth:`AdminTokens.still_holds` it, so changing or
removing ``CRM_HOST_ADMIN_TOKEN`` between restarts ends that token's sessions too.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import AdminToken, ConsoleSession
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.secrets import hash_api_key, new_admin_token

DEFAULT_NAME = "default"
CONFIGURED_NAME = "configured"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class AdminTokenInfo:
    name: str
    created_at: datetime


class AdminTokens:
    """The stored admin tokens of one database, plus the configured one."""

    def __init__(self, db: Database, configured: str | None = None):
        self.db = db
        self._configured = configured

    def is_admin(self, token: str) -> bool:
        return self.name_of(token) is not None

    def name_of(self, token: str) -> str | None:
        """The name of the admin token ``token`` is (``CRM_HOST_ADMIN_TOKEN`` is named
        ``configured``), else None: how the audit log names who used it."""
        if self._configured and hmac.compare_digest(token.encode(), self._configured.encode()):
            return CONFIGURED_NAME
        digest = hash_api_key(token)
        with self.db.transaction() as session:
            return session.scalar(select(AdminToken.name).where(AdminToken.token_sha256 == digest))

    def still_holds(self, session: Session, name: str, token_sha256: str | None) -> bool:
        """Whether ``token_sha256`` is still the value of the admin token ``name``: a stored
        token not rotated or revoked since, or the configured one, unchanged since."""
        if token_sha256 is None:
            return False
        configured = self._configured
        if (
            name == CONFIGURED_NAME
            and configured
            and hmac.compare_digest(hash_api_key(configured), token_sha256)
        ):
            return True
        stored = session.scalar(
            select(AdminToken.name).where(
                AdminToken.name == name, AdminToken.token_sha256 == token_sha256
            )
        )
        return stored is not None

    def list(self) -> list[AdminTokenInfo]:
        with self.db.transaction() as session:
            rows = session.scalars(select(AdminToken).order_by(AdminToken.name))
            return [AdminTokenInfo(r.name, r.created_at) for r in rows]

    def create(self, name: str) -> str:
        """A new token under ``name`` (shown once, to be stored by the caller)."""
        _check_name(name)
        token = new_admin_token()
        try:
            with self.db.transaction() as session:
                session.add(AdminToken(name=name, token_sha256=hash_api_key(token)))
        except IntegrityError:
            raise Conflict(f"admin token {name} already exists; rotate it instead") from None
        return token

    def rotate(self, name: str) -> str:
        """A new value for ``name``; the old value stops working in the same transaction."""
        token = new_admin_token()
        with self.db.transaction() as session:
            row = session.get(AdminToken, name)
            if row is None:
                raise NotFound(f"admin token {name} does not exist")
            row.token_sha256 = hash_api_key(token)
            _end_console_sessions(session, name)
        return token

    def revoke(self, name: str) -> None:
        with self.db.transaction() as session:
            row = session.get(AdminToken, name)
            if row is None:
                raise NotFound(f"admin token {name} does not exist")
            session.delete(row)
            _end_console_sessions(session, name)

    def first_start_token(self) -> str | None:
        """A ``default`` token when no admin credential exists at all, else None."""
        if self._configured:
            return None
        with self.db.transaction() as session:
            if session.scalar(select(AdminToken.name).limit(1)) is not None:
                return None
        try:
            return self.create(DEFAULT_NAME)
        except Conflict:  # another node created it at the same moment: it prints it
            return None


def _end_console_sessions(session: Session, name: str) -> None:
    """Sign out, in the same transaction, whoever signed in to the console with ``name``."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.admin_token_name == name))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            "invalid admin token name",
            [
                Problem(
                    "name",
                    "must be 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
                )
            ],
        )
