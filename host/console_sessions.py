"""Signed-in console browsers.

The cookie carries a random token; the database keeps only its SHA-256, so a copy of the
database opens no session. Each session has its own CSRF token (the synchronizer pattern:
every console form carries it, every post is checked against it) and a one-shot flash
message for the page after a redirect. A session ends at sign-out, at its expiry, when its
user is deleted or changes their password (the other sessions), or — begun with an admin
token — when that token's value is no longer the one it began with (rotated, revoked, or
``CRM_HOST_ADMIN_TOKEN`` changed between restarts).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete

from host.accounts import Role, UserInfo
from host.admin_tokens import AdminTokens
from host.db.engine import Database
from host.db.models import ConsoleSession, ConsoleUser, utcnow
from host.secrets import hash_api_key


@dataclass(frozen=True)
class SignedIn:
    """Who a session belongs to: a user, or the admin token (``user`` is None) by name."""

    token_sha256: str
    csrf_token: str
    role: Role
    email: str | None
    user_id: int | None
    tenant_id: str | None
    admin_token_name: str | None
    expires_at: datetime

    @property
    def who(self) -> str:
        """How the audit log names this person."""
        if self.email is not None:
            return self.email
        return f"admin token {self.admin_token_name or '(configured)'}"

    def csrf_matches(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(
            self.csrf_token.encode(), (presented or "").encode()
        )


class ConsoleSessions:
    def __init__(self, db: Database, lifetime: timedelta, admin_tokens: AdminTokens):
        self.db = db
        self.lifetime = lifetime
        self.admin_tokens = admin_tokens

    def start_for_user(self, user: UserInfo) -> str:
        return self._start(user_id=user.id, admin_token_name=None, admin_token_sha256=None)

    def start_for_admin_token(self, token_name: str, token: str) -> str:
        """A session of the admin token ``token_name`` whose value ``token`` was presented."""
        return self._start(
            user_id=None, admin_token_name=token_name, admin_token_sha256=hash_api_key(token)
        )

    def _start(
        self, *, user_id: int | None, admin_token_name: str | None, admin_token_sha256: str | None
    ) -> str:
        """A new session; the returned cookie value is not stored anywhere."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.transaction() as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
            session.add(
                ConsoleSession(
                    token_sha256=hash_api_key(token),
                    user_id=user_id,
                    admin_token_name=admin_token_name,
                    admin_token_sha256=admin_token_sha256,
                    csrf_token=secrets.token_urlsafe(32),
                    created_at=now,
                    expires_at=now + self.lifetime,
                )
            )
        return token

    def lookup(self, token: str | None) -> SignedIn | None:
        """The live session of this cookie value, else None."""
        if not token or len(token) > 200:
            return None
        digest = hash_api_key(token)
        with self.db.transaction() as session:
            row = session.get(ConsoleSession, digest)
            if row is None or row.expires_at <= utcnow():
                return None
            if row.user_id is None:
                if not self.admin_tokens.still_holds(
                    session, row.admin_token_name or "", row.admin_token_sha256
                ):
                    session.delete(row)  # its token changed: the session is over for good
                    return None
                return SignedIn(
                    digest, row.csrf_token, Role.ADMIN, None, None, None,
                    row.admin_token_name, row.expires_at,
                )  # fmt: skip
            user = session.get(ConsoleUser, row.user_id)
            if user is None:
                return None
            return SignedIn(
                digest, row.csrf_token, Role(user.role), user.email, user.id, user.tenant_id,
                None, row.expires_at,
            )  # fmt: skip

    def end(self, token_sha256: str) -> None:
        with self.db.transaction() as session:
            session.execute(
                delete(ConsoleSession).where(ConsoleSession.token_sha256 == token_sha256)
            )

    def set_flash(self, token_sha256: str, message: str) -> None:
        with self.db.transaction() as session:
            row = session.get(ConsoleSession, token_sha256)
            if row is not None:
                row.flash = message[:1000]

    def take_flash(self, token_sha256: str) -> str | None:
        """The message left for this page, removed as it is read."""
        with self.db.transaction() as session:
            row = session.get(ConsoleSession, token_sha256)
            if row is None or row.flash is None:
                return None
            message, row.flash = row.flash, None
            return message
