"""Passwords through the console's HTTP app: a signed-in user's own change (the current
password is required, counted like a sign-in by the limits, the user's other sessions end,
audited) and an admin's reset of another user's password (all of that user's sessions end).
Every refusal — wrong current password, too short, mismatched, no CSRF token, the wrong
role — changes nothing: the old password still signs in and no session ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from host.accounts import UserInfo
from host.api.app import create_app
from host.platform import Host
from host.sign_in_limits import SignInLimits
from tests.host.conftest import make_host, table_dump
from tests.host.console_client import (
    FAST_HASHER,
    PASSWORD,
    ConsoleVisitor,
    make_user,
    signed_in_admin,
    signed_in_user,
)

NEW_PASSWORD = "a brand new passphrase 77"
PER_ACCOUNT = 2


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    instance = make_host(
        tmp_path_factory.mktemp("passwords") / "host.db", console_sign_in_failures=PER_ACCOUNT
    )
    instance.accounts.hasher = FAST_HASHER
    instance.tenants.create("acme", "Acme")
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def app(host: Host) -> FastAPI:
    return create_app(host)


@pytest.fixture(autouse=True)
def fresh_limits(host: Host) -> None:
    host.sign_in_limits = SignInLimits(per_account=PER_ACCOUNT, per_address=4 * PER_ACCOUNT)


_users = iter(range(1000))


@pytest.fixture
def user(host: Host) -> UserInfo:
    """A fresh marketer per test (their own failure count, sessions and password)."""
    return make_user(host, f"user{next(_users)}@example.com", "marketer", "acme")


def _change(visitor: ConsoleVisitor, current: str, new: str, again: str | None = None):
    form = {
        "csrf_token": visitor.csrf(),
        "current_password": current,
        "new_password": new,
        "new_password_again": new if again is None else again,
    }
    return visitor.post("/console/account/password", form)


def _signs_in(app: FastAPI, email: str, password: str) -> bool:
    answer = ConsoleVisitor(app, address="198.51.100.200").sign_in(email, password)
    assert answer.status_code in (303, 401, 429), answer.text
    return answer.status_code == 303


def test_a_user_changes_their_password_and_their_other_sessions_end(
    host: Host, app: FastAPI, user: UserInfo
) -> None:
    here = signed_in_user(app, user)
    elsewhere = signed_in_user(app, user, address="198.51.100.7")
    page = here.http.get("/console/account")
    assert page.status_code == 200 and "Change your password" in page.text

    answer = _change(here, PASSWORD, NEW_PASSWORD)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/account"
    assert "your other sessions have ended" in here.http.get("/console/account").text
    assert here.is_signed_in(), "the session the change was made from stays signed in"
    assert not elsewhere.is_signed_in(), "another session outlived the old password"
    assert not _signs_in(app, user.email, PASSWORD)
    assert _signs_in(app, user.email, NEW_PASSWORD)
    [entry] = [e for e in host.audit.list(actor=user.email) if "password" in e.action]
    assert entry.action == "changed their console password (their other sessions ended)"
    assert entry.path == "/console/account/password" and entry.status == 303
    assert PASSWORD not in repr(table_dump(host)) and NEW_PASSWORD not in repr(table_dump(host))


@pytest.mark.parametrize(
    ("current", "new", "again", "field", "message"),
    [
        ("not my password at all", NEW_PASSWORD, None, "current_password",
         "is not your current password"),
        (PASSWORD, "short", None, "new_password", "must be at least 12 characters"),
        (PASSWORD, "x" * 1025, None, "new_password", "must be at most 1024 characters"),
        (PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "!", "new_password_again",
         "does not match the new password"),
    ],
)  # fmt: skip
def test_a_refused_change_names_its_field_and_changes_nothing(
    host: Host, app: FastAPI, user: UserInfo, current: str, new: str, again: str | None,
    field: str, message: str,
) -> None:  # fmt: skip
    here = signed_in_user(app, user)
    elsewhere = signed_in_user(app, user, address="198.51.100.7")
    before = table_dump(host)["console_users"]

    answer = _change(here, current, new, again)
    assert answer.status_code == 422, answer.text
    assert f'id="f-{field.replace("_", "_")}-error">{message}<' in answer.text
    assert table_dump(host)["console_users"] == before
    assert here.is_signed_in() and elsewhere.is_signed_in()
    assert _signs_in(app, user.email, PASSWORD)


def test_wrong_current_passwords_are_rate_limited_like_sign_ins(
    host: Host, app: FastAPI, user: UserInfo
) -> None:
    here = signed_in_user(app, user)
    for _ in range(PER_ACCOUNT):
        assert _change(here, "a wrong guess of it 000", NEW_PASSWORD).status_code == 422
    locked = _change(here, PASSWORD, NEW_PASSWORD)  # even the right one, while locked out
    assert locked.status_code == 429, locked.text
    assert int(locked.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in locked.text
    # the form is no way around the sign-in limit: the account's sign-in is locked too
    answer = ConsoleVisitor(app, address="198.51.100.201").sign_in(user.email)
    assert answer.status_code == 429
    assert here.is_signed_in()
    host.sign_in_limits = SignInLimits(per_account=PER_ACCOUNT, per_address=4 * PER_ACCOUNT)
    assert _signs_in(app, user.email, PASSWORD), "the password changed while locked out"


def test_a_change_without_its_csrf_token_is_refused(
    host: Host, app: FastAPI, user: UserInfo
) -> None:
    here = signed_in_user(app, user)
    before = table_dump(host)
    form = {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD}  # fmt: skip
    for token in ({}, {"csrf_token": "forged"}):
        answer = here.post("/console/account/password", {**form, **token})
        assert answer.status_code == 403 and "security token (CSRF)" in answer.text
    assert table_dump(host) == before
    assert _signs_in(app, user.email, PASSWORD)


def test_an_admin_token_session_has_no_password_to_change(host: Host, app: FastAPI) -> None:
    admin = signed_in_admin(app)
    page = admin.http.get("/console/account")
    assert page.status_code == 200 and "which has no password" in page.text
    assert "Change your password" not in page.text
    before = table_dump(host)
    answer = _change(admin, "anything at all 1234", NEW_PASSWORD)
    assert answer.status_code == 409 and "crm-host admin token rotate" in answer.text
    assert table_dump(host) == before


def test_an_admin_resets_a_users_password_and_all_their_sessions_end(
    host: Host, app: FastAPI, user: UserInfo
) -> None:
    theirs = signed_in_user(app, user)
    admin_user = make_user(host, f"admin{next(_users)}@example.com", "admin")
    admin = signed_in_user(app, admin_user)
    users = admin.http.get("/console/users")
    assert f'href="/console/users/{user.id}/password"' in users.text
    form_page = admin.http.get(f"/console/users/{user.id}/password")
    assert form_page.status_code == 200 and user.email in form_page.text

    short = admin.post(f"/console/users/{user.id}/password",
                       {"csrf_token": admin.csrf(), "password": "too short"})  # fmt: skip
    assert short.status_code == 422
    assert 'id="f-password-error">must be at least 12 characters<' in short.text
    assert theirs.is_signed_in() and _signs_in(app, user.email, PASSWORD)

    answer = admin.post(f"/console/users/{user.id}/password",
                        {"csrf_token": admin.csrf(), "password": NEW_PASSWORD})  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/console/users"
    assert not theirs.is_signed_in()
    assert admin.is_signed_in()
    assert _signs_in(app, user.email, NEW_PASSWORD) and not _signs_in(app, user.email, PASSWORD)
    [entry] = host.audit.list(actor=admin_user.email, limit=5)[:1]
    assert entry.action == f"reset the password of user {user.email} (their sessions ended)"

    # their own password is changed on the account page, which asks for the current one
    own = admin.post(f"/console/users/{admin_user.id}/password",
                     {"csrf_token": admin.csrf(), "password": NEW_PASSWORD})  # fmt: skip
    assert own.status_code == 409 and "/console/account" in own.text
    assert _signs_in(app, admin_user.email, PASSWORD)


def test_only_an_admin_resets_passwords_and_an_unknown_user_is_a_404(
    host: Host, app: FastAPI, user: UserInfo
) -> None:
    integrator = signed_in_user(app, make_user(host, f"i{next(_users)}@example.com", "integrator"))
    before = table_dump(host)
    for visitor in (integrator, signed_in_user(app, user)):
        answer = visitor.post(f"/console/users/{user.id}/password",
                              {"csrf_token": visitor.csrf(), "password": NEW_PASSWORD})  # fmt: skip
        assert answer.status_code == 403, answer.text
    assert table_dump(host)["console_users"] == before["console_users"]
    admin = signed_in_admin(app)
    missing = admin.post("/console/users/999999/password",
                         {"csrf_token": admin.csrf(), "password": NEW_PASSWORD})  # fmt: skip
    assert missing.status_code == 404 and "user 999999 does not exist" in missing.text
    assert admin.http.get("/console/users/999999/password").status_code == 404


def test_sessions_end_on_both_databases_when_a_password_or_the_admin_token_changes(
    db_path: Path,
) -> None:
    """The same endings on SQLite and PostgreSQL: a password change ends the user's other
    sessions (not the one it was made from), and a host reopened on the database with
    another configured admin token, or with none, no longer honours the old token's
    session."""
    first = make_host(db_path, admin_token="first-admin-token-" + "1" * 20)
    try:
        first.accounts.hasher = FAST_HASHER
        app = create_app(first)
        user = make_user(first, "pat@example.com", "integrator")
        here, elsewhere = signed_in_user(app, user), signed_in_user(app, user, address="192.0.2.9")
        admin = ConsoleVisitor(app, address="192.0.2.10")
        assert admin.sign_in_with_admin_token("first-admin-token-" + "1" * 20).status_code == 303
        assert _change(here, PASSWORD, NEW_PASSWORD).status_code == 303
        assert here.is_signed_in() and not elsewhere.is_signed_in() and admin.is_signed_in()
    finally:
        first.close()
    second = make_host(db_path, admin_token="second-admin-token-" + "2" * 20)
    try:
        app = create_app(second)
        for visitor in (here, admin):
            visitor.http = _rebound(visitor, app)
        assert here.is_signed_in(), "a user's session does not depend on the admin token"
        assert not admin.is_signed_in(), "the old admin token's session outlived it"
        admin = ConsoleVisitor(app, address="192.0.2.11")
        assert admin.sign_in_with_admin_token("second-admin-token-" + "2" * 20).status_code == 303
    finally:
        second.close()
    unset = make_host(db_path, admin_token=None)  # the variable removed from the environment
    try:
        admin.http = _rebound(admin, create_app(unset))
        assert not admin.is_signed_in(), "the removed admin token's session outlived it"
    finally:
        unset.close()


def _rebound(visitor: ConsoleVisitor, app: FastAPI):
    """The same browser (its cookies) talking to another app: a restarted host."""
    reborn = ConsoleVisitor(app)
    reborn.http.cookies = visitor.http.cookies
    return reborn.http
