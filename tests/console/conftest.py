"""Browser-test fixtures of the console: a real ``crm-host serve`` per test module, one
headless Debian chromium per session driven by Playwright, and a fresh browser context per
test in which every request to an address other than 127.0.0.1 is aborted and recorded (the
test fails if any was attempted).

Chromium is the system's (``/usr/bin/chromium``, from apt); ``playwright install`` is never
run. Without it the browser tests skip with the reason, unless ``CRM_HOST_TEST_BROWSER`` is
``required`` (as in ``.ci/run``), where a missing browser fails. Screenshots go to a temporary
folder, or to ``CRM_HOST_SCREENSHOTS`` when set (``docs/console.md`` says how to refresh
``docs/console/``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.e2e.server import RunningHost, running_host

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1"}
PASSWORD = "a long console passphrase 42"


def label(text: str) -> re.Pattern[str]:
    """A field's label: ``text`` itself, perhaps followed by the "(required)" marker."""
    return re.compile(rf"^{re.escape(text)}( \(required\))?$")


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed: pip install -e '.[test]'"
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        return "Debian chromium is not installed: apt-get install -y chromium"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CRM_HOST_TEST_BROWSER") == "required":
            pytest.fail(f"CRM_HOST_TEST_BROWSER=required but {missing}")
        pytest.skip(f"browser tests need a browser: {missing}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary user-data-dir of its own
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=CHROMIUM_FLAGS,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    """A real ``crm-host serve`` on 127.0.0.1, shared by one test module's journeys."""
    workdir = tmp_path_factory.mktemp("console-host")
    with running_host(workdir, CRM_HOST_SANDBOX_WORKERS="1") as host:
        yield host


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("CRM_HOST_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Console:
    """One browser context on the served console, with helpers the journeys share."""

    page: Page
    host: RunningHost
    screenshots: Path
    outside_requests: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        self.page.goto(self.host.url + path)

    def sign_in_with_admin_token(self) -> None:
        self.go("/console/sign-in")
        self.page.get_by_label(label("Admin token")).fill(self.host.admin_token)
        self.page.get_by_role("button", name="Sign in as admin").click()
        self.page.wait_for_url(re.compile(r"/console$"))

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.go("/console/sign-in")
        self.page.get_by_label(label("Email")).fill(email)
        self.page.get_by_label(label("Password")).fill(password)
        self.page.get_by_role("button", name="Sign in", exact=True).click()
        self.page.wait_for_load_state()

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        self.page.wait_for_url(re.compile(r"/console/sign-in"))

    def create_user(self, email: str, role: str, tenant: str = "") -> None:
        self.go("/console/users")
        page = self.page
        page.get_by_label(label("Email")).fill(email)
        page.get_by_label(label("Password")).fill(PASSWORD)
        page.get_by_label(label("Role")).select_option(role)
        if tenant:
            page.get_by_label(label("Tenant (marketers only)")).select_option(tenant)
        page.get_by_role("button", name="Create user").click()
        page.get_by_role("status").filter(has_text=f"User {email} created").wait_for()

    def unlabelled_fields(self) -> list[str]:
        """Form fields of the current page without a label (hidden inputs and buttons
        aside): each named by its id or name."""
        return self.page.evaluate(
            """() => Array.from(document.querySelectorAll('input, select, textarea'))
                 .filter(el => !['hidden', 'submit', 'button'].includes(el.type))
                 .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label')
                               && !el.getAttribute('aria-labelledby'))
                 .map(el => el.id || el.name)"""
        )

    def scrolls_sideways(self) -> bool:
        return self.page.evaluate(
            "() => document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )

    def screenshot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def new_console(
    browser: Browser, served: RunningHost, screenshots: Path, **options: object
) -> tuple[BrowserContext, Console]:
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 800}, **options})
    console = Console(context.new_page(), served, screenshots)

    def only_local(route: Route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if host in LOCAL_HOSTS or url.startswith(("data:", "about:", "blob:")):
            route.continue_()
        else:
            console.outside_requests.append(url)
            route.abort()

    context.route("**/*", only_local)
    return context, console


@pytest.fixture
def console(browser: Browser, served: RunningHost, screenshots: Path) -> Iterator[Console]:
    """A fresh browser context (no cookies) on the served console; the test fails if the
    page tried to reach anything but 127.0.0.1."""
    context, console = new_console(browser, served, screenshots)
    try:
        yield console
    finally:
        context.close()
    assert console.outside_requests == [], "the console tried to reach the internet"
