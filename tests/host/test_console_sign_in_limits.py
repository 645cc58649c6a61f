"""Failed console sign-ins are limited per account and per client address, through HTTP.

The host allows ``CRM_HOST_CONSOLE_SIGN_IN_FAILURES`` failures per account (2 here, so each
test is short) and four times as many per client address within 15 minutes. A locked-out
attempt is a 429 sign-in page with ``Retry-After`` that opens no session — even with the
right password. The client address is the connection's, or taken from ``X-Forwarded-For``
only when the connection comes from one of ``CRM_HOST_TRUSTED_PROXIES``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from host.api.app import create_app
from host.db.models import ConsoleSession
from host.platform import Host
from host.sign_in_limits import WINDOW_S, SignInLimits
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, make_host
from tests.host.console_client import FAST_HASHER, PASSWORD, ConsoleVisitor, csrf_in, make_user

PER_ACCOUNT = 2
PER_ADDRESS = 4 * PER_ACCOUNT
PROXY = "10.1.2.3"


class Clock:
    """A monotonic clock the test moves by hand (no sleeping, no timing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    instance = make_host(
        tmp_path_factory.mktemp("limits") / "host.db",
        console_sign_in_failures=PER_ACCOUNT,
        trusted_proxies=["10.0.0.0/8"],
    )
    instance.accounts.hasher = FAST_HASHER
    make_user(instance, "ann@example.com", "admin")
    make_user(instance, "bob@example.com", "integrator")
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def app(host: Host) -> FastAPI:
    return create_app(host)


@pytest.fixture(autouse=True)
def fresh_limits(host: Host) -> Iterator[None]:
    """Each test starts with no failures counted, under the limits the host built from its
    settings; sessions of earlier tests are ended."""
    configured = host.sign_in_limits
    assert (configured.per_account, configured.per_address) == (PER_ACCOUNT, PER_ADDRESS)
    host.sign_in_limits = SignInLimits(per_account=PER_ACCOUNT, per_address=PER_ADDRESS)
    with host.db.transaction() as session:
        session.execute(delete(ConsoleSession))
    yield
    host.sign_in_limits = configured


def _sessions(host: Host) -> int:
    with host.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(ConsoleSession)) or 0)


