"""The module manifest: parsing, validation against the published JSON Schema, and the model.

Why it is built this way:

* **The JSON Schema is the contract.** ``module_manifests/schema/manifest.schema.json`` is what
  integrators read (and what their editors validate against), so the host validates with that
  very file instead of re-stating the rules in pydantic. :class:`Manifest` is only the typed,
  frozen view of a manifest that already passed the schema.
* **Every problem at once, each with its place.** An integrator uploading a module wants the
  whole list, compiler-style, not one error per round trip. Locations have one format:

  - JSON syntax: ``<source>:<line>:<col>`` (``manifest.json:3:17``)
  - a field:     ``<source>: <json path>`` (``manifest.json: $.limits.timeout_s``,
    ``manifest.json: $.egress[2]``, ``manifest.json: $.settings.properties["api-key"]``)

  Problems are worded and located by :mod:`host.json_schema`, the dialect the host shares
  with tenant settings (ECMA-262 patterns, no remote ``$ref``, human messages).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from host.contract.functions import CONTRACT_VERSIONS
from host.errors import InvalidInput, Problem
from host.json_schema import (
    EMPTY_REGISTRY,
    HostSchemaValidator,
    PathParts,
    format_path,
    quoted,
    schema_problems,
)
from host.json_values import value_problem
from host.schema_regex import regex_problems, unevaluated_with_patterns
from host.settings_paths import SchemaPath, secret_schema_paths
from sandbox.egress import HostPattern
from sandbox.limits import MAX_NESTING_DEPTH

#: The schema file (SPEC §6's ``module_manifests/schema/manifest.schema.json``): the top-level
#: ``module_manifests/`` folder is installed as the data package ``host.module_manifests``, so a
#: checkout, an editable install and a wheel all read this one file.
MANIFEST_SCHEMA_PATH = Path(str(files("host.module_manifests") / "schema" / "manifest.schema.json"))

#: Largest manifest accepted; a manifest is a few KiB, anything near this is not a manifest.
MAX_MANIFEST_BYTES = 1024 * 1024

#: Settings schema of a module that declares none: no settings at all.
EMPTY_SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}

_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)


# --------------------------------------------------------------------------- schema loading


@functools.cache
def load_manifest_schema() -> dict[str, Any]:
    """The manifest JSON Schema, read once per process."""
    schema: dict[str, Any] = json.loads(MANIFEST_SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@functools.cache
def _manifest_validator() -> Validator:
    return HostSchemaValidator(load_manifest_schema(), registry=EMPTY_REGISTRY)


@functools.cache
def _meta_validator() -> Validator:
    """Validates a settings schema against the draft 2020-12 meta-schema (all errors).

    Its ``format: regex`` check is left out: that would compile with Python's ``re`` and
    locate a bad ``patternProperties`` key only at its parent; :func:`regex_problems`
    compiles every regex with RE2 and names each one's path.
    """
    formats = [name for name in Draft202012Validator.FORMAT_CHECKER.checkers if name != "regex"]
    return Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=FormatChecker(formats)
    )


# ------------------------------------------------------------------------------ parsing


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def parse_manifest(text: str | bytes, source: str = "manifest.json") -> Manifest:
    """Parse and validate a manifest file's content.

    Syntax errors point at ``source:line:col``; a duplicate key, ``NaN`` or a file that is not
    UTF-8 is rejected too (last-key-wins would silently drop half of a manifest).
    Raises :class:`InvalidInput` listing every problem.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_MANIFEST_BYTES:
        problem = Problem(
            source, f"is {size} bytes; a manifest may be at most {MAX_MANIFEST_BYTES}"
        )
        raise InvalidInput(f"{source} is not a valid module manifest", [problem])
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problem = Problem(source, f"is not UTF-8 text (invalid byte at offset {exc.start})")
            raise InvalidInput(f"{source} is not a valid module manifest", [problem]) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problem = Problem(f"{source}:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}")
        raise InvalidInput(f"{source} is not valid JSON", [problem]) from None
    except _DuplicateKey as exc:
        duplicate = f"invalid JSON: key {quoted(exc.key)} appears twice in one object"
        problem = Problem(source, duplicate)
        raise InvalidInput(f"{source} is not valid JSON", [problem]) from None
    except ValueError as exc:  # NaN / Infinity
        raise InvalidInput(f"{source} is not valid JSON", [Problem(source, str(exc))]) from None
    except RecursionError:
        problem = Problem(source, f"invalid JSON: nested deeper than {MAX_NESTING_DEPTH} levels")
        raise InvalidInput(f"{source} is not valid JSON", [problem]) from None
    return validate_manifest(data, source)


