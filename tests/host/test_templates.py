"""Templates through real module scripts in the sandbox: the paginated import (edge cases,
the page cap, upsert on re-import, all-or-nothing on a failing page), preview caching and
publishing — through the service, the HTTP API and the ``crm-host templates`` command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from host.db.models import Invocation, Template
from host.errors import ModuleCallFailed, NotFound
from host.marketing.templates import ImportReport
from host.modules.packages import from_json_body
from host.platform import Host
from sandbox.pool import SandboxPool
from tests.cli_runner import Cli
from tests.host.conftest import ADMIN_TOKEN, SECRET_KEY, email_manifest, make_host
from tests.postgres import database_url

TEMPLATES_SCRIPT = '''\
"""Serves `total` templates; settings steer how it misbehaves."""


def CRM_Marketing_ImportTemplates(offset, limit):
    if settings.get("fail_at_offset") is not None and offset >= settings["fail_at_offset"]:
        raise ValueError("service unavailable at offset " + str(offset))
    if settings.get("overfull"):
        return [{"externalId": "o" + str(offset + i), "name": "O"} for i in range(limit + 1)]
    if settings.get("always_full"):
        return [{"externalId": "x" + str(offset + i), "name": "X"} for i in range(limit)]
    end = min(offset + limit, settings.get("total", 0))
    prefix = settings.get("name_prefix", "T")
    page = []
    for i in range(offset, end):
        item = {"externalId": "t" + str(i), "name": prefix + str(i), "subject": "S" + str(i)}
        if settings.get("with_html"):
            item["html"] = "<p>imported " + str(i) + "</p>"
        page.append(item)
    return page


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return "<p>" + templateExternalId + " v" + str(settings.get("html_version", 1)) + "</p>"


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    if "<broken" in html:
        raise ValueError("the service rejected the HTML")
    return templateExternalId or ("pub-" + name.lower())
'''

SETTINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "writeOnly": True},
        "total": {"type": "integer"},
        "fail_at_offset": {"type": "integer"},
        "always_full": {"type": "boolean"},
        "overfull": {"type": "boolean"},
        "name_prefix": {"type": "string"},
        "with_html": {"type": "boolean"},
        "html_version": {"type": "integer"},
    },
    "required": ["api_key"],
}

MODULE = "tplmod"


def templates_manifest() -> dict[str, Any]:
    return email_manifest(id=MODULE, name="Templates", settings=SETTINGS_SCHEMA)


@pytest.fixture
def host(db_path: Path, pool: SandboxPool) -> Iterator[Host]:
    instance = make_host(db_path, sandbox=pool)
    instance.registry.upload(
        from_json_body(
            {"manifest": templates_manifest(), "script": TEMPLATES_SCRIPT},
            max_script_bytes=64 * 1024,
        )
    )
    for tenant in ("acme", "globex"):
        instance.tenants.create(tenant, tenant.title())
    yield instance
    instance.close()


def configure(host: Host, tenant: str = "acme", **settings: Any) -> None:
    host.tenants.configure(tenant, MODULE, settings={"api_key": "k-12345678", **settings})


def stored(host: Host, tenant: str = "acme") -> dict[str, tuple[str, str | None]]:
    with host.db.transaction() as session:
        rows = session.scalars(select(Template).where(Template.tenant_id == tenant))
        return {r.external_id or r.id: (r.name, r.html) for r in rows}


def calls(host: Host, function: str) -> int:
    with host.db.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(Invocation).where(Invocation.function == function)
        )
        return int(count or 0)


IMPORT = "CRM_Marketing_ImportTemplates"
GET_HTML = "CRM_Marketing_GetTemplateHTML"
SET_HTML = "CRM_Marketing_SetTemplateHTML"


# --- pagination ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "page_size", "pages"),
    [
        (0, 5, 1),  # nothing: one empty page
        (3, 5, 1),  # fewer than the limit: one page
        (10, 5, 3),  # an exact multiple: one extra, empty page
        (12, 5, 3),  # a short last page
    ],
)
def test_import_pages_until_a_short_page(
    host: Host, total: int, page_size: int, pages: int
) -> None:
    configure(host, total=total)
    report = host.templates.import_templates("acme", MODULE, page_size=page_size)
    assert (report.imported, report.pages, report.truncated) == (total, pages, False)
    assert sorted(stored(host)) == sorted(f"t{i}" for i in range(total))
    assert calls(host, IMPORT) == pages


def test_a_module_that_never_ends_is_stopped_at_the_page_cap(host: Host) -> None:
    configure(host, always_full=True)
    seen: list[tuple[int, int, int]] = []
    report = host.templates.import_templates(
        "acme", MODULE, page_size=4, max_pages=3, on_page=lambda *a: seen.append(a)
    )
    assert report == ImportReport(imported=12, pages=3, truncated=True, created=12, updated=0)
    assert seen == [(1, 4, 4), (2, 4, 8), (3, 4, 12)]
    assert calls(host, IMPORT) == 3
    assert len(stored(host)) == 12  # what came back before the cap is kept


def test_reimport_updates_in_place_without_duplicates(host: Host) -> None:
    configure(host, total=7)
    first = host.templates.import_templates("acme", MODULE, page_size=3)
    assert (first.created, first.updated) == (7, 0)
    ids = {t.external_id: t.id for t in host.templates.of_tenant("acme")}

    configure(host, total=8, name_prefix="Renamed ")
    second = host.templates.import_templates("acme", MODULE, page_size=3)
    assert (second.imported, second.created, second.updated) == (8, 1, 7)
    after = host.templates.of_tenant("acme")
    assert len(after) == 8
    assert all(t.name.startswith("Renamed ") for t in after)
    assert {t.external_id: t.id for t in after if t.external_id in ids} == ids  # same rows


def test_a_failing_page_stores_nothing(host: Host) -> None:
    configure(host, total=6)
    host.templates.import_templates("acme", MODULE, page_size=2)
    before = stored(host)

    configure(host, total=20, name_prefix="New ", fail_at_offset=4)
    with pytest.raises(ModuleCallFailed) as failure:
        host.templates.import_templates("acme", MODULE, page_size=2)
    assert failure.value.kind == "script_error"
    assert "offset 4" in failure.value.message
    assert stored(host) == before  # pages 1 and 2 were not applied either
    with host.db.transaction() as session:
        outcomes = session.scalars(
            select(Invocation.outcome).where(Invocation.function == IMPORT).order_by(Invocation.id)
        ).all()
    assert outcomes[-3:] == ["ok", "ok", "script_error"]


def test_more_than_limit_is_an_invalid_return(host: Host) -> None:
    configure(host, overfull=True)
    with pytest.raises(ModuleCallFailed) as failure:
        host.templates.import_templates("acme", MODULE, page_size=3)
    assert failure.value.kind == "invalid_return"
    assert "returned 4 templates for limit 3" in failure.value.message
    assert stored(host) == {}


def test_import_for_a_module_not_enabled(host: Host) -> None:
    with pytest.raises(NotFound):
        host.templates.import_templates("acme", MODULE)


def test_imports_are_per_tenant(host: Host) -> None:
    configure(host, "acme", total=3)
    configure(host, "globex", total=1)
    host.templates.import_templates("acme", MODULE)
    host.templates.import_templates("globex", MODULE)
    assert len(stored(host, "acme")) == 3
    assert len(stored(host, "globex")) == 1


# --- preview and publish ---------------------------------------------------------------------


def test_preview_serves_imported_html_without_a_module_call(host: Host) -> None:
    configure(host, total=1, with_html=True)
    host.templates.import_templates("acme", MODULE)
    (template,) = host.templates.of_tenant("acme")
    assert host.templates.html("acme", template.id) == "<p>imported 0</p>"
    assert calls(host, GET_HTML) == 0


def test_preview_is_cached_and_publish_refreshes_the_cache(host: Host) -> None:
    configure(host, total=1)
    host.templates.import_templates("acme", MODULE)
    (template,) = host.templates.of_tenant("acme")
    assert not template.has_html

    assert host.templates.html("acme", template.id) == "<p>t0 v1</p>"
    configure(host, total=1, html_version=2)  # the service changed; the cache still answers
    assert host.templates.html("acme", template.id) == "<p>t0 v1</p>"
    assert calls(host, GET_HTML) == 1
    assert host.templates.get("acme", template.id).html_cached_at is not None

    published = host.templates.publish("acme", template.id, html="<p>new</p>")
    assert published.external_id == "t0"  # the service kept its id
    assert published.published_at is not None
    assert host.templates.html("acme", template.id) == "<p>new</p>"
    assert calls(host, GET_HTML) == 1

    assert host.templates.html("acme", template.id, refresh=True) == "<p>t0 v2</p>"
    assert calls(host, GET_HTML) == 2


def test_reimport_without_html_invalidates_the_cache(host: Host) -> None:
    configure(host, total=1)
    host.templates.import_templates("acme", MODULE)
    (template,) = host.templates.of_tenant("acme")
    host.templates.html("acme", template.id)
    host.templates.import_templates("acme", MODULE)
    host.templates.html("acme", template.id)
    assert calls(host, GET_HTML) == 2


def test_publish_a_local_template_stores_the_returned_id(host: Host) -> None:
    configure(host)
    local = host.templates.create("acme", MODULE, "Welcome", "<h1>Hi</h1>", subject="Hello")
    assert local.external_id is None
    published = host.templates.publish("acme", local.id)
    assert published.external_id == "pub-welcome"
    assert host.templates.html("acme", local.id) == "<h1>Hi</h1>"
    assert calls(host, GET_HTML) == 0


def test_host_calls_may_leave_the_optional_template_id_out(host: Host) -> None:
    """SetTemplateHTML's templateExternalId is optional for every caller in the host: left
    out, the module receives None; a required argument left out is the caller's bug."""
    configure(host)
    assert host.invoker.call("acme", MODULE, SET_HTML, html="<p/>", name="Direct") == "pub-direct"
    assert (
        host.invoker.call("acme", MODULE, SET_HTML, html="<p/>", name="X", templateExternalId="t7")
        == "t7"
    )
    before = calls(host, SET_HTML)
    with pytest.raises(ValueError, match=r"missing \['name'\]"):
        host.invoker.call("acme", MODULE, SET_HTML, html="<p/>")
    assert calls(host, SET_HTML) == before  # refused before the module ran


