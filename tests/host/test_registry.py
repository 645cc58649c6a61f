"""The module registry: validation of an upload (every problem at once, located), immutable
semver versions, listing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.errors import Conflict, InvalidInput, NotFound
from host.modules.packages import from_json_body
from host.modules.registry import validate_package
from tests.host.conftest import (
    ADMIN_TOKEN,
    EMAIL_FUNCTIONS,
    EMAIL_SCRIPT,
    email_manifest,
    json_body,
    make_host,
    table_dump,
)

MAX_SCRIPT = 64 * 1024


def validate(manifest=None, script: str = EMAIL_SCRIPT):
    package = from_json_body(json_body(manifest, script), max_script_bytes=MAX_SCRIPT)
    return validate_package(package, max_script_bytes=MAX_SCRIPT)


def problems(manifest=None, script: str = EMAIL_SCRIPT) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as excinfo:
        validate(manifest, script)
    return [(p.location, p.message) for p in excinfo.value.problems]


# ------------------------------------------------------------------------------ validation


def test_functions_list_leaves_out_stubs() -> None:
    module = validate()
    assert module.functions == EMAIL_FUNCTIONS
    assert "CRM_Marketing_ParseWebhookRequest" not in module.functions  # bare raise
    assert "CRM_Marketing_GetTemplateHTML" not in module.functions  # docstring + raise(...)


def test_helper_functions_are_not_contract_functions() -> None:
    script = EMAIL_SCRIPT + "\n\ndef helper(x):\n    return x\n"
    assert validate(script=script).functions == EMAIL_FUNCTIONS


def test_optional_trailing_parameter_may_have_a_default() -> None:
    script = "def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):\n  return 1\n"
    assert validate(script=script).functions == ["CRM_Marketing_SetTemplateHTML"]


def test_syntax_error_names_file_and_line() -> None:
    script = "def CRM_Marketing_ImportTemplates(offset, limit):\n    return [\n\ndef x(:\n"
    ((location, message),) = problems(script=script)
    assert location.startswith("module.py:")
    assert int(location.split(":")[1]) in (2, 4)
    assert "SyntaxError" in message


def test_syntax_error_in_a_named_script() -> None:
    ((location, _),) = problems(email_manifest(script="sendmail.py"), "x = (\n")
    assert location.startswith("sendmail.py:1")


def test_policy_violation_names_the_line() -> None:
    script = "x = 1\n\n\ndef CRM_Marketing_ImportTemplates(offset, limit):\n  return x.__class__\n"
    ((location, message),) = problems(script=script)
    assert location == "module.py:5"
    assert "__class__" in message


def test_every_policy_violation_is_reported() -> None:
    script = "a = b.__dict__\nc = d._private\n"
    assert [loc for loc, _ in problems(script=script)] == ["module.py:1", "module.py:2"]


def test_forbidden_imports_are_refused_at_upload_with_their_lines() -> None:
    script = (
        "import json\nimport os\nfrom subprocess import run\nimport urllib.parse\n" + EMAIL_SCRIPT
    )
    found = problems(script=script)
    assert [loc for loc, _ in found] == ["module.py:2", "module.py:3"]
    assert "import of module 'os' is not allowed" in found[0][1]
    assert "import of module 'subprocess' is not allowed" in found[1][1]


def test_sdk_import_is_accepted_at_upload() -> None:
    script = "from crm_module_sdk import fetch, settings\n" + EMAIL_SCRIPT
    assert validate(script=script).functions


def test_wrong_parameters_name_the_expected_ones() -> None:
    script = "\n\ndef CRM_Marketing_ImportTemplates(offset):\n    return []\n"
    ((location, message),) = problems(script=script)
    assert location == "module.py:3"
    assert "(offset, limit)" in message
    assert "defined as (offset)" in message


def test_too_many_required_parameters() -> None:
    script = "def CRM_Marketing_GetCampaignStats(campaignExternalId, extra):\n    return {}\n"
    ((location, message),) = problems(script=script)
    assert location == "module.py:1"
    assert "(campaignExternalId)" in message


def test_misspelled_function_gets_a_suggestion() -> None:
    script = "def CRM_Marketing_ImportTemplate(offset, limit):\n    return []\n"
    ((location, message),) = problems(script=script)
    assert location == "module.py:1"
    assert "is not a function of email modules" in message
    assert "did you mean CRM_Marketing_ImportTemplates?" in message


def test_messenger_function_in_an_email_module() -> None:
    script = "x = 1\ndef CRM_Marketing_GetMessengerBots():\n    return []\n"
    ((location, message),) = problems(script=script)
    assert location == "module.py:2"
    assert "CRM_Marketing_GetMessengerBots is not a function of email modules" in message
    assert "other module kinds" in message


def test_email_function_in_a_messenger_module() -> None:
    script = "def CRM_Marketing_ImportTemplates(offset, limit):\n    return []\n"
    ((location, message),) = problems(email_manifest(kind="messenger"), script)
    assert location == "module.py:1"
    assert "not a function of messenger modules" in message


def test_manifest_and_script_problems_are_reported_together() -> None:
    found = problems(email_manifest(id="Bad Id", version="1.0"), "def broken(:\n")
    locations = [loc for loc, _ in found]
    assert "manifest.json: $.id" in locations
    assert "manifest.json: $.version" in locations
    assert any(loc.startswith("module.py:1") for loc in locations)


def test_contract_and_policy_problems_are_reported_together() -> None:
    script = (
        "def CRM_Marketing_ImportTemplates(offset):\n"
        "    return offset.__class__\n"
        "def CRM_Marketing_CreateCampain(request):\n"
        "    return {}\n"
    )
    # The policy problem stops compilation, so the contract is checked once it compiles;
    # either way the answer names the line of the policy violation.
    assert ("module.py:2") in [loc for loc, _ in problems(script=script)]
    script_ok = script.replace("offset.__class__", "offset")
    assert [loc for loc, _ in problems(script=script_ok)] == ["module.py:1", "module.py:3"]


def test_invalid_module_title_names_the_version() -> None:
    with pytest.raises(InvalidInput, match=r"module sendmail@1\.0\.0 is invalid"):
        validate(script="def x(:\n")


# ---------------------------------------------------------------------------- the registry


def test_upload_stores_a_version(host, upload) -> None:
    info = upload()
    assert (info.id, info.version, info.kind, info.created) == ("sendmail", "1.0.0", "email", True)
    assert info.functions == EMAIL_FUNCTIONS
    row = host.registry.version("sendmail", "1.0.0")
    assert row.script == EMAIL_SCRIPT
    assert row.manifest["id"] == "sendmail"


def test_invalid_upload_stores_nothing(host, upload) -> None:
    before = table_dump(host)
    with pytest.raises(InvalidInput):
        upload(script="def broken(:\n")
    assert table_dump(host) == before


def test_identical_reupload_is_a_no_op(host, upload) -> None:
    upload()
    before = table_dump(host)
    again = upload()
    assert not again.created
    assert table_dump(host) == before


def test_same_version_other_content_is_a_conflict(host, upload) -> None:
    upload()
    before = table_dump(host)
    with pytest.raises(Conflict) as excinfo:
        upload(script=EMAIL_SCRIPT + "\n# changed\n")
    assert "immutable" in excinfo.value.message
    assert excinfo.value.problems[0].location == "manifest.json: $.version"
    with pytest.raises(Conflict):
        upload(email_manifest(description="other text"))
    assert table_dump(host) == before


def test_kind_cannot_change_across_versions(host, upload) -> None:
    upload()
    before = table_dump(host)
    script = "def CRM_Marketing_GetMessengerBots():\n    return []\n"
    with pytest.raises(Conflict) as excinfo:
        upload(email_manifest(version="2.0.0", kind="messenger"), script)
    assert "email module" in excinfo.value.message
    assert excinfo.value.problems[0].location == "manifest.json: $.kind"
    assert table_dump(host) == before


def test_versions_are_ordered_by_semver(host, upload) -> None:
    for version in ("1.9.0", "1.10.0", "1.2.0", "1.10.0-rc.1", "0.9.0"):
        upload(email_manifest(version=version))
    info = host.registry.get("sendmail")
    assert [v.version for v in info.versions] == [
        "0.9.0",
        "1.2.0",
        "1.9.0",
        "1.10.0-rc.1",
        "1.10.0",
    ]
    assert info.latest.version == "1.10.0"
    assert host.registry.version("sendmail").version == "1.10.0"


def test_list_modules(host, upload) -> None:
    upload()
    upload(
        email_manifest(id="telegram", kind="messenger"),
        "def CRM_Marketing_GetMessengerBots():\n    return []\n",
    )
    listed = host.registry.list()
    assert [m.id for m in listed] == ["sendmail", "telegram"]
    assert listed[1].kind == "messenger"
    assert listed[1].versions[0].functions == ["CRM_Marketing_GetMessengerBots"]


def test_unknown_module_is_not_found(host) -> None:
    with pytest.raises(NotFound, match="module nope does not exist"):
        host.registry.get("nope")
    with pytest.raises(NotFound):
        host.registry.version("nope", "1.0.0")


def test_unknown_version_names_known_versions(host, upload) -> None:
    upload()
    upload(email_manifest(version="1.1.0"))
    with pytest.raises(NotFound) as excinfo:
        host.registry.version("sendmail", "9.9.9")
    assert excinfo.value.problems[0].message == "known versions: 1.0.0, 1.1.0"


def test_upload_event_fires_only_for_new_versions(host, upload) -> None:
    from host.hookspecs import hookimpl

    seen: list[tuple[str, str, str]] = []

    class Listener:
        @hookimpl
        def crm_host_module_uploaded(self, module_id, version, kind):
            seen.append((module_id, version, kind))

    host.hooks.register(Listener())
    upload()
    upload()
    assert seen == [("sendmail", "1.0.0", "email")]


# ------------------------------------------------------------------------------------- API


def test_api_upload_201_then_identical_200_then_conflict_409(client, admin) -> None:
    first = client.post("/api/v1/modules", headers=admin, json=json_body())
    assert first.status_code == 201, first.text
    assert first.json()["functions"] == EMAIL_FUNCTIONS
    again = client.post("/api/v1/modules", headers=admin, json=json_body())
    assert again.status_code == 200
    changed = client.post(
        "/api/v1/modules", headers=admin, json=json_body(script=EMAIL_SCRIPT + "#\n")
    )
    assert changed.status_code == 409
    assert changed.json()["error"] == "conflict"


def test_api_upload_lists_every_problem(host, client, admin) -> None:
    before = table_dump(host)
    response = client.post(
        "/api/v1/modules",
        headers=admin,
        json=json_body(email_manifest(id="X"), "def CRM_Marketing_ImportTemplates(:\n"),
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    locations = [p["location"] for p in body["problems"]]
    assert "manifest.json: $.id" in locations
    assert any(loc.startswith("module.py:1") for loc in locations)
    assert table_dump(host) == before


def test_api_module_views_and_404(client, admin) -> None:
    client.post("/api/v1/modules", headers=admin, json=json_body())
    client.post("/api/v1/modules", headers=admin, json=json_body(email_manifest(version="1.10.0")))
    client.post("/api/v1/modules", headers=admin, json=json_body(email_manifest(version="1.9.0")))
    listed = client.get("/api/v1/modules", headers=admin).json()
    assert listed[0]["latestVersion"] == "1.10.0"
    shown = client.get("/api/v1/modules/sendmail", headers=admin).json()
    assert [v["version"] for v in shown["versions"]] == ["1.0.0", "1.9.0", "1.10.0"]
    version = client.get("/api/v1/modules/sendmail/versions/1.9.0", headers=admin).json()
    assert version["script"] == EMAIL_SCRIPT
    assert version["manifest"]["version"] == "1.9.0"
    missing = client.get("/api/v1/modules/nope", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert client.get("/api/v1/modules/sendmail/versions/2.0.0", headers=admin).status_code == 404


def test_api_body_that_is_not_json(client, admin) -> None:
    response = client.post(
        "/api/v1/modules",
        headers={**admin, "content-type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 422
    assert response.json()["problems"][0]["location"] == "body"


def test_functions_are_checked_even_when_the_manifest_is_invalid() -> None:
    """A broken manifest that still declares its kind: the script's contract problems come
    in the same answer (every problem at once)."""
    script = "def CRM_Marketing_ImportTemplates(offset):\n    return []\n"
    found = problems(email_manifest(version="1.0"), script)
    assert [loc for loc, _ in found] == ["manifest.json: $.version", "module.py:1"]
    assert "(offset, limit)" in found[1][1]


@pytest.mark.parametrize("kind", ["fax", ["email"], None])
def test_no_function_check_without_a_valid_kind(kind) -> None:
    script = "def CRM_Marketing_ImportTemplates(offset):\n    return []\n"
    found = problems(email_manifest(kind=kind), script)
    assert [loc for loc, _ in found] == ["manifest.json: $.kind"]


# ---------------------------------------------------------------- settings the script reads

READS_UNDECLARED = (
    EMAIL_SCRIPT
    + """

