"""Settings-schema regexes run on RE2, through the HTTP API and ``crm-host module validate``:
an RE2-incompatible regex is a 422 naming its JSON path (nothing stored), a pathological
pattern against 100,000 characters validates, and the ECMA-262 dialect points the host keeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from host.platform import Host
from tests.cli_runner import Cli
from tests.host.conftest import EMAIL_SCRIPT, SECRET_API_KEY, email_manifest, write_package

PATHOLOGICAL = r"^(\w+\.?)+$"
"""Exponential for a backtracking engine on a long word that fails at its end."""
KEY_PATTERN = r"^x_(\w+\.?)+$"


def settings_schema(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"api_key": {"type": "string", "writeOnly": True}, **properties},
        "required": ["api_key"],
    }


def upload(client: TestClient, admin: dict[str, str], settings: dict[str, Any]) -> Any:
    body = {"manifest": email_manifest(settings=settings), "script": EMAIL_SCRIPT}
    return client.post("/api/v1/modules", headers=admin, json=body)


def problems(answer: Any) -> dict[str, str]:
    return {p["location"]: p["message"] for p in answer.json()["problems"]}


UNUSABLE = [
    (
        settings_schema(code={"type": "string", "pattern": "^(?=.*[0-9]).+$"}),
        "$.settings.properties.code.pattern",
        "invalid perl operator: (?=",
    ),
    (
        settings_schema(code={"type": "string", "pattern": r"(?<!x)y"}),
        "$.settings.properties.code.pattern",
        "invalid perl operator: (?<!",
    ),
    (
        {**settings_schema(), "patternProperties": {r"^(a)\1$": {"type": "string"}}},
        r'$.settings.patternProperties["^(a)\\1$"]',
        r"invalid escape sequence: \1",
    ),
    (
        {**settings_schema(), "propertyNames": {"pattern": "^(?!x)"}},
        "$.settings.propertyNames.pattern",
        "invalid perl operator: (?!",
    ),
    (
        settings_schema(
            tags={"type": "array", "items": {"anyOf": [{"pattern": r"(\w)\1"}, {"type": "null"}]}}
        ),
        "$.settings.properties.tags.items.anyOf[0].pattern",
        r"invalid escape sequence: \1",
    ),
]


@pytest.mark.parametrize(("settings", "path", "reason"), UNUSABLE)
def test_upload_refuses_an_re2_incompatible_regex_at_its_path(
    client: TestClient, admin: dict[str, str], settings: Any, path: str, reason: str
) -> None:
    answer = upload(client, admin, settings)
    assert answer.status_code == 422
    found = problems(answer)
    message = found[f"manifest.json: {path}"]
    assert reason in message and "RE2" in message
    assert client.get("/api/v1/modules", headers=admin).json() == []  # nothing stored


def test_a_pattern_key_inside_data_is_not_a_regex(
    client: TestClient, admin: dict[str, str]
) -> None:
    settings = settings_schema(
        rule={"type": "object", "default": {"pattern": "(?=not a schema)"}},
        name={"type": "string", "pattern": "^\\u00e9t\\u00e9$"},  # ECMA \\uXXXX is accepted
    )
    assert upload(client, admin, settings).status_code == 201


def test_unevaluated_properties_with_pattern_properties_is_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    settings = {
        **settings_schema(),
        "patternProperties": {"^x-": {"type": "string"}},
        "unevaluatedProperties": False,
    }
    answer = upload(client, admin, settings)
    assert answer.status_code == 422
    assert (
        "patternProperties" in problems(answer)["manifest.json: $.settings.unevaluatedProperties"]
    )


def configure(client: TestClient, admin: dict[str, str], settings: dict[str, Any]) -> Any:
    return client.put(
        "/api/v1/tenants/acme/modules/sendmail",
        headers=admin,
        json={"version": "1.0.0", "settings": settings, "enabled": True},
    )


@pytest.fixture
def pathological(
    host: Host, client: TestClient, admin: dict[str, str], tenant: tuple[str, str]
) -> Host:
    settings = {
        **settings_schema(word={"type": "string", "pattern": PATHOLOGICAL}),
        "patternProperties": {KEY_PATTERN: {"type": "integer"}},
    }
    assert upload(client, admin, settings).status_code == 201
    return host


def test_pathological_pattern_on_100000_characters_validates(
    pathological: Host, client: TestClient, admin: dict[str, str]
) -> None:
    word, key = "a" * 100_000, "x_" + "a" * 100_000
    answer = configure(client, admin, {"api_key": SECRET_API_KEY, "word": word, key: 1})
    assert answer.status_code == 200, answer.text
    stored = pathological.tenants.enablement("acme", "sendmail").settings
    assert stored["word"] == word and stored[key] == 1


def test_pathological_pattern_on_a_failing_100000_characters_is_a_clean_422(
    pathological: Host, client: TestClient, admin: dict[str, str]
) -> None:
    word = "a" * 99_999 + "!"
    key = "x_" + word  # no pattern matches it: an ordinary extra key, searched in linear time
    answer = configure(client, admin, {"api_key": SECRET_API_KEY, "word": word, key: "x"})
    assert answer.status_code == 422
    assert problems(answer) == {"settings.word": f"must match the pattern {PATHOLOGICAL}"}
    assert word not in answer.text
    assert pathological.tenants.enablements("acme") == []  # nothing stored


def test_dollar_matches_only_at_the_end(
    client: TestClient, admin: dict[str, str], tenant: tuple[str, str]
) -> None:
    settings = settings_schema(slug={"type": "string", "pattern": "^[a-z]+$"})
    assert upload(client, admin, settings).status_code == 201
    answer = configure(client, admin, {"api_key": SECRET_API_KEY, "slug": "sendgrid\n"})
    assert answer.status_code == 422
    assert "settings.slug" in problems(answer)


def test_a_setting_with_format_regex_must_be_an_re2_regex(
    client: TestClient, admin: dict[str, str], tenant: tuple[str, str]
) -> None:
    settings = settings_schema(filter={"type": "string", "format": "regex"})
    assert upload(client, admin, settings).status_code == 201
    refused = configure(client, admin, {"api_key": SECRET_API_KEY, "filter": "^(?=a)"})
    assert refused.status_code == 422
    assert problems(refused) == {"settings.filter": "must be a valid regular expression"}
    accepted = configure(client, admin, {"api_key": SECRET_API_KEY, "filter": r"^news-\d+$"})
    assert accepted.status_code == 200, accepted.text


def test_module_validate_reports_the_file_and_path(tmp_path: Path) -> None:
    manifest = email_manifest(
        settings=settings_schema(code={"type": "string", "pattern": "^(?=.*[0-9]).+$"})
    )
    package = write_package(tmp_path / "mod", manifest)
    result = Cli.in_dir(tmp_path).run("module", "validate", str(package))
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: manifest.json: $.settings.properties.code.pattern: must be a valid regular "
        "expression (invalid perl operator: (?=)"
    )
    assert "re2.cc" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert json.loads((package / "manifest.json").read_text()) == manifest  # untouched


def test_every_regex_of_the_manifest_schema_itself_runs_on_re2() -> None:
    """The host validates manifests with the same engine: a lookaround in its own schema would
    make every manifest fail that keyword."""
    from host.manifest import load_manifest_schema
    from host.schema_regex import regex_problems

    assert list(regex_problems(load_manifest_schema())) == []