def _assert_locked_out(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert "too many failed sign-ins" in answer.text


def test_an_account_is_locked_after_its_failures_even_with_the_right_password(
    host: Host, app: FastAPI
) -> None:
    visitor = ConsoleVisitor(app)
    for _ in range(PER_ACCOUNT):
        wrong = visitor.sign_in("ann@example.com", "not the passphrase at all")
        assert wrong.status_code == 401
        assert "wrong email or password" in wrong.text

    right = visitor.sign_in("ann@example.com")
    _assert_locked_out(right)
    assert 0 < int(right.headers["Retry-After"]) <= WINDOW_S
    assert visitor.session_cookie is None and _sessions(host) == 0
    assert not visitor.is_signed_in()

    # the lock is the account's: another address is refused as well ...
    elsewhere = ConsoleVisitor(app, address="198.51.100.20")
    _assert_locked_out(elsewhere.sign_in("ann@example.com"))
    # ... while another account signs in from the same address
    assert visitor.sign_in("bob@example.com").status_code == 303
    assert visitor.is_signed_in() and _sessions(host) == 1


def test_the_lock_expires_when_the_failures_leave_the_window(host: Host, app: FastAPI) -> None:
    clock = Clock()
    host.sign_in_limits = SignInLimits(
        per_account=PER_ACCOUNT, per_address=PER_ADDRESS, clock=clock
    )
    visitor = ConsoleVisitor(app)
    for _ in range(PER_ACCOUNT):
        assert visitor.sign_in("ann@example.com", "wrong passphrase!!").status_code == 401
    clock.now += WINDOW_S - 60
    locked = visitor.sign_in("ann@example.com")
    _assert_locked_out(locked)
    assert locked.headers["Retry-After"] == "60"

    clock.now += 61
    assert visitor.sign_in("ann@example.com").status_code == 303
    assert visitor.is_signed_in()


def test_a_successful_sign_in_clears_the_account_failures(app: FastAPI) -> None:
    visitor = ConsoleVisitor(app)
    for _ in range(PER_ACCOUNT - 1):
        assert visitor.sign_in("ann@example.com", "wrong passphrase!!").status_code == 401
    assert visitor.sign_in("ann@example.com").status_code == 303

    # had the count survived, these failures would now lock the account
    later = ConsoleVisitor(app)
    for _ in range(PER_ACCOUNT - 1):
        assert later.sign_in("ann@example.com", "wrong passphrase!!").status_code == 401
    assert later.sign_in("ann@example.com").status_code == 303


def test_an_address_is_limited_across_accounts(host: Host, app: FastAPI) -> None:
    guesser = ConsoleVisitor(app, address="198.51.100.7")
    for n in range(PER_ADDRESS):
        assert guesser.sign_in(f"guess{n}@example.com", "wrong passphrase!!").status_code == 401

    # a real account with its right password, never failed itself: refused from there ...
    _assert_locked_out(guesser.sign_in("ann@example.com"))
    assert _sessions(host) == 0
    # ... and fine from anywhere else
    assert ConsoleVisitor(app, address="198.51.100.8").sign_in("ann@example.com").status_code == 303


def test_wrong_admin_tokens_lock_the_admin_token_sign_in(host: Host, app: FastAPI) -> None:
    visitor = ConsoleVisitor(app)
    for _ in range(PER_ACCOUNT):
        wrong = visitor.sign_in_with_admin_token("not-the-admin-token")
        assert wrong.status_code == 401 and "not an admin token" in wrong.text
    locked = visitor.sign_in_with_admin_token(ADMIN_TOKEN)
    _assert_locked_out(locked)
    assert _sessions(host) == 0
    # people's accounts are not the admin token's
    assert visitor.sign_in("ann@example.com").status_code == 303


def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(host: Host, app: FastAPI) -> None:
    """Not a trusted proxy: each attempt claims another client, all count for the peer."""
    guesser = ConsoleVisitor(app, address="198.51.100.7")
    for n in range(PER_ADDRESS):
        forged = {"X-Forwarded-For": f"192.0.2.{n + 1}"}
        answer = guesser.sign_in(f"guess{n}@example.com", "wrong passphrase!!", headers=forged)
        assert answer.status_code == 401
    refused = guesser.sign_in("ann@example.com", headers={"X-Forwarded-For": "192.0.2.200"})
    _assert_locked_out(refused)
    assert _sessions(host) == 0


def test_a_trusted_proxy_names_the_client(host: Host, app: FastAPI) -> None:
    """Behind a trusted proxy each client is counted on its own, and what a client wrote
    into ``X-Forwarded-For`` itself (left of the proxy's entry) does not change who it is."""
    proxy = ConsoleVisitor(app, address=PROXY)
    for n in range(PER_ADDRESS):
        spoofed = {"X-Forwarded-For": f"192.0.2.{n + 1}, 203.0.113.5"}
        answer = proxy.sign_in(f"guess{n}@example.com", "wrong passphrase!!", headers=spoofed)
        assert answer.status_code == 401
    refused = proxy.sign_in("ann@example.com", headers={"X-Forwarded-For": "203.0.113.5"})
    _assert_locked_out(refused)

    # another client through the same proxy is not the guesser
    other = ConsoleVisitor(app, address=PROXY)
    answer = other.sign_in("ann@example.com", headers={"X-Forwarded-For": "203.0.113.6"})
    assert answer.status_code == 303
    entry = host.audit.list(limit=1)[0]
    assert (entry.actor, entry.action, entry.client) == (
        "ann@example.com",
        "signed in to the console",
        "203.0.113.6",
    )


@pytest.mark.parametrize(
    ("value", "entry"),
    [("proxy.internal", "proxy.internal"), ("10.0.0.1, 10.0.0.0/33", "10.0.0.0/33")],
)
def test_a_bad_trusted_proxies_value_is_one_line(tmp_path: Path, value: str, entry: str) -> None:
    result = Cli.in_dir(tmp_path, CRM_HOST_TRUSTED_PROXIES=value).run("serve", "--port", "1")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: invalid configuration: CRM_HOST_TRUSTED_PROXIES: {entry!r} is not an IP "
        "address or CIDR"
    ]
    assert not (tmp_path / "host.db").exists()


def test_a_forged_header_line_before_the_proxys_own_does_not_name_the_client(
    host: Host, app: FastAPI
) -> None:
    """A proxy may add its own ``X-Forwarded-For`` line (HAProxy does) instead of appending
    to the client's: the lines are one list in order, the proxy's entry last."""
    proxy = ConsoleVisitor(app, address=PROXY)
    for n in range(PER_ADDRESS):
        lines = [("X-Forwarded-For", f"192.0.2.{n + 1}"), ("X-Forwarded-For", "203.0.113.7")]
        email = f"line{n}@example.com"
        page = proxy.http.get("/console/sign-in")
        form = {"email": email, "password": "wrong passphrase!!", "csrf_token": csrf_in(page.text)}
        answer = proxy.http.post("/console/sign-in", data=form, headers=httpx.Headers(lines))
        assert answer.status_code == 401
    refused = proxy.sign_in("ann@example.com", headers={"X-Forwarded-For": "203.0.113.7"})
    _assert_locked_out(refused)

    # the audit log names the client the same way
    other = ConsoleVisitor(app, address=PROXY)
    page = other.http.get("/console/sign-in")
    form = {"email": "ann@example.com", "password": PASSWORD, "csrf_token": csrf_in(page.text)}
    lines = [("X-Forwarded-For", "192.0.2.99"), ("X-Forwarded-For", "203.0.113.8")]
    assert (
        other.http.post("/console/sign-in", data=form, headers=httpx.Headers(lines)).status_code
        == 303
    )
    assert host.audit.list(limit=1)[0].client == "203.0.113.8"
