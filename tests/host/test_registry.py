"""The module registry: validation of an upload (every problem at once, located), immutable
semver versions, listing."""

from __future__ import annotations

import pytest

from host.errors import Conflict, InvalidInput, NotFound
from host.modules.packages import from_json_body
from host.modules.registry import validate_package
from tests.host.conftest import (
    EMAIL_FUNCTIONS,
    EMAIL_SCRIPT,
    email_manifest,
    json_body,
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
