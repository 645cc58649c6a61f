"""The console's security properties, proven through HTTP against the real app.

The session cookie's attributes and its life on the server (sign-out, expiry, a removed
user, only a hash stored); CSRF on every console form, read from the app's own routes so a
page added later is covered without editing this file; and the role and tenant guards of
every console route for a marketer, an integrator and a signed-out visitor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from sqlalchemy import update

from host.accounts import UserInfo
from host.api.app import create_app
from host.console.guard import SESSION_COOKIE
from host.console.pages.auth import SIGN_IN_COOKIE
from host.db.models import ConsoleSession, utcnow
from host.modules.packages import from_json_body
from host.secrets import hash_api_key
from tests.cli_runner import Cli
from tests.host.conftest import (
    SECRET_KEY,
    checkpoint,
    database_bytes,
    json_body,
    make_host,
    table_dump,
)
from tests.host.console_client import (
    FAST_HASHER,
    PASSWORD,
    SIGN_IN_PATHS,
    ConsoleRoute,
    ConsoleVisitor,
    console_routes,
    csrf_in,
    make_user,
    signed_in_admin,
    signed_in_user,
)


class World:
    """One host for the module: tenants acme and globex, each using sendmail@1.0.0, and an
    admin, an integrator and a marketer of acme."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.host = make_host(db_path)
        self.host.accounts.hasher = FAST_HASHER
        self.host.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
        for tenant_id in ("acme", "globex"):
            self.host.tenants.create(tenant_id, tenant_id.title())
            self.host.tenants.configure(tenant_id, "sendmail", settings={"api_key": "k-12345678"})
        self.admin = make_user(self.host, "ann@example.com", "admin")
        self.integrator = make_user(self.host, "ivy@example.com", "integrator")
        self.marketer = make_user(self.host, "mia@example.com", "marketer", "acme")
        self.app = create_app(self.host)

    def path_values(self, tenant_id: str) -> dict[str, str]:
        """Real values for the console's path parameters, on ``tenant_id``'s side."""
        return {
            "tenant_id": tenant_id,
            "module_id": "sendmail",
            "version": "1.0.0",
            "user_id": str(self.integrator.id),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("console") / "host.db")
    yield built
    built.host.close()


def _set_cookie(answer_headers: list[str], name: str) -> SimpleCookie:
    for header in answer_headers:
        cookie: SimpleCookie = SimpleCookie(header)
        if name in cookie:
            return cookie
    raise AssertionError(f"no Set-Cookie for {name} in {answer_headers}")


# ------------------------------------------------------------------------- session cookie


def test_the_session_cookie_is_httponly_strict_console_scoped_and_secure_on_https(
    world: World,
) -> None:
    visitor = ConsoleVisitor(world.app)
    page = visitor.http.get("/console/sign-in")
    sign_in_cookie = _set_cookie(page.headers.get_list("set-cookie"), SIGN_IN_COOKIE)
    answer = visitor.sign_in(world.admin.email)
    assert answer.status_code == 303 and answer.headers["location"] == "/console"
    for cookie, name in (
        (sign_in_cookie, SIGN_IN_COOKIE),
        (_set_cookie(answer.headers.get_list("set-cookie"), SESSION_COOKIE), SESSION_COOKIE),
    ):
        morsel = cookie[name]
        assert morsel["httponly"] is True
        assert morsel["secure"] is True
        assert morsel["samesite"] == "strict"
        assert morsel["path"] == "/console"
    assert _set_cookie(answer.headers.get_list("set-cookie"), SESSION_COOKIE)[SESSION_COOKIE][
        "max-age"
    ] == str(12 * 3600)


def test_the_session_cookie_is_not_secure_when_the_public_url_is_http(db_path: Path) -> None:
    host = make_host(db_path, public_url="http://crm.example.test")
    try:
        host.accounts.hasher = FAST_HASHER
        make_user(host, "ann@example.com", "admin")
        visitor = ConsoleVisitor(create_app(host), https=False)
        answer = visitor.sign_in("ann@example.com")
        assert answer.status_code == 303
        morsel = _set_cookie(answer.headers.get_list("set-cookie"), SESSION_COOKIE)[SESSION_COOKIE]
        assert morsel["secure"] == "" and morsel["httponly"] is True
        assert morsel["samesite"] == "strict" and morsel["path"] == "/console"
        assert visitor.is_signed_in()
    finally:
        host.close()


def _replayed(world: World, cookie: str) -> ConsoleVisitor:
    """A fresh browser presenting a copied session cookie."""
    thief = ConsoleVisitor(world.app, address="198.51.100.66")
    thief.http.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local", path="/console")
    return thief