def helper(name):
    key = settings["api_key"]
    region = settings["region"]
    fallback = settings.get("timeout", 10)
    return settings[name], key, region, fallback
"""
)


def test_api_upload_refuses_a_literal_read_of_an_undeclared_setting(host, client, admin) -> None:
    before = table_dump(host)
    response = client.post(
        "/api/v1/modules", headers=admin, json=json_body(script=READS_UNDECLARED)
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    line = READS_UNDECLARED.splitlines().index('    region = settings["region"]') + 1
    # only the literal item read: settings.get() has a default, settings[name] is dynamic
    assert body["problems"] == [
        {
            "location": f"module.py:{line}",
            "message": "settings['region'] reads a setting the manifest does not declare "
            '(declared: api_key, batch_size, sender_email); declare it under "settings" in '
            "manifest.json or use settings.get() with a default",
        }
    ]
    assert table_dump(host) == before
    assert client.post("/api/v1/modules", headers=admin, json=json_body()).status_code == 201


def test_declaring_the_setting_makes_the_upload_valid() -> None:
    manifest = email_manifest()
    manifest["settings"]["properties"]["region"] = {"type": "string"}
    assert validate(manifest, READS_UNDECLARED).functions == EMAIL_FUNCTIONS


def test_a_script_with_its_own_settings_name_is_not_checked() -> None:
    # ``settings`` here is the script's own dict (a parameter), not the lent settings
    script = EMAIL_SCRIPT + '\n\ndef helper(settings):\n    return settings["region"]\n'
    assert validate(script=script).functions == EMAIL_FUNCTIONS
    imported = "from crm_module_sdk import settings\n" + READS_UNDECLARED
    line = imported.splitlines().index('    region = settings["region"]') + 1
    assert [loc for loc, _ in problems(script=imported)] == [f"module.py:{line}"]


TYPED_EMAIL_SCRIPT = """\
from typing import Any, Optional, cast

