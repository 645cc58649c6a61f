"""The script editor page decides on the server whether to load the optional rich editor: only
when its build output exists (never a link that would 404), never when ``?editor=plain``
asks for the textarea, and then with a fresh CSP nonce admitted in ``style-src`` alone. The
posted form is the textarea's either way. (The editor itself, in a browser:
``tests/console/test_rich_script_editor_journey.py``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.api.app import create_app
from host.console.pages import scripts
from host.console.templating import SECURITY_HEADERS
from host.modules.packages import from_json_body
from tests.host.conftest import json_body, make_host
from tests.host.console_client import ConsoleVisitor, csrf_in, signed_in_admin

PAGE = "/console/modules/sendmail/scripts"
BUNDLE_TAG = re.compile(r'<script src="/console/static/editor/editor.js" nonce="([^"]+)" defer>')


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleVisitor]:
    host = make_host(tmp_path_factory.mktemp("console-rich-editor") / "host.db")
    host.registry.upload(from_json_body(json_body(), max_script_bytes=64 * 1024))
    try:
        yield signed_in_admin(create_app(host))
    finally:
        host.close()


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the build output where the page looks for it."""
    bundle = tmp_path / "editor.js"
    bundle.write_text("/* built */\n")
    monkeypatch.setattr(scripts, "EDITOR_BUNDLE", bundle)
    return bundle


@pytest.fixture
def not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripts, "EDITOR_BUNDLE", tmp_path / "missing" / "editor.js")


def _assets(page: str) -> list[str]:
    return re.findall(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"', page)


@pytest.mark.usefixtures("not_built")
def test_without_the_build_the_page_is_the_textarea_and_links_nothing_missing(
    admin: ConsoleVisitor,
) -> None:
    page = admin.http.get(PAGE)
    assert page.status_code == 200, page.text
    assert "editor.js" not in page.text and "data-rich-editor" not in page.text
    assert "plain text editor" not in page.text
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    for asset in _assets(page.text):
        assert admin.http.get(asset).status_code == 200, asset


def test_with_the_build_the_page_loads_it_with_a_fresh_style_nonce(
    admin: ConsoleVisitor, built: Path
) -> None:
    nonces = []
    for _ in range(2):
        page = admin.http.get(PAGE)
        assert page.status_code == 200, page.text
        found = BUNDLE_TAG.search(page.text)
        assert found is not None, "the page does not load the built editor"
        nonce = found.group(1)
        policy = page.headers["content-security-policy"]
        directives = dict(d.split(" ", 1) for d in policy.split("; "))
        assert directives["style-src"] == f"'self' 'nonce-{nonce}'"
        assert directives["script-src"] == "'self'"
        assert "unsafe" not in policy
        assert "data-rich-editor" in page.text and "data-replaced-by-rich-editor" in page.text
        assert f"{PAGE}?version=1.0.0&amp;editor=plain" in page.text
        nonces.append(nonce)
    assert nonces[0] != nonces[1], "a nonce is per response"


def test_editor_plain_keeps_the_textarea_through_validate_and_save(
    admin: ConsoleVisitor, built: Path
) -> None:
    page = admin.http.get(PAGE, params={"editor": "plain"})
    assert page.status_code == 200
    assert "editor.js" not in page.text and "data-rich-editor" not in page.text
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    action = f"{PAGE}?version=1.0.0&amp;editor=plain"
    assert f'action="{action}"' in page.text

    script = json_body()["script"]
    form = {"csrf_token": csrf_in(page.text), "script": script, "version": "1.0.1"}
    checked = admin.post(action.replace("&amp;", "&"), {**form, "action": "validate"})
    assert checked.status_code == 200, checked.text
    assert "editor.js" not in checked.text and "Validation passed" in checked.text
    saved = admin.post(action.replace("&amp;", "&"), {**form, "action": "save"})
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"{PAGE}?version=1.0.1&editor=plain"


def test_the_validate_markers_carry_their_line_for_the_editor(
    admin: ConsoleVisitor, built: Path
) -> None:
    page = admin.http.get(PAGE)
    broken = json_body()["script"].replace("):", ")", 1)
    answer = admin.post(
        PAGE + "?version=1.0.0",
        {"csrf_token": csrf_in(page.text), "script": broken, "action": "validate"},
    )
    assert answer.status_code == 422
    markers = re.findall(
        r'<p class="marker error" role="note" data-line="(\d+)" data-severity="error" '
        r'data-message="([^"]*)">',
        answer.text,
    )
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if text.startswith("def "))
    assert [int(n) for n, _ in markers] == [line]
    assert "SyntaxError" in markers[0][1]
    assert BUNDLE_TAG.search(answer.text) is not None


def test_an_unknown_editor_choice_is_a_clear_4xx(admin: ConsoleVisitor, built: Path) -> None:
    answer = admin.http.get(PAGE, params={"editor": "<rich>"})
    assert answer.status_code == 422
    assert "editor" in answer.text and "<rich>" not in answer.text
    assert "Traceback" not in answer.text
    assert admin.http.get(PAGE).status_code == 200


def test_the_bundle_location_is_the_static_folder_the_console_serves(
    admin: ConsoleVisitor,
) -> None:
    """The path the page checks is the one ``/console/static/editor/editor.js`` serves."""
    static = Path(str(scripts.EDITOR_BUNDLE)).parent.parent
    served = admin.http.get("/console/static/console.js")
    assert served.status_code == 200
    assert served.content == (static / "console.js").read_bytes()
