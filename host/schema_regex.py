"""Regular expressions of JSON Schemas, compiled and run by RE2: linear time, whoever wrote them.

A module author writes the settings schema, so its regexes (``pattern``, the keys of
``patternProperties``, a ``pattern`` under ``propertyNames``) and a setting declared
``format: regex`` are untrusted input. Python's ``re`` backtracks: ``^(\\w+\\.?)+$`` against a
29-character key froze the whole host for 23 s. RE2 (``google-re2``) matches in time linear
in the input and has no catastrophic cases, so the host compiles and evaluates every schema
regex with it, the manifest's own and a module's alike.

**The dialect: ECMA-262 as RE2 reads it.** JSON Schema says patterns are ECMA-262. What
differs and what the host does about it:

* lookahead/lookbehind (``(?=``, ``(?!``, ``(?<=``, ``(?<!``) and backreferences (``\\1``,
  ``\\k<name>``) cannot be matched in linear time; RE2 refuses them, so an upload naming one
  is a 422 with the JSON path of the pattern;
* ``\\uXXXX`` is translated to RE2's ``\\x{XXXX}`` (same character);
* ``$`` and ``^`` match only at the end and start of the value, as in ECMA-262 (no
  multi-line mode), so ``"sendgrid\\n"`` does not pass ``^[a-z]+$``;
* ``\\d``, ``\\w`` and ``\\b`` are ASCII, as in ECMA-262; ``\\s`` is ASCII whitespace only
  (ECMA-262 also counts Unicode spaces such as U+00A0); ``.`` excludes only ``\\n`` (ECMA-262
  also excludes ``\\r``, U+2028 and U+2029);
* matching is by Unicode code point, not UTF-16 unit (ECMA-262 with the ``u`` flag);
  ``\\p{L}`` classes work, ``\\cX`` and ``[^]`` do not (write ``\\x01``, ``[\\s\\S]``);
* a pattern so large that RE2 would need more than its memory budget is refused too.

``unevaluatedProperties`` is not combined with ``patternProperties`` in one settings schema:
jsonschema evaluates that pair with Python's ``re`` internally, so the host refuses it at
upload (and fails closed for an old stored schema) rather than run those regexes unbounded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any, Protocol

import re2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import FormatError, ValidationError
from jsonschema.protocols import Validator

_ECMA_UNICODE_ESCAPE = re.compile(r"\\(\\)|\\u([0-9A-Fa-f]{4})")

#: RE2's memory budget per compiled pattern (its default); bigger patterns are refused.
MAX_PATTERN_MEMORY = 8 << 20


class CompiledPattern(Protocol):
    def search(self, text: str) -> object | None: ...


class PatternError(ValueError):
    """A schema regex that RE2 cannot compile; the message says why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the reason is raised; RE2 must not print to stderr
    options.max_mem = MAX_PATTERN_MEMORY
    return options


def _to_re2(pattern: str) -> str:
    """``\\uXXXX`` → ``\\x{XXXX}``; every other character and escape is kept."""
    return _ECMA_UNICODE_ESCAPE.sub(
        lambda m: m[0] if m[1] else "\\x{" + m[2] + "}",
        pattern,
    )


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> CompiledPattern:
    """A schema regex compiled by RE2; raises :class:`PatternError` with RE2's reason."""
    try:
        compiled: CompiledPattern = re2.compile(_to_re2(pattern), _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(str(reason)) from None
    return compiled


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable schema regex, or None when it is."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return (
            f"must be a valid regular expression ({exc}); the host runs schema regexes with "
            "RE2 (linear time), which has no lookaround or backreferences"
        )
    return None


