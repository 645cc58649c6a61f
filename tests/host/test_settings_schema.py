"""Tenant settings: validation against the manifest's schema, secret-keeping merge, masking."""

from __future__ import annotations

from typing import Any

import pytest

from host.errors import InvalidInput, Problem
from host.manifest import Manifest, validate_manifest
from host.settings_schema import (
    SECRET_MARKER,
    mask_settings,
    merge_settings,
    secret_values,
    validate_settings,
)

API_KEY = "SG.very-secret-key-1234567890"

SENDGRID = validate_manifest(
    {
        "id": "sendgrid",
        "name": "SendGrid",
        "version": "1.0.0",
        "kind": "email",
        "script": "module.py",
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {"type": "string", "writeOnly": True, "minLength": 10},
                "sender_email": {"type": "string", "format": "email"},
                "webhook_base": {"type": "string", "format": "uri"},
                "region": {"enum": ["us", "eu"]},
                "batch_size": {"type": "integer", "minimum": 1, "maximum": 1000},
                "lists": {"type": "array", "items": {"type": "string", "pattern": "^L[0-9]+$"}},
                "auth": {
                    "type": "object",
                    "properties": {
                        "user": {"type": "string"},
                        "token": {"type": "string", "writeOnly": True},
                    },
                    "required": ["user"],
                    "additionalProperties": False,
                },
                "x-custom": {"type": "boolean"},
            },
            "required": ["api_key", "sender_email"],
            "additionalProperties": False,
        },
    }
)

VALID: dict[str, Any] = {
    "api_key": API_KEY,
    "sender_email": "news@example.com",
    "webhook_base": "https://crm.example.com/hooks?x=%20y",
    "region": "eu",
    "batch_size": 500,
    "lists": ["L1", "L22"],
    "auth": {"user": "bot", "token": "tok-secret"},
    "x-custom": True,
}


def problems_of(settings: Any, manifest: Manifest = SENDGRID) -> list[Problem]:
    with pytest.raises(InvalidInput) as caught:
        validate_settings(manifest, settings)
    return caught.value.problems


def only_problem(settings: Any) -> Problem:
    problems = problems_of(settings)
    assert len(problems) == 1, problems
    return problems[0]


def with_(**changes: Any) -> dict[str, Any]:
    data = {**VALID, **changes}
    return {k: v for k, v in data.items() if v is not ...}


# ------------------------------------------------------------------------------ validate


def test_valid_settings_are_returned() -> None:
    assert validate_settings(SENDGRID, VALID) is VALID
    minimal = {"api_key": API_KEY, "sender_email": "a@b.io"}
    assert validate_settings(SENDGRID, minimal) == minimal


def test_missing_required_is_reported_at_the_field() -> None:
    problems = problems_of({"region": "us"})
    assert problems == [
        Problem("settings.api_key", "is required but missing"),
        Problem("settings.sender_email", "is required but missing"),
    ]


def test_wrong_type() -> None:
    assert only_problem(with_(batch_size="10")) == Problem(
        "settings.batch_size", "must be an integer, not a string"
    )


@pytest.mark.parametrize(
    "bad", ["news", "news@", "@example.com", "news@example", "a b@example.com", "a@@b.com"]
)
def test_bad_email_format(bad: str) -> None:
    assert only_problem(with_(sender_email=bad)) == Problem(
        "settings.sender_email", "must be a valid email address (name@example.com)"
    )


@pytest.mark.parametrize(
    "bad", ["crm.example.com/hooks", "https://", "http://a b.com", "https://x/%zz"]
)
def test_bad_uri_format(bad: str) -> None:
    assert only_problem(with_(webhook_base=bad)) == Problem(
        "settings.webhook_base", "must be a valid absolute URI (https://example.com/path)"
    )


def test_extra_property_when_additional_properties_false() -> None:
    problem = only_problem(with_(apikey="oops"))
    assert problem.location == "settings.apikey"
    assert problem.message.startswith('unknown key "apikey" (allowed: api_key, sender_email,')


def test_nested_and_array_locations() -> None:
    problems = problems_of(with_(lists=["L1", "L2", "nope"], auth={"token": "t", "extra": 1}))
    assert problems == [
        Problem("settings.lists[2]", "must match the pattern ^L[0-9]+$"),
        Problem("settings.auth.user", "is required but missing"),
        Problem("settings.auth.extra", 'unknown key "extra" (allowed: user, token)'),
    ]


def test_key_that_is_not_an_identifier_is_quoted() -> None:
    assert only_problem(with_(**{"x-custom": "yes"})) == Problem(
        'settings["x-custom"]', "must be a boolean (true/false), not a string"
    )


def test_all_problems_at_once() -> None:
    settings = {
        "api_key": 12345,
        "sender_email": "not-an-email",
        "region": "asia",
        "batch_size": 0,
        "unexpected": True,
    }
    with pytest.raises(InvalidInput) as caught:
        validate_settings(SENDGRID, settings)
    error = caught.value
    assert {p.location for p in error.problems} == {
        "settings.api_key",
        "settings.sender_email",
        "settings.region",
        "settings.batch_size",
        "settings.unexpected",
    }
    assert error.message == "settings for module sendgrid@1.0.0 are invalid (5 problems)"
    assert "settings.region: must be one of" in str(error)


def test_messages_never_echo_values() -> None:
    # A secret pasted into the wrong field (or failing its own rules) must not come back.
    leaked = "sk_live_ABCDEF123"
    problems = problems_of(
        {"api_key": "short", "sender_email": leaked, "region": leaked, "lists": [leaked, leaked]}
    )
    text = "\n".join(str(p) for p in problems)
    assert leaked not in text
    assert "short" not in text
    assert "settings.api_key: must be at least 10 characters" in text