def test_sign_out_ends_the_session_on_the_server(world: World) -> None:
    visitor = signed_in_user(world.app, world.integrator)
    cookie = visitor.session_cookie
    assert cookie is not None and _replayed(world, cookie).is_signed_in()

    answer = visitor.post("/console/sign-out", {"csrf_token": visitor.csrf()})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"
    assert visitor.session_cookie is None
    # the copied cookie no longer opens anything, though the browser never deleted it
    thief = _replayed(world, cookie)
    assert not thief.is_signed_in()
    assert thief.http.get("/console/modules").status_code == 303
    with world.host.db.transaction() as session:
        assert session.get(ConsoleSession, hash_api_key(cookie)) is None


def test_an_expired_session_is_refused(world: World) -> None:
    visitor = signed_in_user(world.app, world.integrator)
    cookie = visitor.session_cookie
    assert cookie is not None and visitor.is_signed_in()
    with world.host.db.transaction() as session:
        session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.token_sha256 == hash_api_key(cookie))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert not visitor.is_signed_in()
    refused = visitor.http.get("/console/modules")
    assert refused.status_code == 303
    assert refused.headers["location"] == "/console/sign-in?next=/console/modules"


def test_removing_a_user_ends_their_sessions(world: World) -> None:
    leaving = make_user(world.host, "leo@example.com", "integrator")
    theirs = signed_in_user(world.app, leaving)
    admin = signed_in_admin(world.app)
    answer = admin.post(f"/console/users/{leaving.id}/delete", {"csrf_token": admin.csrf()})
    assert answer.status_code == 303
    assert not theirs.is_signed_in()


def test_only_the_hash_of_a_session_cookie_is_stored(world: World) -> None:
    visitor = signed_in_user(world.app, world.marketer)
    cookie = visitor.session_cookie
    assert cookie is not None
    checkpoint(world.db_path)
    stored = database_bytes(world.db_path)
    assert cookie.encode() not in stored
    sessions = table_dump(world.host)["console_sessions"]
    assert any(hash_api_key(cookie) in row for row in sessions)


# ---------------------------------------------------------------------------------- CSRF


def _form_routes(world: World) -> list[ConsoleRoute]:
    return [
        r for r in console_routes(world.app) if r.method != "GET" and r.path not in SIGN_IN_PATHS
    ]


def test_every_console_form_refuses_a_post_without_its_sessions_csrf_token(
    world: World,
) -> None:
    admin = signed_in_admin(world.app)
    other = signed_in_admin(world.app, address="198.51.100.9")
    others_token, own_token = other.csrf(), admin.csrf()
    assert others_token != own_token
    routes = _form_routes(world)
    assert any(r.path == "/console/sign-out" for r in routes)
    before = table_dump(world.host)
    for route in routes:
        url = route.url(world.path_values("acme"))
        for form in ({}, {"csrf_token": ""}, {"csrf_token": others_token}):
            answer = admin.http.request(route.method, url, data=form)
            assert answer.status_code == 403, (route, form, answer.text)
            assert "security token (CSRF)" in answer.text, (route, answer.text)
    assert table_dump(world.host) == before, "a refused post changed something"
    assert admin.is_signed_in(), "a refused sign-out signed out"

    # the control: with its own token, the same visitor's post does change things
    created = admin.post(
        "/console/tenants", {"csrf_token": own_token, "id": "initech", "name": "Initech"}
    )
    assert created.status_code in (200, 303), created.text
    assert "initech" in [t.id for t in world.host.tenants.list()]


def test_an_upload_without_its_csrf_token_stores_nothing(world: World) -> None:
    admin = signed_in_admin(world.app)
    manifest = dict(json_body()["manifest"], id="stowaway")
    files = [
        ("files", ("manifest.json", json.dumps(manifest).encode(), "application/json")),
        ("files", ("module.py", json_body()["script"].encode(), "text/x-python")),
    ]
    answer = admin.http.post("/console/modules", files=files, data={"csrf_token": "forged"})
    assert answer.status_code == 403, answer.text
    assert "stowaway" not in [m.id for m in world.host.registry.list()]


@pytest.mark.parametrize("path", sorted(SIGN_IN_PATHS))
def test_a_sign_in_post_needs_the_token_of_its_own_sign_in_cookie(world: World, path: str) -> None:
    """Login CSRF: a page elsewhere posting the right credentials signs no one in."""
    form = (
        {"email": world.admin.email, "password": PASSWORD}
        if path == "/console/sign-in"
        else {"token": "admin-token-for-tests-0123456789"}
    )
    forger = ConsoleVisitor(world.app)
    assert forger.http.post(path, data=form).status_code == 403  # no cookie, no field
    token = csrf_in(forger.http.get("/console/sign-in").text)
    for field in ("", "x" + token[1:]):  # the cookie is there, the field does not match it
        answer = forger.http.post(path, data={**form, "csrf_token": field})
        assert answer.status_code == 403, answer.text
    assert forger.session_cookie is None and not forger.is_signed_in()
    # with no cookie of its own, a token copied from another visitor's page does not help
    stranger = ConsoleVisitor(world.app, address="198.51.100.10")
    assert stranger.http.post(path, data={**form, "csrf_token": token}).status_code == 403
    assert stranger.session_cookie is None


