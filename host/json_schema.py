"""The host's JSON Schema dialect, and how its errors become problems a person can act on.

Both the module manifest (:mod:`host.manifest`) and a tenant's settings
(:mod:`host.settings_schema`) are checked against JSON Schemas; this module is what they
share, so that a manifest and a settings form fail in the same words.

Why it is built this way:

* **Human messages.** jsonschema's defaults (``'x' does not match '^[a-z]...'``) are rewritten
  into what is expected; a schema may carry its own text under the ``errorMessage`` keyword
  (same convention as ajv-errors), with ``{expected}``/``{value}`` placeholders. A missing
  required key is reported at the path where it should be (``$.id``), an unknown key at the
  path where it is, a duplicate list entry at the later copy. Values can be kept out of
  messages (``echo_values=False``) for data that may hold secrets.
* **One path format.** ``$.limits.timeout_s``, ``$.egress[2]``,
  ``settings.properties["api-key"]``: :func:`format_path` quotes keys that are not
  identifiers.
* **Linear-time regexes.** ``pattern``, ``patternProperties`` (and so ``propertyNames``
  patterns) are compiled and run by RE2, not Python's backtracking ``re``: a module author's
  regex cannot freeze the host. The dialect (ECMA-262 as RE2 reads it) is described in
  :mod:`host.schema_regex`.
* **No network from schemas.** Validators get an empty ``referencing.Registry``: a third-party
  settings schema's ``$ref`` can never make the host fetch a URL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jsonschema
import referencing
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from host.errors import Problem
from host.schema_regex import KEYWORDS as REGEX_KEYWORDS
from host.schema_regex import additional_keys

#: A location inside a JSON document: keys and list indexes from the root.
PathParts = tuple[str | int, ...]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ----------------------------------------------------------------------------- the dialect

#: Draft 2020-12 with every regex keyword on RE2. Used for manifests and settings.
HostSchemaValidator = jsonschema.validators.extend(Draft202012Validator, REGEX_KEYWORDS)

#: No remote retrieval: an unresolvable ``$ref`` fails instead of fetching a URL.
EMPTY_REGISTRY: referencing.Registry[Any] = referencing.Registry()


# ---------------------------------------------------------------------------- messages


def format_path(root: str, parts: Iterable[str | int]) -> str:
    """``$`` + ``("limits", "timeout_s")`` → ``$.limits.timeout_s``; odd keys are quoted."""
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true/false)",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
_FORMAT_NAMES = {
    "email": "email address (name@example.com)",
    "idn-email": "email address",
    "uri": "absolute URI (https://example.com/path)",
    "uri-reference": "URI reference",
    "hostname": "host name",
    "date-time": "RFC 3339 date-time (2024-05-01T12:00:00Z)",
    "date": "date (YYYY-MM-DD)",
    "time": "time (HH:MM:SS)",
    "ipv4": "IPv4 address",
    "ipv6": "IPv6 address",
    "uuid": "UUID",
    "regex": "regular expression",
}


def json_type(value: Any) -> str:
    """The JSON type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def describe_type(value: Any) -> str:
    """``"an array"``, ``"a string"``, ``"null"``: the JSON type of a value, for messages."""
    kind = json_type(value)
    return _TYPE_NAMES.get(kind, kind)