from crm_module_sdk import CRM_Marketing_ImportTemplate, settings

PAGE: list[str] = ["Welcome", "Newsletter"]


def CRM_Marketing_ImportTemplates(offset: int, limit: int) -> list[CRM_Marketing_ImportTemplate]:
    size: Optional[int] = settings.get("batch_size")
    names = cast(list[str], PAGE[offset : offset + (size or limit)])
    return [CRM_Marketing_ImportTemplate(externalId="t" + str(i), name=n) for i, n in enumerate(names)]


def CRM_Marketing_GetTemplateHTML(templateExternalId: str) -> str:
    found: dict[str, Any] = {"id": templateExternalId}
    return "<p>" + str(found["id"]) + "</p>"
"""


def test_a_typed_script_uploads_and_runs_through_the_host(tmp_path, pool) -> None:
    """Annotations and ``typing`` pass upload, and the stored version runs in a worker."""
    host = make_host(tmp_path / "host.db", sandbox=pool)
    try:
        with TestClient(create_app(host)) as client:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            uploaded = client.post(
                "/api/v1/modules", headers=admin, json=json_body(script=TYPED_EMAIL_SCRIPT)
            )
            assert uploaded.status_code == 201, uploaded.text
            assert uploaded.json()["functions"] == [
                "CRM_Marketing_ImportTemplates",
                "CRM_Marketing_GetTemplateHTML",
            ]
            host.tenants.create("acme", "Acme")
            host.tenants.configure("acme", "sendmail", settings={"api_key": "k-123456789"})
            imported = client.post(
                "/api/v1/tenants/acme/modules/sendmail/templates/import", headers=admin
            )
            assert imported.status_code == 200, imported.text
            names = sorted(t.name for t in host.templates.of_tenant("acme"))
            assert names == ["Newsletter", "Welcome"]
    finally:
        host.close()


def test_upload_refuses_typing_names_the_stub_lacks_with_their_lines(host, client, admin) -> None:
    before = table_dump(host)
    script = (
        "from typing import Any, get_type_hints\nfrom typing import ForwardRef\n" + EMAIL_SCRIPT
    )
    response = client.post("/api/v1/modules", headers=admin, json=json_body(script=script))
    assert response.status_code == 422, response.text
    assert [(p["location"], p["message"]) for p in response.json()["problems"]] == [
        (
            "module.py:1",
            "cannot import 'get_type_hints' from module 'typing': not available in scripts",
        ),
        (
            "module.py:2",
            "cannot import 'ForwardRef' from module 'typing': not available in scripts",
        ),
    ]
    assert table_dump(host) == before
