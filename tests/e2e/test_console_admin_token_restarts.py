"""A console session begun with an admin token lives only while that token's value is
unchanged — across restarts of a real ``crm-host serve`` as well: restarted with the same
``CRM_HOST_ADMIN_TOKEN`` it stays signed in; restarted with another value, the configured
token's sessions end, while a stored token's session (``crm-host admin token create``) is
untouched. (A token removed from the environment: ``tests/host/test_console_passwords.py``,
on both databases.)"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.cli_runner import Cli
from tests.e2e.server import RunningHost, running_host

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _signed_in_browser(host: RunningHost, token: str) -> httpx.Client:
    """A browser (a cookie jar) signed in to the console with the admin token ``token``."""
    browser = httpx.Client(base_url=host.url, timeout=30, follow_redirects=False)
    page = browser.get("/console/sign-in")
    found = _CSRF.search(page.text)
    assert page.status_code == 200 and found is not None, page.text
    answer = browser.post(
        "/console/sign-in/admin-token", data={"token": token, "csrf_token": found.group(1)}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console", answer.text
    return browser


def _is_signed_in(browser: httpx.Client, host: RunningHost) -> bool:
    """Whether the tenants page (admins only) opens for this cookie on ``host``."""
    answer = browser.get(host.url + "/console/tenants")
    if answer.status_code == 303:
        assert answer.headers["location"].startswith("/console/sign-in"), answer.headers
        return False
    assert answer.status_code == 200, answer.text
    return True


def test_changing_the_configured_admin_token_between_restarts_ends_its_sessions(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'host.db'}"
    first, second = "console-token-one-" + "a" * 24, "console-token-two-" + "b" * 24
    with running_host(tmp_path, CRM_HOST_ADMIN_TOKEN=first) as host:
        ops_token = Cli.in_dir(tmp_path, CRM_HOST_DATABASE_URL=database).run(
            "admin", "token", "create", "ops"
        )
        assert ops_token.returncode == 0, ops_token.stderr
        stored = re.search(r"\S{32,}", ops_token.stdout)
        assert stored is not None, ops_token.stdout
        configured = _signed_in_browser(host, first)
        ops = _signed_in_browser(host, stored.group(0))

    with running_host(tmp_path, CRM_HOST_ADMIN_TOKEN=first) as host:
        assert _is_signed_in(configured, host), "a restart with the same token signed out"
        assert _is_signed_in(ops, host)

    with running_host(tmp_path, CRM_HOST_ADMIN_TOKEN=second) as host:
        assert not _is_signed_in(configured, host), "the old token's session outlived it"
        assert _is_signed_in(ops, host)
        assert _is_signed_in(_signed_in_browser(host, second), host)
        assert host.process.poll() is None, "the host stopped serving"
