"""A browser without a browser: the console driven through its HTTP app with a TestClient.

Each :class:`ConsoleVisitor` is one browser (its own cookie jar, its own client address), so a
test can hold several sessions at once, sign in from several addresses, or come through a
proxy. Redirects are not followed: the tests assert them. The visitors share one app and
need no lifespan (the console runs no background work of its own).

:func:`console_routes` lists the console's routes from the app itself, so the access and
CSRF tests cover every page, including the ones added after these tests were written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from host.accounts import UserInfo
from host.console.guard import SESSION_COOKIE
from host.platform import Host
from tests.host.conftest import ADMIN_TOKEN
from tests.host.test_bad_input import api_routes

PASSWORD = "a long console passphrase 42"
DEFAULT_ADDRESS = "203.0.113.10"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
"""Still argon2id, cheap enough that a test may sign in a dozen times (give it to
``host.accounts.hasher`` before creating users)."""
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_in(page: str) -> str:
    """The CSRF token a console page put in its forms."""
    found = _CSRF_FIELD.search(page)
    assert found is not None, "the page has no form with a csrf_token"
    return found.group(1)


class ConsoleVisitor:
    """One browser: a cookie jar, an address, and the steps a person takes."""

    def __init__(self, app: FastAPI, *, address: str = DEFAULT_ADDRESS, https: bool = True) -> None:
        self.http = TestClient(
            app,
            base_url=("https" if https else "http") + "://testserver",
            client=(address, 50000),
            follow_redirects=False,
        )

    def sign_in(
        self, email: str, password: str = PASSWORD, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        form = {"email": email, "password": password, "next": "/console"}
        return self._sign_in("/console/sign-in", form, headers)

    def sign_in_with_admin_token(
        self, token: str = ADMIN_TOKEN, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self._sign_in("/console/sign-in/admin-token", {"token": token}, headers)

    def _sign_in(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None
    ) -> httpx.Response:
        page = self.http.get("/console/sign-in")
        assert page.status_code == 200, page.text
        return self.http.post(
            path, data={**form, "csrf_token": csrf_in(page.text)}, headers=headers
        )

    @property
    def session_cookie(self) -> str | None:
        return self.http.cookies.get(SESSION_COOKIE)

    def csrf(self) -> str:
        """The CSRF token of this visitor's session, as its pages carry it."""
        page = self.http.get("/console", follow_redirects=True)
        assert page.status_code == 200, page.text
        return csrf_in(page.text)

    def is_signed_in(self) -> bool:
        """Whether the console opens for this visitor (rather than sending it to sign in)."""
        answer = self.http.get("/console")
        if answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in"):
            return False
        assert answer.status_code in (200, 303), answer.text
        return True

    def post(self, path: str, form: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(path, data=form or {})


def signed_in_admin(app: FastAPI, **kwargs: Any) -> ConsoleVisitor:
    visitor = ConsoleVisitor(app, **kwargs)
    assert visitor.sign_in_with_admin_token().status_code == 303
    return visitor


def signed_in_user(app: FastAPI, user: UserInfo, **kwargs: Any) -> ConsoleVisitor:
    visitor = ConsoleVisitor(app, **kwargs)
    answer = visitor.sign_in(user.email)
    assert answer.status_code == 303, answer.text
    return visitor


def make_user(host: Host, email: str, role: str, tenant_id: str | None = None) -> UserInfo:
    return host.accounts.create(email, PASSWORD, role, tenant_id)


@dataclass(frozen=True)
class ConsoleRoute:
    path: str
    method: str

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)(?::\w+)?}", self.path)

    @property
    def is_asset(self) -> bool:
        """A stylesheet or script the pages link to (the sign-in page too): public."""
        return self.method == "GET" and self.path.endswith((".css", ".js"))

    def url(self, values: dict[str, str]) -> str:
        """The path with its parameters filled from ``values``; a parameter not named there
        gets ``1`` (a valid string and a valid integer: the guard must answer first)."""
        return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values.get(m.group(1), "1"), self.path)


SIGN_IN_PATHS = frozenset({"/console/sign-in", "/console/sign-in/admin-token"})


def console_routes(app: FastAPI) -> list[ConsoleRoute]:
    """Every (path, method) the console answers, read from the app's routes."""
    routes = [
        ConsoleRoute(route.path, method)
        for route in api_routes(app.routes)
        if route.path.startswith("/console")
        for method in sorted(route.methods)
        if method != "HEAD"
    ]
    assert routes, "the app has no console routes"
    return routes