def _settings_problems(settings: dict[str, Any], location: str) -> list[Problem]:
    """Problems of a settings schema that already has the required object shape."""
    prefix: PathParts = ("settings",)
    problems = schema_problems(
        _meta_validator().iter_errors(settings), location=location, root="$", prefix=prefix
    )

    def walk(node: Any, path: PathParts) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    if not value.startswith("#"):
                        problems.append(
                            Problem(
                                location + format_path("$", (*prefix, *path, key)),
                                f'only local references ("#/...") are allowed, not {quoted(value)}',
                            )
                        )
                else:
                    walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))

    walk(settings, ())
    problems.extend(
        Problem(location + format_path("$", (*prefix, *path)), message)
        for path, message in regex_problems(settings)
    )
    problems.extend(
        Problem(
            location + format_path("$", (*prefix, *path)),
            "unevaluatedProperties cannot be combined with patternProperties in a settings "
            "schema; use additionalProperties",
        )
        for path in unevaluated_with_patterns(settings)
    )
    declared = settings.get("properties", {})
    for index, name in enumerate(settings.get("required", [])):
        if name not in declared:
            problems.append(
                Problem(
                    location + format_path("$", (*prefix, "required", index)),
                    f"required setting {quoted(name)} is not declared in settings.properties",
                )
            )
    return problems


def _egress_hint(path: PathParts, error: ValidationError) -> str | None:
    """Say exactly what is wrong with an egress entry instead of repeating the whole rule."""
    if len(path) != 2 or path[0] != "egress" or error.validator != "pattern":
        return None
    entry = error.instance
    if entry.strip() == "*":
        return 'a bare "*" would allow every host; list the hosts, or use "*.example.com"'
    if "://" in entry:
        host = entry.split("://", 1)[1].split("/", 1)[0]
        return f'must be a host without a scheme: write "{host}", not "{entry}"'
    if "/" in entry:
        return f'must be a host without a path: write "{entry.split("/", 1)[0]}"'
    if entry != entry.lower():
        return f'must be lowercase: write "{entry.lower()}"'
    if entry.startswith("*.") and "." not in entry[2:].split(":", 1)[0]:
        return f'"{entry}" is too broad: "*." must be followed by a domain of two or more labels'
    if "*" in entry:
        return 'a wildcard may only be a leading "*." (e.g. "*.example.com")'
    if entry.count(":") > 1 and not entry.startswith("["):
        return f'an IPv6 address must be in brackets: write "[{entry}]"'
    if _NUMERIC_HOST.fullmatch(entry):
        return (
            f'"{entry}" reads as an IP address: write IPv4 addresses as a dotted quad of '
            'numbers 0-255 without leading zeros, like "203.0.113.7"'
        )
    return None


#: An entry whose host is all numbers and dots (or hex): an IP spelling, not a host name.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]*))*(?::[0-9]*)?")


def _egress_problems(data: Any, location: str, problems: list[Problem]) -> list[Problem]:
    """Entries the schema's pattern lets through but that name no address (``[1:::2]``):
    read each with the same parser the fetch-time policy uses."""
    egress = data.get("egress") if isinstance(data, dict) else None
    if not isinstance(egress, list):
        return []
    found = []
    for index, entry in enumerate(egress):
        where = location + format_path("$", ("egress", index))
        if not isinstance(entry, str) or any(p.location == where for p in problems):
            continue
        try:
            HostPattern.parse(entry)
        except ValueError as exc:
            reason = str(exc).split(": ", 1)[-1]
            found.append(Problem(where, f"{quoted(entry)} is not a valid destination: {reason}"))
    return found


def _contract_version_problems(data: Any, location: str, problems: list[Problem]) -> list[Problem]:
    """A ``contractVersion`` the host does not serve (the schema checks only that it is a
    short string: the served versions are the contract's definition, not the schema's)."""
    version = data.get("contractVersion") if isinstance(data, dict) else None
    where = location + format_path("$", ("contractVersion",))
    if not isinstance(version, str) or version in CONTRACT_VERSIONS:
        return []
    if any(p.location == where for p in problems):
        return []
    served = ", ".join(quoted(v) for v in CONTRACT_VERSIONS)
    return [
        Problem(where, f"unknown contract version {quoted(version)}; this host serves {served}")
    ]