def test_a_failed_publish_changes_nothing(host: Host) -> None:
    configure(host)
    local = host.templates.create("acme", MODULE, "Welcome", "<h1>Hi</h1>")
    with pytest.raises(ModuleCallFailed) as failure:
        host.templates.publish("acme", local.id, html="<broken")
    assert failure.value.kind == "script_error"
    assert host.templates.get("acme", local.id).external_id is None
    assert host.templates.html("acme", local.id) == "<h1>Hi</h1>"


# --- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def tenant_keys(host: Host) -> dict[str, str]:
    return {t: host.tenants.create(t, t.title())[1] for t in ("initech", "umbrella")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_http_import_list_preview_publish(
    host: Host, client: TestClient, tenant_keys: dict[str, str]
) -> None:
    configure(host, "initech", total=5)
    me = bearer(tenant_keys["initech"])
    base = "/api/v1/tenants/initech"
    imported = client.post(f"{base}/modules/{MODULE}/templates/import?pageSize=2", headers=me)
    assert imported.status_code == 200, imported.text
    assert imported.json() == {
        "imported": 5,
        "pages": 3,
        "truncated": False,
        "created": 5,
        "updated": 0,
    }
    listed = client.get(f"{base}/templates", headers=me).json()
    assert [t["externalId"] for t in listed] == [f"t{i}" for i in range(5)]
    first = listed[0]["id"]
    preview = client.get(f"{base}/templates/{first}/html", headers=me)
    assert preview.json() == {"id": first, "html": "<p>t0 v1</p>"}

    created = client.post(
        f"{base}/templates",
        headers=me,
        json={"module": MODULE, "name": "Local", "html": "<b>x</b>"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["externalId"] is None
    published = client.post(f"{base}/templates/{created.json()['id']}/publish", headers=me)
    assert published.status_code == 200, published.text
    assert published.json()["externalId"] == "pub-local"


def test_http_failure_in_the_middle_is_a_502_with_the_kind(
    host: Host, client: TestClient, tenant_keys: dict[str, str]
) -> None:
    configure(host, "initech", total=10, fail_at_offset=2)
    answer = client.post(
        f"/api/v1/tenants/initech/modules/{MODULE}/templates/import?pageSize=2",
        headers=bearer(tenant_keys["initech"]),
    )
    assert answer.status_code == 502
    assert answer.json()["error"] == "script_error"
    assert answer.json()["function"] == IMPORT
    assert stored(host, "initech") == {}


def test_http_truncated_import(host: Host, client: TestClient, tenant_keys: dict[str, str]) -> None:
    configure(host, "initech", always_full=True)
    answer = client.post(
        f"/api/v1/tenants/initech/modules/{MODULE}/templates/import?pageSize=1&maxPages=2",
        headers=bearer(tenant_keys["initech"]),
    )
    assert answer.json()["truncated"] is True
    assert answer.json()["pages"] == 2


def test_http_cross_tenant_access_is_forbidden(
    host: Host, client: TestClient, tenant_keys: dict[str, str]
) -> None:
    configure(host, "initech", total=1)
    host.templates.import_templates("initech", MODULE)
    (template,) = host.templates.of_tenant("initech")
    other = bearer(tenant_keys["umbrella"])
    for method, path in [
        ("GET", "/api/v1/tenants/initech/templates"),
        ("GET", f"/api/v1/tenants/initech/templates/{template.id}/html"),
        ("POST", f"/api/v1/tenants/initech/templates/{template.id}/publish"),
        ("POST", f"/api/v1/tenants/initech/modules/{MODULE}/templates/import"),
    ]:
        assert client.request(method, path, headers=other).status_code == 403, path
    # and through its own tenant path, another tenant's template does not exist
    answer = client.get(f"/api/v1/tenants/umbrella/templates/{template.id}/html", headers=other)
    assert answer.status_code == 404


def test_http_create_needs_an_enabled_module_and_valid_fields(
    host: Host, client: TestClient
) -> None:
    admin = bearer(ADMIN_TOKEN)
    missing = client.post(
        "/api/v1/tenants/acme/templates", headers=admin, json={"module": MODULE, "name": "n"}
    )
    assert missing.status_code == 422
    not_enabled = client.post(
        "/api/v1/tenants/acme/templates",
        headers=admin,
        json={"module": MODULE, "name": "n", "html": "x"},
    )
    assert not_enabled.status_code == 404


def test_http_preview_not_implemented_is_501(host: Host, client: TestClient) -> None:
    host.registry.upload(
        from_json_body(
            {
                "manifest": email_manifest(id="nopreview", settings=SETTINGS_SCHEMA),
                "script": TEMPLATES_SCRIPT.replace(
                    "def CRM_Marketing_GetTemplateHTML(templateExternalId):",
                    "def CRM_Marketing_GetTemplateHTML(templateExternalId):\n"
                    "    raise NotImplementedError\n\n\ndef unused(templateExternalId):",
                ),
            },
            max_script_bytes=64 * 1024,
        )
    )
    host.tenants.configure("acme", "nopreview", settings={"api_key": "k", "total": 1})
    host.templates.import_templates("acme", "nopreview")
    (template,) = host.templates.of_tenant("acme")
    answer = client.get(
        f"/api/v1/tenants/acme/templates/{template.id}/html", headers=bearer(ADMIN_TOKEN)
    )
    assert answer.status_code == 501
    assert answer.json()["error"] == "not_implemented"


# --- CLI -------------------------------------------------------------------------------------


def test_cli_templates_import(host: Host, db_path: Path) -> None:
    configure(host, total=7)
    cli = Cli.in_dir(db_path.parent, CRM_HOST_SECRET_KEY=SECRET_KEY)
    cli.env["CRM_HOST_DATABASE_URL"] = database_url(db_path)
    done = cli.run("templates", "import", "acme", MODULE, "--page-size", "3")
    assert done.returncode == 0, done.stderr
    assert "imported 7 templates from 3 pages (7 new, 0 updated)" in done.stdout
    assert "page 3: 1 templates (7 so far)" in done.stderr
    assert len(stored(host)) == 7

    listed = cli.run("templates", "list", "acme")
    assert listed.returncode == 0, listed.stderr
    assert "t6" in listed.stdout

    configure(host, always_full=True)
    capped = cli.run("templates", "import", "acme", MODULE, "--page-size", "2", "--max-pages", "2")
    assert capped.returncode == 0, capped.stderr
    assert "warning: stopped after 2 pages" in capped.stderr

    configure(host, total=5, fail_at_offset=0)
    failed = cli.run("templates", "import", "acme", MODULE)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "offset 0" in failed.stderr
