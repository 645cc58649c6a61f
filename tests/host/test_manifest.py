"""Manifest parsing and validation: every problem reported, each at an exact location."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from host.errors import InvalidInput, Problem
from host.json_schema import format_path
from host.manifest import (
    MANIFEST_SCHEMA_PATH,
    Manifest,
    load_manifest_schema,
    parse_manifest,
    semver_key,
    validate_manifest,
)
from sandbox.limits import DEFAULT_LIMITS

MINIMAL: dict[str, Any] = {
    "id": "sendgrid",
    "name": "SendGrid",
    "version": "1.0.0",
    "kind": "email",
    "script": "module.py",
}

FULL: dict[str, Any] = {
    "id": "sendgrid",
    "name": "SendGrid",
    "version": "2.1.0-beta.1+build.7",
    "kind": "email",
    "script": "module.py",
    "description": "Sends campaigns through SendGrid.",
    "egress": ["api.sendgrid.com", "*.sendgrid.net", "hooks.example.com:8443"],
    "settings": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "api_key": {"type": "string", "writeOnly": True},
            "sender_email": {"type": "string", "format": "email"},
            "auth": {
                "type": "object",
                "properties": {"token": {"type": "string", "writeOnly": True}},
            },
            "lists": {"type": "array", "items": {"$ref": "#/$defs/list_id"}},
        },
        "required": ["api_key"],
        "additionalProperties": False,
        "$defs": {"list_id": {"type": "string", "minLength": 1}},
    },
    "limits": {
        "timeout_s": 5,
        "cpu_s": 2.5,
        "memory_mb": 128,
        "max_fetches": 20,
        "fetch_timeout_s": 10,
        "max_response_bytes": 1048576,
        "log_bytes": 65536,
        "storage_bytes": 1024,
    },
}


def manifest(**changes: Any) -> dict[str, Any]:
    """MINIMAL with changes; a value of ``...`` removes the key."""
    data = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def problems_of(data: Any) -> list[Problem]:
    with pytest.raises(InvalidInput) as caught:
        validate_manifest(data)
    return caught.value.problems


def only_problem(data: Any) -> Problem:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def at(problems: list[Problem], location: str) -> list[str]:
    return [p.message for p in problems if p.location == location]


# ------------------------------------------------------------------------------ valid


def test_minimal_manifest_gets_defaults() -> None:
    m = parse_manifest(json.dumps(MINIMAL))
    assert (m.id, m.name, m.version, m.kind, m.script) == (
        "sendgrid",
        "SendGrid",
        "1.0.0",
        "email",
        "module.py",
    )
    assert m.description == ""
    assert m.egress == []
    assert m.limits == {}
    assert m.settings == {"type": "object", "properties": {}, "additionalProperties": False}
    assert m.secret_fields == ()
    assert m.ref == "sendgrid@1.0.0"


def test_full_manifest_round_trips() -> None:
    m = parse_manifest(json.dumps(FULL).encode("utf-8"))
    assert m.as_json() == FULL
    assert m.egress == FULL["egress"]
    assert m.limits["memory_mb"] == 128
    assert m.secret_fields == (("api_key",), ("auth", "token"))


def test_messenger_kind_and_utf8_bom_are_accepted() -> None:
    text = "\ufeff" + json.dumps(manifest(kind="messenger", name="Télégramme"))
    m = parse_manifest(text.encode("utf-8"))
    assert m.kind == "messenger"
    assert m.name == "Télégramme"


def test_manifest_is_frozen() -> None:
    m = validate_manifest(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        m.version = "9.9.9"  # type: ignore[misc]


def test_constructing_directly_runs_the_same_validation() -> None:
    with pytest.raises(InvalidInput) as caught:
        Manifest(**manifest(id="Bad Id"))
    assert caught.value.problems[0].location == "manifest: $.id"
    assert Manifest(**MINIMAL).id == "sendgrid"


# ---------------------------------------------------------------------------- invalid


def test_not_json_reports_line_and_column() -> None:
    text = '{\n  "id": "sendgrid",\n  "name" "SendGrid"\n}'
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text, source="sendgrid/manifest.json")
    [problem] = caught.value.problems
    assert problem.location == "sendgrid/manifest.json:3:10"
    assert problem.message == "invalid JSON: Expecting ':' delimiter"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"id": "a", "id": "b"}', 'invalid JSON: key "id" appears twice in one object'),
        ('{"limits": {"timeout_s": NaN}}', "NaN is not valid JSON"),
        (b'{"name": "\xff"}', "is not UTF-8 text (invalid byte at offset 10)"),
        ("[" * 100_000, "invalid JSON: nested deeper than 64 levels"),
    ],
)
def test_json_that_python_would_accept_is_still_rejected(raw: str | bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(raw)
    assert caught.value.problems == [Problem("manifest.json", message)]


def test_oversized_manifest_is_rejected_before_parsing() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(" " * (1024 * 1024 + 1))
    assert "at most 1048576" in caught.value.problems[0].message


@pytest.mark.parametrize("data", [[], "sendgrid", 42, None])
def test_not_an_object(data: Any) -> None:
    problem = only_problem(data)
    assert problem.location == "manifest.json: $"
    assert problem.message.startswith("must be an object, not ")


def test_missing_required_keys_are_reported_together() -> None:
    problems = problems_of({"name": "SendGrid"})
    assert [p.location for p in problems] == [
        "manifest.json: $.id",
        "manifest.json: $.version",
        "manifest.json: $.kind",
        "manifest.json: $.script",
    ]
    assert {p.message for p in problems} == {"is required but missing"}


@pytest.mark.parametrize("bad", ["Sendgrid", "s", "1send", "send grid", "-x", "a" * 65, "ok\n"])
def test_bad_slug(bad: str) -> None:
    problem = only_problem(manifest(id=bad))
    assert problem.location == "manifest.json: $.id"
    assert problem.message.startswith("must be a slug: 2-64 characters of lowercase letters")


@pytest.mark.parametrize("good", ["ab", "send-grid_2", "a" * 64])
def test_good_slugs(good: str) -> None:
    assert validate_manifest(manifest(id=good)).id == good


@pytest.mark.parametrize(
    "bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "1.0.0+", "1.0.0.0", "1.0.0\n"]
)
def test_non_semver_version(bad: str) -> None:
    problem = only_problem(manifest(version=bad))
    assert problem.location == "manifest.json: $.version"
    assert problem.message.startswith("must be a semantic version MAJOR.MINOR.PATCH")


@pytest.mark.parametrize("good", ["0.0.0", "1.2.3-alpha.1", "1.2.3+build", "10.20.30-rc.1+sha.5"])
def test_good_versions(good: str) -> None:
    assert validate_manifest(manifest(version=good)).version == good


def test_unknown_kind() -> None:
    problem = only_problem(manifest(kind="sms"))
    assert problem == Problem(
        "manifest.json: $.kind", 'must be one of "email", "messenger", got "sms"'
    )


@pytest.mark.parametrize(
    "bad", ["../module.py", "lib/module.py", "..py", "a..py", ".hidden.py", "module", "m.pyc"]
)
def test_script_must_be_a_plain_py_file(bad: str) -> None:
    problem = only_problem(manifest(script=bad))
    assert problem.location == "manifest.json: $.script"
    assert "no '/', '\\' or '..'" in problem.message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("https://api.sendgrid.com", 'must be a host without a scheme: write "api.sendgrid.com"'),
        ("api.sendgrid.com/v3", 'must be a host without a path: write "api.sendgrid.com"'),
        ("*", 'a bare "*" would allow every host'),
        ("*.com", '"*.com" is too broad'),
        ("api.*.com", 'a wildcard may only be a leading "*."'),
        ("API.sendgrid.com", 'must be lowercase: write "api.sendgrid.com"'),
        ("api.sendgrid.com:0", "must be a lowercase host name"),
        ("api.sendgrid.com:65536", "must be a lowercase host name"),
        ("-api.sendgrid.com", "must be a lowercase host name"),
        ("::1", 'an IPv6 address must be in brackets: write "[::1]"'),
        ("2130706433", '"2130706433" reads as an IP address: write IPv4 addresses as a dotted'),
        ("0x7f.1:8080", '"0x7f.1:8080" reads as an IP address'),
        ("127.1", '"127.1" reads as an IP address'),
        ("999.1.1.1", '"999.1.1.1" reads as an IP address'),
        ("[1:::2]", '"[1:::2]" is not a valid destination'),
        ("[::1]:0", "must be a lowercase host name"),
        ("[fe80::1%eth0]", "must be a lowercase host name"),
    ],
)
def test_bad_egress_entries(entry: str, message: str) -> None:
    problem = only_problem(manifest(egress=["ok.example.com", entry]))
    assert problem.location == "manifest.json: $.egress[1]"
    assert problem.message.startswith(message)


def test_ip_literal_and_host_port_egress_entries_are_accepted() -> None:
    # Even non-public ones: whether they may be reached is decided at fetch time (SPEC §4).
    entries = ["127.0.0.1", "127.0.0.1:8080", "[::1]", "[::1]:8443", "203.0.113.7:443"]
    assert validate_manifest(manifest(egress=entries)).egress == entries


def test_duplicate_egress_points_at_the_later_copy() -> None:
    problem = only_problem(manifest(egress=["a.example.com", "b.example.com", "a.example.com"]))
    assert problem == Problem(
        "manifest.json: $.egress[2]", 'duplicate of item [0]: "a.example.com"'
    )


@pytest.mark.parametrize(
    ("settings", "location", "message"),
    [
        ({"type": "array", "properties": {}}, "$.settings.type", 'must be "object", got "array"'),
        ({"type": "object"}, "$.settings.properties", "is required but missing"),
        ("api_key", "$.settings", "must be an object, not a string"),
        (
            {"type": "object", "properties": {"a": 1}},
            "$.settings.properties.a",
            "must be an object or a boolean (true/false), not an integer",
        ),
    ],
)
def test_settings_must_be_an_object_schema(settings: Any, location: str, message: str) -> None:
    problem = only_problem(manifest(settings=settings))
    assert problem == Problem(f"manifest.json: {location}", message)


def test_settings_schema_must_itself_be_valid() -> None:
    settings = {
        "type": "object",
        "properties": {
            "api_key": {"type": "strin"},
            "code": {"type": "string", "pattern": "(unclosed"},
            "n": {"type": "integer", "minimum": "zero"},
        },
    }
    problems = problems_of(manifest(settings=settings))
    assert at(problems, "manifest.json: $.settings.properties.api_key.type") == [
        'must be one of "array", "boolean", "integer", "null", "number", "object", "string", '
        'got "strin"'
    ]
    [regex] = at(problems, "manifest.json: $.settings.properties.code.pattern")
    assert regex.startswith("must be a valid regular expression (missing ): (unclosed)")
    assert at(problems, "manifest.json: $.settings.properties.n.minimum") == [
        "must be a number, not a string"
    ]
    assert len(problems) == 3


def test_settings_may_not_reference_remote_schemas() -> None:
    settings = {"type": "object", "properties": {"a": {"$ref": "https://evil.example/s.json"}}}
    problem = only_problem(manifest(settings=settings))
    assert problem.location == 'manifest.json: $.settings.properties.a["$ref"]'
    assert problem.message.startswith('only local references ("#/...") are allowed')


def test_settings_required_must_be_declared() -> None:
    settings = {"type": "object", "properties": {"api_key": {}}, "required": ["api_key", "apikey"]}
    problem = only_problem(manifest(settings=settings))
    assert problem == Problem(
        "manifest.json: $.settings.required[1]",
        'required setting "apikey" is not declared in settings.properties',
    )


def test_settings_dialect_must_be_2020_12() -> None:
    settings = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {},
    }
    problem = only_problem(manifest(settings=settings))
    assert problem.location == 'manifest.json: $.settings["$schema"]'
    assert problem.message.startswith('must be "https://json-schema.org/draft/2020-12/schema"')


@pytest.mark.parametrize(
    ("limit", "value", "unit"),
    [
        ("timeout_s", 30, "seconds"),
        ("cpu_s", 5.5, "seconds"),
        ("memory_mb", 512, "MiB"),
        ("max_fetches", 51, "calls"),
        ("fetch_timeout_s", 11, "seconds"),
        ("max_response_bytes", 10485761, "bytes"),
        ("log_bytes", 65537, "bytes"),
        ("storage_bytes", 2 * 1048576, "bytes"),
    ],
)
def test_limits_above_the_platform_default(limit: str, value: float, unit: str) -> None:
    problem = only_problem(manifest(limits={limit: value}))
    maximum = getattr(DEFAULT_LIMITS, limit)
    maximum = int(maximum) if maximum == int(maximum) else maximum
    assert problem == Problem(
        f"manifest.json: $.limits.{limit}",
        f"{limit} may only lower the platform default: at most {maximum} {unit}, got {value}",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be greater than 0, got 0"),
        (-1, "must be greater than 0, got -1"),
        ("5", "must be a number, not a string"),
        (True, "must be a number, not a boolean (true/false)"),
    ],
)
def test_limits_must_be_positive_numbers(value: Any, message: str) -> None:
    problem = only_problem(manifest(limits={"timeout_s": value}))
    assert problem == Problem("manifest.json: $.limits.timeout_s", message)


def test_memory_limit_has_a_floor_and_counts_are_integers() -> None:
    problems = problems_of(manifest(limits={"memory_mb": 8, "max_fetches": 2.5}))
    assert at(problems, "manifest.json: $.limits.memory_mb") == [
        "memory_mb must be at least 16 MiB (a worker cannot start with less), got 8"
    ]
    assert at(problems, "manifest.json: $.limits.max_fetches") == [
        "must be an integer, not a number"
    ]


def test_unknown_limit_key() -> None:
    problem = only_problem(manifest(limits={"timeout": 5}))
    assert problem.location == "manifest.json: $.limits.timeout"
    assert problem.message.startswith('unknown key "timeout" (allowed: timeout_s, cpu_s,')


def test_unknown_top_level_key() -> None:
    problem = only_problem(manifest(permissions=["network"]))
    assert problem.location == "manifest.json: $.permissions"
    assert problem.message == (
        'unknown key "permissions" (allowed: id, name, version, kind, script, contractVersion, '
        "description, egress, settings, webhook, idempotent, limits)"
    )


def test_idempotent_names_create_functions_with_booleans() -> None:
    declared = manifest(idempotent={"CRM_Marketing_CreateCampaign": True})
    parsed = parse_manifest(json.dumps(declared))
    assert parsed.declares_idempotent("CRM_Marketing_CreateCampaign")
    assert not parsed.declares_idempotent("CRM_Marketing_CreateMessengerCampaign")
    assert parsed.as_json()["idempotent"] == {"CRM_Marketing_CreateCampaign": True}
    assert "idempotent" not in parse_manifest(json.dumps(manifest())).as_json()

    problem = only_problem(manifest(idempotent={"CRM_Marketing_PrepareCampaign": True}))
    assert problem.location == "manifest.json: $.idempotent.CRM_Marketing_PrepareCampaign"
    assert problem.message.startswith('unknown key "CRM_Marketing_PrepareCampaign"')
    problem = only_problem(manifest(idempotent={"CRM_Marketing_CreateCampaign": "yes"}))
    assert problem.location == "manifest.json: $.idempotent.CRM_Marketing_CreateCampaign"
    assert problem.message == "must be a boolean (true/false), not a string"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("id", 7, "must be a string, not an integer"),
        ("name", None, "must be a string, not null"),
        ("egress", "api.sendgrid.com", "must be an array, not a string"),
        ("limits", [], "must be an object, not an array"),
        ("description", {"en": "x"}, "must be a string, not an object"),
    ],
)
def test_wrong_types(key: str, value: Any, message: str) -> None:
    assert only_problem(manifest(**{key: value})) == Problem(f"manifest.json: $.{key}", message)


def test_length_limits() -> None:
    problems = problems_of(manifest(name="", description="x" * 2001))
    assert len(problems) == 2  # "" is also blank, but one problem per field is enough
    assert at(problems, "manifest.json: $.name") == ["must not be empty"]
    assert at(problems, "manifest.json: $.description") == [
        "must be at most 2000 characters (it has 2001)"
    ]
    assert at(problems_of(manifest(name="   ")), "manifest.json: $.name") == ["must not be blank"]
    assert at(problems_of(manifest(name="n" * 101)), "manifest.json: $.name") == [
        "must be at most 100 characters (it has 101)"
    ]


def test_many_errors_are_reported_together_in_one_exception() -> None:
    data = {
        "id": "Bad",
        "version": "1",
        "kind": "email",
        "script": "../x.py",
        "egress": ["*"],
        "limits": {"timeout_s": 60, "bogus": 1},
        "extra": True,
    }
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(json.dumps(data), source="pkg/manifest.json")
    error = caught.value
    locations = [p.location for p in error.problems]
    assert sorted(locations) == sorted(
        f"pkg/manifest.json: {path}"
        for path in (
            "$.name",
            "$.extra",
            "$.id",
            "$.version",
            "$.script",
            "$.egress[0]",
            "$.limits.bogus",
            "$.limits.timeout_s",
        )
    )
    assert error.message == "pkg/manifest.json is not a valid module manifest (8 problems)"
    assert error.kind == "invalid_input"
    assert "pkg/manifest.json: $.limits.timeout_s: timeout_s may only lower" in str(error)


def test_broken_settings_shape_is_not_also_checked_against_the_meta_schema() -> None:
    # One clear problem, not a cascade of meta-schema errors about the same object.
    problems = problems_of(manifest(settings={"type": "object", "properties": [1]}))
    assert problems == [
        Problem("manifest.json: $.settings.properties", "must be an object, not an array")
    ]


# ------------------------------------------------------------------------------- semver


def test_semver_ordering() -> None:
    ordered = [
        "0.9.0",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.9.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = ordered[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=semver_key) == ordered
    assert semver_key("1.0.0+build.1") == semver_key("1.0.0+build.2") == semver_key("1.0.0")


def test_manifest_semver_key_sorts_manifests() -> None:
    manifests = [validate_manifest(manifest(version=v)) for v in ("1.10.0", "1.9.0", "1.0.0-rc")]
    assert [m.version for m in sorted(manifests, key=Manifest.semver_key)] == [
        "1.0.0-rc",
        "1.9.0",
        "1.10.0",
    ]


def test_semver_key_rejects_non_semver() -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key("1.0")


# ------------------------------------------------------------------------ the schema file


def test_schema_file_is_valid_2020_12_and_documented() -> None:
    schema = load_manifest_schema()
    assert MANIFEST_SCHEMA_PATH.is_file()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]

    def documented(node: dict[str, Any], path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            assert sub.get("title") and sub.get("description"), f"{path}.{name} undocumented"
            documented(sub, f"{path}.{name}")

    documented(schema, "$")
    for name in schema["properties"]:
        assert schema["properties"][name]["$anchor"] == name


def test_schema_limits_equal_the_sandbox_platform_defaults() -> None:
    limits = load_manifest_schema()["properties"]["limits"]["properties"]
    allowed = {k for k in DEFAULT_LIMITS.as_dict() if k != "recursion_depth"}
    assert set(limits) == allowed
    for name, schema in limits.items():
        assert schema["maximum"] == getattr(DEFAULT_LIMITS, name), name


def test_example_of_the_spec_is_valid() -> None:
    example = {
        "id": "sendgrid",
        "name": "SendGrid",
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "description": "…",
        "egress": ["api.sendgrid.com", "*.sendgrid.net"],
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "writeOnly": True},
                "sender_email": {"type": "string", "format": "email"},
            },
            "required": ["api_key"],
        },
        "limits": {"timeout_s": 5, "memory_mb": 128, "max_fetches": 20},
    }
    assert validate_manifest(example).secret_fields == (("api_key",),)


def test_format_path_quotes_keys_that_are_not_identifiers() -> None:
    assert format_path("$", ["settings", "properties", "x-api-key", 3]) == (
        '$.settings.properties["x-api-key"][3]'
    )