def validate_manifest(data: Any, source: str = "manifest.json") -> Manifest:
    """Validate decoded manifest JSON and return the :class:`Manifest`.

    Checks the manifest schema, then (when ``settings`` has the right shape) that ``settings``
    is itself a valid draft 2020-12 schema with local references only. Raises
    :class:`InvalidInput` with every problem, each located as ``source: $.path``.
    """
    location = f"{source}: "
    unstorable = value_problem(data, root="$")
    if unstorable is not None:  # NUL, a lone surrogate or 64+ levels: nothing else matters
        problem = Problem(location + unstorable.path, unstorable.reason)
        raise InvalidInput(f"{source} is not a valid module manifest (1 problem)", [problem])
    problems = schema_problems(
        _manifest_validator().iter_errors(data), location=location, root="$", hint=_egress_hint
    )
    problems += _egress_problems(data, location, problems)
    problems += _contract_version_problems(data, location, problems)
    settings_broken = any(p.location.startswith(location + "$.settings") for p in problems)
    if isinstance(data, dict) and "settings" in data and not settings_broken:
        problems.extend(_settings_problems(data["settings"], location))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise InvalidInput(f"{source} is not a valid module manifest ({count})", problems)
    return Manifest.model_validate(data, context={_VALIDATED: True})


# ------------------------------------------------------------------------------- semver

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def semver_key(version: str) -> SemverKey:
    """Sort key with semver 2.0.0 precedence: ``sorted(versions, key=semver_key)``.

    1.9.0 < 1.10.0; 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0-rc.1 < 1.0.0; numeric
    prerelease identifiers sort numerically and before alphanumeric ones; build metadata
    (``+...``) is ignored. Raises :class:`ValueError` for a string that is not semver.
    """
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch, prerelease = match.groups()
    if prerelease is None:
        return int(major), int(minor), int(patch), 1, ()
    identifiers = tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in prerelease.split(".")
    )
    return int(major), int(minor), int(patch), 0, identifiers


# -------------------------------------------------------------------------------- model

_VALIDATED = "manifest_schema_validated"


class Manifest(BaseModel):
    """A validated module manifest (SPEC §6). Frozen: a version's manifest never changes.

    Build it with :func:`parse_manifest` / :func:`validate_manifest`; constructing it
    directly runs the same schema validation (and raises the same :class:`InvalidInput`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    version: str
    kind: Literal["email", "messenger"]
    script: str
    description: str = ""
    egress: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=lambda: copy.deepcopy(EMPTY_SETTINGS_SCHEMA))
    limits: dict[str, Any] = Field(default_factory=dict)
    #: webhook intake options (``{"mode": "acknowledge-first"}``); empty: respond
    webhook: dict[str, Any] = Field(default_factory=dict)
    #: the contract version the module declares it was written for (None: not declared)
    contractVersion: str | None = None
    #: create functions the module guarantees are idempotent per campaignId (default: none)
    idempotent: dict[str, bool] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _check_schema(cls, data: Any, info: ValidationInfo) -> Any:
        if not (info.context or {}).get(_VALIDATED):
            validate_manifest(data, source="manifest")
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Manifest:
        """A manifest as the registry stored it: validated at upload, so not checked again
        (versions are immutable; re-validating on every module call is pure cost)."""
        return cls.model_validate(data, context={_VALIDATED: True})

    @property
    def ref(self) -> str:
        """``id@version``, how logs and errors name a module version."""
        return f"{self.id}@{self.version}"

    @property
    def secret_fields(self) -> tuple[SchemaPath, ...]:
        """Key paths of settings marked ``writeOnly: true``, in declaration order.

        Each path is a tuple of property names (``("auth", "token")``, ``("api.key",)``), with
        :data:`~host.settings_paths.EACH_ITEM` for the elements of an array (see
        :mod:`host.settings_paths`). Secrets behind ``$ref``/``allOf``/``additionalProperties``
        are not recognised — declare them directly under ``properties`` or ``items``.
        """
        return tuple(secret_schema_paths(self.settings))

    def semver_key(self) -> SemverKey:
        """Sort key of :attr:`version` (see :func:`semver_key`)."""
        return semver_key(self.version)

    def as_json(self) -> dict[str, Any]:
        """The manifest as JSON data (what was uploaded, with defaults filled in)."""
        return self.model_dump(mode="json")

    @model_serializer(mode="wrap")
    def _undeclared_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A manifest that declares no ``contractVersion`` (``webhook``, ``idempotent``) dumps
        as it did before the key existed, so stored manifests and their content hashes stay
        what they were."""
        data: dict[str, Any] = handler(self)
        if data.get("contractVersion") is None:
            data.pop("contractVersion", None)
        if not data.get("webhook"):
            data.pop("webhook", None)
        if not data.get("idempotent"):
            data.pop("idempotent", None)
        return data

    def declares_idempotent(self, function: str) -> bool:
        """Whether a repeated call of ``function`` with the same campaignId creates nothing
        new (the manifest's ``idempotent``), so an interrupted call may simply be repeated."""
        return bool(self.idempotent.get(function))

    @property
    def acknowledges_first(self) -> bool:
        """Whether webhook requests are answered 200 at once and processed in the
        background (the manifest's ``webhook.mode``)."""
        return bool(self.webhook.get("mode") == "acknowledge-first")
