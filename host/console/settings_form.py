"""The settings form of a module, generated from its settings JSON Schema.

Strings (with ``enum``, ``email`` and ``uri`` formats), numbers, integers, booleans, nested
objects and arrays of scalars become form fields, labelled by ``title`` (or the property
name) with ``description`` as help and ``required`` marked. Anything else — ``oneOf`` /
``anyOf`` / ``allOf``, ``$ref``, arrays of objects — is a JSON editor for that field, parsed
here and validated by the host like the rest. A ``writeOnly`` field (a secret) is never shown:
the form says "set" or "not set", a typed value replaces it, an empty field keeps it, and
"remove" clears it. Field names are the settings' locations (``settings.auth.token``), so the
host's validation problems land next to their fields.

The form only translates: what the settings mean and whether they are valid is decided by
``TenantService.configure`` (the same call as ``PUT /api/v1/tenants/{t}/modules/{m}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from host.errors import InvalidInput, Problem
from host.json_values import InvalidJson, loads_checked
from host.settings_schema import SECRET_MARKER

COMPOSITE = ("oneOf", "anyOf", "allOf", "$ref", "not", "if", "patternProperties")
SCALARS = ("string", "number", "integer", "boolean")
ROOT = "settings"


@dataclass
class SettingsField:
    name: str
    label: str
    kind: str  # text, email, url, number, integer, boolean, enum, secret, lines, json, object
    required: bool = False
    help: str = ""
    value: str = ""
    checked: bool = False
    options: list[str] = field(default_factory=list)
    secret_set: bool = False
    item_type: str = "string"
    children: list[SettingsField] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "f-" + self.name.replace(".", "-")


def _kind(schema: dict[str, Any]) -> str:
    if any(key in schema for key in COMPOSITE):
        return "json"
    kind = schema.get("type")
    if schema.get("writeOnly") and kind in (None, "string", "number", "integer"):
        return "secret"
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return "enum"
    if kind == "string":
        return {"email": "email", "uri": "url"}.get(schema.get("format", ""), "text")
    if kind in ("number", "integer", "boolean"):
        return str(kind)
    if kind == "object" and isinstance(schema.get("properties"), dict):
        return "object"
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict) and items.get("type") in SCALARS and _kind(items) != "json":
            return "lines"
    return "json"


def form_fields(schema: Any, values: dict[str, Any]) -> list[SettingsField] | None:
    """The fields for ``schema`` with the (masked) ``values`` filled in; None when the
    schema as a whole needs the JSON editor."""
    if not isinstance(schema, dict) or _kind({**schema, "writeOnly": False}) != "object":
        return None
    return _fields(schema, values, ROOT)


def _fields(schema: dict[str, Any], values: Any, prefix: str) -> list[SettingsField]:
    values = values if isinstance(values, dict) else {}
    required = set(schema.get("required") or [])
    out = []
    for key, sub in (schema.get("properties") or {}).items():
        sub = sub if isinstance(sub, dict) else {}
        kind = _kind(sub)
        name = f"{prefix}.{key}"
        present = key in values
        value = values.get(key, sub.get("default"))
        f = SettingsField(
            name, str(sub.get("title") or key), kind, key in required,
            str(sub.get("description") or ""),
        )  # fmt: skip
        if kind == "secret":
            f.secret_set = present and value == SECRET_MARKER
        elif kind == "boolean":
            f.checked = value is True
        elif kind == "enum":
            f.options = list(sub["enum"])
            f.value = "" if value is None else str(value)
        elif kind == "lines":
            f.item_type = str(sub["items"]["type"])
            f.value = "\n".join(str(v) for v in value) if isinstance(value, list) else ""
        elif kind == "object":
            f.children = _fields(sub, value, name)
        elif kind == "json":
            f.value = "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)
        else:
            f.value = "" if value is None else str(value)
        out.append(f)
    return out


def settings_from_form(form: FormData, fields: list[SettingsField] | None) -> dict[str, Any]:
    """The settings the posted form describes (secrets left empty are omitted, so the
    stored ones are kept); every unreadable field is reported at once."""
    problems: list[Problem] = []
    if fields is None:
        parsed = _json(str(form.get(ROOT) or "{}"), ROOT, problems)
        settings = parsed if isinstance(parsed, dict) else {}
        if not problems and not isinstance(parsed, dict):
            problems.append(Problem(ROOT, "must be a JSON object"))
    else:
        settings = _read(form, fields, problems)
    if problems:
        raise InvalidInput("settings are invalid", problems)
    return settings


def _read(form: FormData, fields: list[SettingsField], problems: list[Problem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        key = f.name.rsplit(".", 1)[1]
        raw = str(form.get(f.name) or "")
        if f.kind == "secret":
            if form.get(f.name + ".remove"):
                out[key] = None
            elif raw:
                out[key] = raw
        elif f.kind == "boolean":
            out[key] = bool(form.get(f.name))
        elif f.kind == "object":
            nested = _read(form, f.children, problems)
            if nested or f.required:
                out[key] = nested
        elif f.kind == "lines":
            items = [line.strip() for line in raw.splitlines() if line.strip()]
            out[key] = [_scalar(v, f.item_type, f.name, problems) for v in items]
        elif f.kind == "json":
            if raw.strip():
                out[key] = _json(raw, f.name, problems)
        elif raw.strip():
            out[key] = _scalar(raw.strip(), f.kind, f.name, problems)
    return out


def _scalar(raw: str, kind: str, name: str, problems: list[Problem]) -> Any:
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            problems.append(Problem(name, f"{raw!r} is not a whole number"))
    elif kind == "number":
        try:
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            problems.append(Problem(name, f"{raw!r} is not a number"))
    elif kind == "boolean":
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        problems.append(Problem(name, f"{raw!r} is not true or false"))
    return raw


def _json(raw: str, name: str, problems: list[Problem]) -> Any:
    try:
        return loads_checked(raw, root=name)
    except InvalidJson as exc:
        problems.append(Problem(name, f"is not acceptable JSON: {exc}"))
    except ValueError as exc:
        problems.append(Problem(name, f"is not valid JSON: {exc}"))
    return None
