"""Console accounts: people, not shared machine keys.

A user has an email, a password (only its argon2id hash is stored) and one role: a platform
``admin``, an ``integrator`` (modules and their scripts) or a ``marketer`` of one tenant (that
tenant's pages only). The first admin signs in to the console with an admin token
(``host/admin_tokens.py``) and creates the users; tenant API keys stay for the CRM's machine
calls.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from host.db.engine import Database
from host.db.models import ConsoleSession, ConsoleUser, Tenant
from host.errors import Conflict, InvalidInput, NotFound, Problem

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
"""Long enough to be a passphrase, short enough that hashing it is no denial of service."""

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s.]{1,63}")


class Role(StrEnum):
    ADMIN = "admin"
    INTEGRATOR = "integrator"
    MARKETER = "marketer"


@dataclass(frozen=True)
class UserInfo:
    id: int
    email: str
    role: Role
    tenant_id: str | None
    created_at: datetime


def _info(row: ConsoleUser) -> UserInfo:
    return UserInfo(row.id, row.email, Role(row.role), row.tenant_id, row.created_at)


def normalise_email(email: str) -> str:
    return email.strip().lower()


class WrongCurrentPassword(InvalidInput):
    """A password change whose current password was wrong: counted like a failed sign-in."""


class UserAccounts:
    """The console's users. Password checks cost the same whether or not the account
    exists (a dummy hash is verified), so timing does not tell which emails have accounts."""

    def __init__(self, db: Database, hasher: PasswordHasher | None = None):
        self.db = db
        self.hasher = hasher or PasswordHasher()

    @cached_property
    def _dummy_hash(self) -> str:
        """Hashed on first sign-in, not at construction (building a Host stays cheap)."""
        return self.hasher.hash("not a password of anyone")

    def create(
        self, email: str, password: str, role: str, tenant_id: str | None = None
    ) -> UserInfo:
        """A new user; every problem is reported at once, by field."""
        email = normalise_email(email or "")
        problems: list[Problem] = []
        if len(email) > 254 or not _EMAIL.fullmatch(email):
            problems.append(Problem("email", "must be an email address (name@example.com)"))
        problems.extend(_password_problems(password))
        try:
            parsed_role: Role | None = Role(role)
        except ValueError:
            parsed_role = None
            problems.append(Problem("role", "must be admin, integrator or marketer"))
        tenant = (tenant_id or "").strip() or None
        if parsed_role is Role.MARKETER and tenant is None:
            problems.append(Problem("tenant", "a marketer belongs to a tenant: choose one"))
        if parsed_role is not None and parsed_role is not Role.MARKETER:
            tenant = None
        if problems:
            raise InvalidInput("user is invalid", problems)
        assert parsed_role is not None
        taken = Conflict(f"a user with email {email} already exists", [Problem("email", "taken")])
        try:
            with self.db.transaction() as session:
                if tenant is not None:
                    row = session.get(Tenant, tenant)
                    if row is None or row.deleted_at is not None:
                        raise InvalidInput(
                            "user is invalid",
                            [Problem("tenant", f"tenant {tenant} does not exist")],
                        )
                if session.scalar(select(ConsoleUser.id).where(ConsoleUser.email == email)):
                    raise taken
                user = ConsoleUser(
                    email=email,
                    password_hash=self.hasher.hash(password),
                    role=parsed_role.value,
                    tenant_id=tenant,
                )
                session.add(user)
                session.flush()
                return _info(user)
        except IntegrityError:  # created by a concurrent request after the check
            raise taken from None

    def list(self) -> builtins.list[UserInfo]:
        with self.db.transaction() as session:
            rows = session.scalars(select(ConsoleUser).order_by(ConsoleUser.email)).all()
            return [_info(r) for r in rows]

    def get(self, user_id: int) -> UserInfo:
        with self.db.transaction() as session:
            row = session.get(ConsoleUser, user_id)
            if row is None:
                raise NotFound(f"user {user_id} does not exist")
            return _info(row)

    def count(self) -> int:
        with self.db.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(ConsoleUser)) or 0)

    def authenticate(self, email: str, password: str) -> UserInfo | None:
        """The user whose email and password these are, else None (same cost either way)."""
        email = normalise_email(email or "")
        if len(password) > MAX_PASSWORD:
            return None
        with self.db.transaction() as session:
            row = session.scalar(select(ConsoleUser).where(ConsoleUser.email == email))
            stored = row.password_hash if row is not None else self._dummy_hash
            try:
                self.hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
            if row is None:
                return None
            if self.hasher.check_needs_rehash(row.password_hash):
                row.password_hash = self.hasher.hash(password)
            return _info(row)

    def set_password(
        self, user_id: int, password: str, *, keep_session: str | None = None
    ) -> UserInfo:
        """A new password (an admin's reset, or :meth:`change_password` once the current one
        was checked). Every console session of the user ends in the same transaction but
        ``keep_session`` (the SHA-256 of the one the change was made from): whoever knew the
        old password is signed out at once."""
        problems = _password_problems(password)
        if problems:
            raise InvalidInput("password is invalid", problems)
        hashed = self.hasher.hash(password)
        with self.db.transaction() as session:
            row = session.get(ConsoleUser, user_id)
            if row is None:
                raise NotFound(f"user {user_id} does not exist")
            row.password_hash = hashed
            ended = delete(ConsoleSession).where(ConsoleSession.user_id == user_id)
            if keep_session is not None:
                ended = ended.where(ConsoleSession.token_sha256 != keep_session)
            session.execute(ended)
            return _info(row)

    def change_password(
        self, user_id: int, current: str, new: str, *, keep_session: str | None = None
    ) -> UserInfo:
        """The signed-in user's own change: ``current`` must be their password. Every problem
        is reported at once; a wrong ``current`` raises :class:`WrongCurrentPassword`."""
        problems = [Problem("new_password", p.message) for p in _password_problems(new)]
        with self.db.transaction() as session:
            row = session.get(ConsoleUser, user_id)
            if row is None:
                raise NotFound(f"user {user_id} does not exist")
            stored = row.password_hash
        if len(current) > MAX_PASSWORD or not self._verifies(stored, current):
            raise WrongCurrentPassword(
                "the password was not changed",
                [Problem("current_password", "is not your current password"), *problems],
            )
        if problems:
            raise InvalidInput("the password was not changed", problems)
        return self.set_password(user_id, new, keep_session=keep_session)

    def _verifies(self, stored: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def delete(self, user_id: int) -> UserInfo:
        """Remove the user; their console sessions end with them (foreign key cascade)."""
        with self.db.transaction() as session:
            row = session.get(ConsoleUser, user_id)
            if row is None:
                raise NotFound(f"user {user_id} does not exist")
            info = _info(row)
            session.delete(row)
            return info


def _password_problems(password: str) -> builtins.list[Problem]:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        return [Problem("password", f"must be at least {MIN_PASSWORD} characters")]
    if len(password) > MAX_PASSWORD:
        return [Problem("password", f"must be at most {MAX_PASSWORD} characters")]
    return []