def test_settings_must_be_an_object() -> None:
    assert problems_of(["a"]) == [Problem("settings", "must be an object, not an array")]


def test_mask_marker_is_not_accepted_as_a_secret() -> None:
    problem = only_problem(with_(api_key=SECRET_MARKER))
    assert problem.location == "settings.api_key"
    assert "mask marker" in problem.message


def test_module_without_settings_accepts_only_empty() -> None:
    bare = validate_manifest(
        {"id": "bare", "name": "Bare", "version": "1.0.0", "kind": "email", "script": "m.py"}
    )
    assert validate_settings(bare, {}) == {}
    assert problems_of({"x": 1}, bare) == [Problem("settings.x", 'unknown key "x" (allowed: none)')]


def test_local_refs_resolve_and_nothing_is_fetched() -> None:
    manifest = validate_manifest(
        {
            "id": "refs",
            "name": "Refs",
            "version": "1.0.0",
            "kind": "messenger",
            "script": "m.py",
            "settings": {
                "type": "object",
                "properties": {"bot": {"$ref": "#/$defs/bot"}},
                "$defs": {"bot": {"type": "string", "pattern": "^[a-z]+$"}},
            },
        }
    )
    assert validate_settings(manifest, {"bot": "abc"}) == {"bot": "abc"}
    # ECMA-262 "$": a trailing newline does not slip past the anchor.
    assert problems_of({"bot": "abc\n"}, manifest)[0].location == "settings.bot"


# --------------------------------------------------------------------------------- merge


STORED: dict[str, Any] = {
    "api_key": API_KEY,
    "sender_email": "old@example.com",
    "region": "us",
    "auth": {"user": "bot", "token": "tok-secret"},
}


def test_patch_keeps_omitted_secret_and_fields() -> None:
    merged = merge_settings(SENDGRID, STORED, {"sender_email": "new@example.com"})
    assert merged == {**STORED, "sender_email": "new@example.com"}
    assert validate_settings(SENDGRID, merged) is merged


def test_patch_null_removes_a_secret() -> None:
    merged = merge_settings(SENDGRID, STORED, {"auth": {"token": None}, "region": None})
    assert merged == {
        "api_key": API_KEY,
        "sender_email": "old@example.com",
        "auth": {"user": "bot"},
    }


def test_patch_replaces_a_secret_that_is_given() -> None:
    merged = merge_settings(SENDGRID, STORED, {"api_key": "SG.new-key-0987654321"})
    assert merged["api_key"] == "SG.new-key-0987654321"


def test_masked_value_sent_back_keeps_the_secret() -> None:
    # GET (masked) → edit → PUT: the marker must never become the stored API key.
    edited = mask_settings(SENDGRID, STORED)
    edited["region"] = "eu"
    for mode in ("patch", "replace"):
        merged = merge_settings(SENDGRID, STORED, edited, mode=mode)  # type: ignore[arg-type]
        assert merged["api_key"] == API_KEY
        assert merged["auth"]["token"] == "tok-secret"
        assert merged["region"] == "eu"


def test_replace_drops_omitted_fields_but_keeps_omitted_secrets() -> None:
    merged = merge_settings(
        SENDGRID,
        STORED,
        {"sender_email": "new@example.com", "auth": {"user": "bot2"}},
        mode="replace",
    )
    assert merged == {
        "sender_email": "new@example.com",
        "auth": {"user": "bot2", "token": "tok-secret"},
        "api_key": API_KEY,
    }


def test_replace_null_removes_a_secret() -> None:
    merged = merge_settings(
        SENDGRID, STORED, {"sender_email": "a@b.io", "api_key": None}, mode="replace"
    )
    # "auth" was omitted: its plain field goes (replace), its secret stays (omitted secret).
    assert merged == {"sender_email": "a@b.io", "auth": {"token": "tok-secret"}}


def test_merge_does_not_modify_its_inputs() -> None:
    stored = {"api_key": API_KEY, "auth": {"user": "u", "token": "t"}}
    update = {"auth": {"user": "v"}}
    for mode in ("patch", "replace"):
        merged = merge_settings(SENDGRID, stored, update, mode=mode)  # type: ignore[arg-type]
        merged["auth"]["token"] = "changed"
        assert stored == {"api_key": API_KEY, "auth": {"user": "u", "token": "t"}}
        assert update == {"auth": {"user": "v"}}


def test_merge_rejects_a_non_object_update() -> None:
    with pytest.raises(InvalidInput) as caught:
        merge_settings(SENDGRID, STORED, "api_key=x")  # type: ignore[arg-type]
    assert caught.value.problems == [Problem("settings", "must be an object, not a string")]


# ---------------------------------------------------------------------------------- mask


def test_mask_never_shows_the_value() -> None:
    masked = mask_settings(SENDGRID, VALID)
    assert masked["api_key"] == SECRET_MARKER
    assert masked["auth"] == {"user": "bot", "token": SECRET_MARKER}
    assert masked["sender_email"] == VALID["sender_email"]
    text = repr(masked)
    assert API_KEY not in text
    assert "tok-secret" not in text
    assert VALID["api_key"] == API_KEY  # the input is untouched


def test_mask_leaves_unset_secrets_absent() -> None:
    masked = mask_settings(SENDGRID, {"sender_email": "a@b.io", "auth": None})
    assert masked == {"sender_email": "a@b.io", "auth": None}


def test_secret_values_for_output_masking() -> None:
    assert secret_values(SENDGRID, VALID) == (API_KEY, "tok-secret")
    assert secret_values(SENDGRID, {"api_key": ""}) == ()