def matches(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# ------------------------------------------------------------------- validator keywords


def pattern_keyword(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = matches(pattern, instance)
    except PatternError as exc:
        yield ValidationError(f"the schema's pattern {pattern!r} cannot be used: {exc}")
        return
    if not matched:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _unusable(patterns: Any) -> Iterator[ValidationError]:
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            yield ValidationError(f"the schema's patternProperties key {pattern!r} {problem}")


def pattern_properties_keyword(
    validator: Validator, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    broken = list(_unusable(pattern_properties))
    if broken:
        yield from broken
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def additional_keys(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Keys neither ``properties`` nor ``patternProperties`` cover (patterns must compile)."""
    declared = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        key
        for key in instance
        if key not in declared and not any(matches(pattern, key) for pattern in patterns)
    ]


def additional_properties_keyword(
    validator: Validator, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    broken = list(_unusable(schema.get("patternProperties", {})))
    if broken:
        return  # patternProperties reports them
    extras = additional_keys(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        listed = ", ".join(repr(extra) for extra in extras)
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def uses_keyword(node: Any, keyword: str) -> bool:
    """Whether ``keyword`` appears as a key anywhere in a JSON document (a cheap, cautious
    over-approximation: a property *named* like the keyword counts too)."""
    if isinstance(node, dict):
        return keyword in node or any(uses_keyword(v, keyword) for v in node.values())
    if isinstance(node, list):
        return any(uses_keyword(v, keyword) for v in node)
    return False


_JSONSCHEMA_UNEVALUATED = Draft202012Validator.VALIDATORS["unevaluatedProperties"]


def unevaluated_properties_keyword(
    validator: Validator, unevaluated: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """jsonschema's own keyword, refused when it would evaluate patternProperties with
    Python's ``re`` (see the module docstring)."""
    if uses_keyword(validator.schema, "patternProperties"):
        yield ValidationError(
            "the schema combines unevaluatedProperties with patternProperties, which the "
            "host does not evaluate"
        )
        return
    yield from _JSONSCHEMA_UNEVALUATED(validator, unevaluated, instance, schema)


KEYWORDS = {
    "pattern": pattern_keyword,
    "patternProperties": pattern_properties_keyword,
    "additionalProperties": additional_properties_keyword,
    "unevaluatedProperties": unevaluated_properties_keyword,
}
"""The draft 2020-12 keywords that run regexes, re-implemented on RE2."""


def is_regex(value: object) -> bool:
    """The ``format: regex`` check: RE2 compiles it (raises :class:`FormatError` with why)."""
    if not isinstance(value, str):
        return True
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise FormatError(f"not an RE2 regular expression: {exc}") from None
    return True


# ------------------------------------------------------------------- upload-time checks

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_VALUES = (
    "additionalProperties",
    "propertyNames",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")

PathParts = tuple[str | int, ...]


def regex_problems(schema: Any, path: PathParts = ()) -> Iterator[tuple[PathParts, str]]:
    """Every regex of a schema that RE2 cannot compile, as ``(json path, message)``.

    Walks subschemas by keyword, so a ``pattern`` key inside ``default``, ``enum`` or
    ``examples`` (data, not a regex) is left alone. Also refuses ``unevaluatedProperties``
    in a schema that uses ``patternProperties`` (see the module docstring).
    """
    if not isinstance(schema, dict):
        return
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and (problem := pattern_problem(pattern)):
        yield (*path, "pattern"), problem
    for keyword in _SCHEMA_MAPS:
        children = schema.get(keyword)
        if not isinstance(children, dict):
            continue
        for name, child in children.items():
            if keyword == "patternProperties" and (problem := pattern_problem(name)):
                yield (*path, keyword, name), problem
            yield from regex_problems(child, (*path, keyword, name))
    for keyword in _SCHEMA_VALUES:
        if keyword in schema:
            yield from regex_problems(schema[keyword], (*path, keyword))
    for keyword in _SCHEMA_LISTS:
        children = schema.get(keyword)
        if isinstance(children, list):
            for index, child in enumerate(children):
                yield from regex_problems(child, (*path, keyword, index))


def unevaluated_with_patterns(schema: Any, path: PathParts = ()) -> Iterator[PathParts]:
    """Paths of ``unevaluatedProperties`` in a schema that also uses ``patternProperties``."""
    if not uses_keyword(schema, "patternProperties"):
        return
    yield from _paths_of(schema, "unevaluatedProperties", path)


def _paths_of(node: Any, keyword: str, path: PathParts) -> Iterator[PathParts]:
    if isinstance(node, dict):
        if keyword in node:
            yield (*path, keyword)
        for key, value in node.items():
            if key != keyword:
                yield from _paths_of(value, keyword, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths_of(value, keyword, (*path, index))