def quoted(value: Any, limit: int = 60) -> str:
    """A value as messages quote it: JSON, cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)


def explain_error(error: ValidationError, *, echo_values: bool) -> Iterator[tuple[PathParts, str]]:
    """Turn one jsonschema error into ``(path, message)`` pairs a person can act on.

    Some keywords fan out (``additionalProperties`` → one problem per unknown key). With
    ``echo_values=False`` no part of the offending value is repeated (tenant settings may hold
    secrets); messages then say only what is expected.
    """
    path: PathParts = tuple(error.absolute_path)
    keyword = error.validator
    expected = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    got = f", got {quoted(instance)}" if echo_values else ""

    custom = schema.get("errorMessage")
    if isinstance(custom, dict):
        custom = custom.get(str(keyword))
    if isinstance(custom, str):
        text = custom.replace("{expected}", quoted(expected))
        text = text.replace("{value}", quoted(instance) if echo_values else "(hidden)")
        yield path, text
        return

    if keyword == "required":
        for name in expected:
            if isinstance(instance, dict) and name not in instance:
                yield (*path, name), "is required but missing"
    elif keyword in ("additionalProperties", "unevaluatedProperties"):
        allowed = ", ".join(schema.get("properties", {})) or "none"
        for key in additional_keys(instance, schema):
            yield (*path, key), f"unknown key {quoted(key)} (allowed: {allowed})"
    elif keyword == "type":
        names = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_TYPE_NAMES.get(str(n), str(n)) for n in names)
        yield path, f"must be {wanted}, not {describe_type(instance)}"
    elif keyword == "enum":
        yield path, f"must be one of {', '.join(quoted(v) for v in expected)}{got}"
    elif keyword == "const":
        yield path, f"must be {quoted(expected)}{got}"
    elif keyword == "pattern":
        yield path, f"must match the pattern {expected}"
    elif keyword == "format":
        cause = f" ({error.cause})" if echo_values and error.cause is not None else ""
        yield path, f"must be a valid {_FORMAT_NAMES.get(expected, expected)}{cause}"
    elif keyword == "minLength":
        yield (
            path,
            "must not be empty" if expected == 1 else f"must be at least {expected} characters",
        )
    elif keyword == "maxLength":
        length = f" (it has {len(instance)})" if echo_values else ""
        yield path, f"must be at most {expected} characters{length}"
    elif keyword == "minimum":
        yield path, f"must be at least {expected}{got}"
    elif keyword == "maximum":
        yield path, f"must be at most {expected}{got}"
    elif keyword == "exclusiveMinimum":
        yield path, f"must be greater than {expected}{got}"
    elif keyword == "exclusiveMaximum":
        yield path, f"must be less than {expected}{got}"
    elif keyword == "multipleOf":
        yield path, f"must be a multiple of {expected}{got}"
    elif keyword == "minItems":
        yield path, f"must have at least {expected} item{'s' if expected != 1 else ''}"
    elif keyword == "maxItems":
        yield path, f"must have at most {expected} item{'s' if expected != 1 else ''}"
    elif keyword == "minProperties":
        yield path, f"must have at least {expected} key{'s' if expected != 1 else ''}"
    elif keyword == "maxProperties":
        yield path, f"must have at most {expected} key{'s' if expected != 1 else ''}"
    elif keyword == "uniqueItems":
        seen: dict[str, int] = {}
        for index, item in enumerate(instance):
            first = seen.setdefault(_canonical(item), index)
            if first != index:
                yield (*path, index), f"duplicate of item [{first}]{got and ': ' + quoted(item)}"
    elif keyword == "dependentRequired":
        for trigger, needed in expected.items():
            if trigger in instance:
                for name in needed:
                    if name not in instance:
                        yield (*path, name), f"is required when {quoted(trigger)} is set"
    elif keyword in ("anyOf", "oneOf") and error.context:
        # Prefer the branch whose type matched: its error says what is really wrong.
        typed = [e for e in error.context if e.validator != "type"] or list(error.context)
        best = best_match(typed)
        if best is not None:
            yield from explain_error(best, echo_values=echo_values)
    elif keyword is None:  # a ``false`` schema
        yield path, "is not allowed here"
    elif echo_values:
        yield path, error.message
    else:
        yield path, f"does not satisfy the schema keyword {quoted(keyword)}"


Hint = Callable[[PathParts, ValidationError], str | None]


def schema_problems(
    errors: Iterable[ValidationError],
    *,
    location: str,
    root: str,
    prefix: PathParts = (),
    echo_values: bool = True,
    hint: Hint | None = None,
) -> list[Problem]:
    """All errors as :class:`Problem` s, in the order jsonschema found them.

    One problem per location: when a value breaks several keywords (an empty name is both too
    short and blank) the first, most basic one is enough to fix it and the rest is noise.

    ``location`` is the prefix of every location (``"manifest.json: "`` or ``""``), ``root``
    the path root (``$`` or ``settings``), ``prefix`` the path of the validated value.
    ``hint`` may replace the message of an error with a more specific one.
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for error in errors:
        specific = hint(tuple(error.absolute_path), error) if hint else None
        explained: Iterable[tuple[PathParts, str]] = (
            [(tuple(error.absolute_path), specific)]
            if specific
            else explain_error(error, echo_values=echo_values)
        )
        for path, message in explained:
            where = location + format_path(root, (*prefix, *path))
            if where not in seen:
                seen.add(where)
                problems.append(Problem(where, message))
    return problems