# ------------------------------------------------------------------------ roles, tenants


PUBLIC = frozenset(
    {"/console", "/console/sign-out", "/console/account", "/console/account/password",
     *SIGN_IN_PATHS}
)  # fmt: skip
"""Routes every signed-in viewer may use (home sends a marketer to their tenant; the account
page is their own)."""
ADMIN_ONLY_PREFIXES = ("/console/tenants", "/console/users", "/console/audit", "/console/attention")


def _refused(visitor: ConsoleVisitor, route: ConsoleRoute, url: str) -> None:
    form = {"csrf_token": visitor.csrf()} if route.method != "GET" else None
    answer = visitor.http.request(route.method, url, data=form)
    assert answer.status_code in (403, 404), (route, url, answer.status_code, answer.text)


def _user_visitor(world: World, user: UserInfo) -> ConsoleVisitor:
    return signed_in_user(world.app, user)


def test_a_marketer_reaches_no_other_tenant_and_no_admin_page(world: World) -> None:
    marketer = _user_visitor(world, world.marketer)
    own = marketer.http.get("/console/tenants/acme")
    assert own.status_code == 200 and "Acme" in own.text
    home = marketer.http.get("/console")
    assert home.status_code == 303 and home.headers["location"] == "/console/tenants/acme"
    before = table_dump(world.host)
    checked = 0
    for route in console_routes(world.app):
        if route.path in PUBLIC or route.is_asset:
            continue
        if "tenant_id" in route.params:
            # another tenant, or one that does not exist: the same refusal, nothing learnt
            for tenant_id in ("globex", "no-such-tenant"):
                _refused(marketer, route, route.url(world.path_values(tenant_id)))
        else:
            _refused(marketer, route, route.url(world.path_values("acme")))
        checked += 1
    assert checked >= 10
    assert table_dump(world.host) == before
    assert marketer.is_signed_in()


def test_an_integrator_reaches_no_tenant_user_or_audit_page(world: World) -> None:
    integrator = _user_visitor(world, world.integrator)
    assert integrator.http.get("/console/modules").status_code == 200
    before = table_dump(world.host)
    routes = [r for r in console_routes(world.app) if r.path.startswith(ADMIN_ONLY_PREFIXES)]
    assert len(routes) >= 5
    for route in routes:
        _refused(integrator, route, route.url(world.path_values("acme")))
    assert table_dump(world.host) == before


def test_a_signed_out_visitor_is_sent_to_sign_in_from_every_page(world: World) -> None:
    visitor = ConsoleVisitor(world.app)
    before = table_dump(world.host)
    for route in console_routes(world.app):
        if route.path in SIGN_IN_PATHS:
            continue
        url = route.url(world.path_values("acme"))
        if route.is_asset:
            asset = visitor.http.get(url)
            assert asset.status_code == 200, route
            assert asset.headers["content-type"].startswith(("text/css", "text/javascript"))
            continue
        answer = visitor.http.request(route.method, url, data={} if route.method != "GET" else None)
        assert answer.status_code == 303, (route, answer.status_code, answer.text)
        assert answer.headers["location"].startswith("/console/sign-in?next=/console"), route
    assert table_dump(world.host) == before


@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_revoking_or_rotating_an_admin_token_ends_its_console_sessions(
    tmp_path: Path, command: str
) -> None:
    """A leaked admin token is revoked or rotated with the CLI: whoever signed in to the
    console with it is signed out at once, not when the session would have expired."""
    host = make_host(tmp_path / "host.db")
    try:
        app = create_app(host)
        ops_token = host.admin_tokens.create("ops")
        holder = ConsoleVisitor(app)
        assert holder.sign_in_with_admin_token(ops_token).status_code == 303
        bystander = signed_in_admin(app)  # the configured token's session
        assert holder.is_signed_in() and bystander.is_signed_in()

        cli = Cli.in_dir(tmp_path, CRM_HOST_SECRET_KEY=SECRET_KEY)
        result = cli.run("admin", "token", command, "ops")
        assert result.returncode == 0, result.stderr

        assert not holder.is_signed_in()
        assert holder.http.get("/console/tenants").status_code == 303
        assert bystander.is_signed_in()
    finally:
        host.close()
