"""A tenant's settings for a module: validation against the manifest's schema, partial
updates that keep secrets, and masking for display.

Why it works this way:

* **Locations are field paths from ``settings``** (``settings.api_key``,
  ``settings.lists[2]``, ``settings["x-token"]``); a missing required field is reported where
  it should be. Every problem is reported at once.
* **Messages never repeat the value.** Settings hold API keys; an admin who pastes a key into
  the wrong field must not see it echoed in an error, a log line or an HTTP 422 body. Messages
  say what is expected instead.
* **Formats are checked.** jsonschema only checks formats whose optional dependencies are
  installed (``uri`` needs ``rfc3987``, ``email`` is just "contains @"), so the checks that
  matter for settings (``email``, ``uri``, ``hostname``, ``date-time``) are defined here.
* **Secrets survive edits.** Admin UIs show secrets masked and send back only what changed, so
  :func:`merge_settings` keeps a stored secret the update omits (or sends back as the mask
  marker); ``null`` removes it.
* **The marker is :data:`SECRET_MARKER` (``"***set***"``)**: it says that a value is set
  without revealing anything about it (not even its length), is obviously not a real key, and
  is recognised on the way back in so a masked value is never stored as the secret.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import referencing.exceptions
from jsonschema import FormatChecker
from jsonschema.protocols import Validator

from host import settings_paths as paths
from host.errors import InvalidInput, Problem
from host.json_schema import (
    EMPTY_REGISTRY,
    HostSchemaValidator,
    describe_type,
    format_path,
    schema_problems,
)
from host.manifest import Manifest
from host.schema_regex import is_regex

#: What :func:`mask_settings` shows instead of a secret value.
SECRET_MARKER = "***set***"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    rf"@(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
)
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})


def _is_email(value: object) -> bool:
    """``local@domain.tld`` (ASCII, RFC 5321 lengths); what an email service will accept."""
    if not isinstance(value, str):
        return True
    match = _EMAIL.fullmatch(value)
    return match is not None and len(value) <= 254 and len(match["local"]) <= 64


def _is_hostname(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return len(value) <= 253 and _HOSTNAME.fullmatch(value) is not None


def _is_uri(value: object) -> bool:
    """An absolute RFC 3986 URI; ``http(s)``/``ws(s)``/``ftp`` ones must name a host."""
    if not isinstance(value, str):
        return True
    if _URI.fullmatch(value) is None or _BAD_PERCENT.search(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme.lower() not in _NETWORK_SCHEMES or bool(parts.hostname)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _DATE_TIME.fullmatch(value) is None:
        return False
    normalized = value.upper().replace("T", " ").replace("Z", "+00:00")
    try:
        datetime.datetime.fromisoformat(normalized)
    except ValueError:
        return False
    return True


@functools.cache
def settings_format_checker() -> FormatChecker:
    """jsonschema's available format checks plus ours for email, uri, hostname, date-time and
    regex (RE2: a regex a tenant enters is held to the same linear-time dialect)."""
    checker = FormatChecker()
    checker.checks("email")(_is_email)
    checker.checks("uri")(_is_uri)
    checker.checks("hostname")(_is_hostname)
    checker.checks("date-time")(_is_date_time)
    checker.checks("regex")(is_regex)
    return checker


@functools.lru_cache(maxsize=256)
def _validator_for(schema_json: str) -> Validator:
    """One compiled validator per distinct settings schema (keyed by its JSON text)."""
    return HostSchemaValidator(
        json.loads(schema_json), registry=EMPTY_REGISTRY, format_checker=settings_format_checker()
    )


def _invalid(manifest: Manifest, problems: list[Problem]) -> InvalidInput:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return InvalidInput(f"settings for module {manifest.ref} are invalid ({count})", problems)


def validate_settings(manifest: Manifest, settings: Any) -> dict[str, Any]:
    """Check a tenant's settings against the manifest's ``settings`` schema; return them.

    Raises :class:`InvalidInput` listing every problem (``settings.api_key: is required but
    missing``). A secret whose value is :data:`SECRET_MARKER` is rejected: it is a masked value
    sent back, not a key — use :func:`merge_settings` to keep the stored one.
    """
    if not isinstance(settings, dict):
        raise _invalid(
            manifest, [Problem("settings", f"must be an object, not {describe_type(settings)}")]
        )
    # Key order is kept (not sorted): messages list fields in declaration order.
    validator = _validator_for(json.dumps(manifest.settings))
    problems = [
        Problem(
            format_path("settings", location),
            f"is the mask marker {SECRET_MARKER!r}, not a value; omit the field to keep "
            "the stored secret",
        )
        for location in secret_locations(manifest, settings)
        if paths.get(settings, location) == SECRET_MARKER
    ]
    marked = {p.location for p in problems}
    try:
        found = schema_problems(
            validator.iter_errors(settings), location="", root="settings", echo_values=False
        )
    except referencing.exceptions.Unresolvable as exc:
        problem = Problem(
            "settings", f"the settings schema of {manifest.ref} has an unresolvable $ref: {exc}"
        )
        raise _invalid(manifest, [problem]) from None
    problems.extend(p for p in found if p.location not in marked)
    if problems:
        raise _invalid(manifest, problems)
    return settings


def secret_locations(manifest: Manifest, settings: Any) -> list[paths.DataPath]:
    """The data paths of every secret present in ``settings`` (see :mod:`host.settings_paths`)."""
    return [found for path in manifest.secret_fields for found in paths.expand(settings, path)]


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: ``null`` removes, objects merge, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def merge_settings(
    manifest: Manifest,
    stored: dict[str, Any],
    update: dict[str, Any],
    *,
    mode: Literal["patch", "replace"] = "patch",
) -> dict[str, Any]:
    """The settings after an admin's update; validate the result with :func:`validate_settings`.

    ``mode="patch"`` (default): ``update`` is an RFC 7396 merge patch — omitted fields keep
    their stored value, ``null`` removes a field, nested objects merge.
    ``mode="replace"``: ``update`` is the complete new settings (a form submitted whole);
    only secrets are special.

    In both modes a secret (``writeOnly``) that the update omits, or sends back as
    :data:`SECRET_MARKER`, keeps its stored value — so an admin can change the sender address
    without re-entering the API key — and a secret given as ``null`` is removed. Secrets in
    array elements are kept by position (an element sent back at the same index keeps its
    secret). Neither input is modified.
    """
    if not isinstance(update, dict):
        raise _invalid(
            manifest, [Problem("settings", f"must be an object, not {describe_type(update)}")]
        )
    cleaned = copy.deepcopy(update)
    removed: set[paths.DataPath] = set()
    for location in secret_locations(manifest, cleaned):
        value = paths.get(cleaned, location)
        if value == SECRET_MARKER:
            paths.pop(cleaned, location)
        elif value is None:
            removed.add(location)
    result: dict[str, Any] = (
        _merge_patch(stored, cleaned) if mode == "patch" else copy.deepcopy(cleaned)
    )
    for location in secret_locations(manifest, stored):
        if location in removed:
            continue
        found = paths.parent(result, location)
        if found is None and mode == "replace" and all(isinstance(s, str) for s in location):
            # a whole object left out of a replace keeps the secrets inside it
            paths.put(result, location, copy.deepcopy(paths.get(stored, location)))
            continue
        if found is None:
            continue
        container, leaf = found
        if isinstance(container, dict) and leaf not in container:
            container[leaf] = copy.deepcopy(paths.get(stored, location))
    for location in secret_locations(manifest, result):
        if paths.get(result, location) is None:
            paths.pop(result, location)
    return result


def mask_settings(manifest: Manifest, settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` fit to show: every set secret replaced by :data:`SECRET_MARKER`.

    Unset secrets stay absent, so a UI can tell "set" from "not set"; nothing of the value,
    not even its length or type, is kept.
    """
    masked = copy.deepcopy(settings)
    for location in secret_locations(manifest, masked):
        if paths.get(masked, location) is not None:
            paths.put(masked, location, SECRET_MARKER)
    return masked


def secret_values(manifest: Manifest, settings: dict[str, Any]) -> tuple[str, ...]:
    """The secret values as text, longest first, for masking them in script output: every
    string (and number) inside a secret, so a secret list or object is masked piece by piece."""
    values: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str):
            values.add(value)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int | float):
            values.add(json.dumps(value))
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)

    for location in secret_locations(manifest, settings):
        collect(paths.get(settings, location))
    values.discard("")
    return tuple(sorted(values, key=lambda v: (-len(v), v)))
