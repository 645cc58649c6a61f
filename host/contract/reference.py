"""The guide's reference sections, written from the contract's one definition: the function
tables of §3 and the appendix (contract version, hooks, enums, every type's fields with their
sizes, the per-call limits, retry semantics, categories, the default webhook response)."""

from __future__ import annotations

import dataclasses
import types
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import Ge, Le, MaxLen, MinLen

from host.contract.enums import HOST_EXTENSION_ACTIONS, SCRIPT_ENUMS, ModuleKind
from host.contract.function_model import ContractFunction
from host.contract.functions import ALL_FUNCTIONS, CONTRACT_VERSIONS, FUNCTIONS_BY_KIND
from host.contract.script_names import annotation
from host.contract.types import INPUT_TYPES, SCRIPT_TYPES, ContractModel, WebhookResponse
from sandbox.limits import DEFAULT_LIMITS, MAX_NESTING_DEPTH


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _call(function: ContractFunction) -> str:
    return f"`{function.signature()}`"


def functions_table(kind: ModuleKind) -> str:
    rows = [
        "| function | the host calls it when | it returns | if it fails or is interrupted |",
        "|---|---|---|---|",
    ]
    for f in FUNCTIONS_BY_KIND[kind]:
        when = f"{f.called_when} {f.arguments_for(kind)}".strip()
        returns = f"`{annotation(f.returns)}`. {f.returns_doc}"
        rows.append(f"| {_call(f)} | {_cell(when)} | {_cell(returns)} | {_cell(f.retry)} |")
    return "\n".join(rows) + "\n"


def _constraints(tp: Any, metadata: list[Any]) -> list[str]:
    found: list[str] = []
    for item in metadata:
        if isinstance(item, MinLen):
            found.append(f"at least {item.min_length} characters")
        elif isinstance(item, MaxLen):
            found.append(f"at most {item.max_length} characters")
        elif isinstance(item, Ge):
            found.append(f"≥ {item.ge}")
        elif isinstance(item, Le):
            found.append(f"≤ {item.le}")
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *extra = get_args(tp)
        more = [m for e in extra for m in getattr(e, "metadata", [e])]
        found += _constraints(inner, more)
    elif origin in (Union, types.UnionType, list, dict):
        for arg in get_args(tp):
            found += _constraints(arg, [])
    return found


def _presence(info: Any, passed_in: bool) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    if passed_in:
        return "always present" + (", None when unset" if default is None else "")
    return f"optional, default `{default!r}`"


def _type_table(name: str, model: type[ContractModel]) -> str:
    passed_in = name in INPUT_TYPES
    doc = " ".join((model.__dict__.get("__doc__") or "").split())
    lines = [f"**`{name}`**" + (f" — {doc}" if doc else ""), ""]
    lines += ["| field | type | presence | limits |", "|---|---|---|---|"]
    for field, info in model.model_fields.items():
        limits = ", ".join(_constraints(info.annotation, list(info.metadata))) or "—"
        written = annotation(info.annotation).replace("_AllCategories", '{"all": true}')
        lines.append(
            f"| `{field}` | `{_cell(written)}` | {_presence(info, passed_in)} | {limits} |"
        )
    return "\n".join(lines) + "\n"


def _enums() -> str:
    rows = ["| enum | members |", "|---|---|"]
    for name, enum in SCRIPT_ENUMS.items():
        members = ", ".join(
            f"{m.name} (host extension)" if m in HOST_EXTENSION_ACTIONS else m.name for m in enum
        )
        rows.append(f"| `{name}` | {members} |")
    return "\n".join(rows) + "\n"


def _limits() -> str:
    rows = ["| limit (manifest `limits` key) | platform default and maximum |", "|---|---|"]
    for field in dataclasses.fields(DEFAULT_LIMITS):
        rows.append(f"| `{field.name}` | {getattr(DEFAULT_LIMITS, field.name)} |")
    return "\n".join(rows) + "\n"


def _hooks() -> str:
    rows = ["| function | pluggy hook (`call`, then the function's parameters) |", "|---|---|"]
    rows += [f"| `{f.name}` | `{f.hook}` |" for f in ALL_FUNCTIONS.values()]
    return "\n".join(rows) + "\n"


def appendix() -> str:
    response = WebhookResponse()
    parts = [
        "### Contract version\n",
        f"This host serves contract version(s) {', '.join(f'`{v}`' for v in CONTRACT_VERSIONS)}."
        " A manifest may say which one the module was written for with `contractVersion`; "
        "an upload naming a version the host does not know is refused (422, "
        "`manifest.json: $.contractVersion`). Without it, the module is taken to follow the "
        "host's current contract.\n",
        "### Retries after a crash\n",
        "The host records each step of a campaign once, in its database, and never loses one; "
        "toward a module it is at-least-once, because exactly-once across a crash toward an "
        "external service cannot be had. PrepareCampaign and ExportContacts may be called "
        "again with the same batch after a crash; make them idempotent. The same holds "
        "however often a job is retried: on PostgreSQL the job engine retries a crashed or "
        "interrupted job (with backoff, a bounded number of times, then it waits as failed "
        "for an admin) and each run resumes after the last recorded batch. CreateCampaign and "
        "CreateMessengerCampaign are called again with the same campaignId only when the "
        'manifest declares them idempotent (`"idempotent": {"CRM_Marketing_CreateCampaign": '
        "true}`, default false): the module guarantees a repeated call creates nothing new. "
        "Otherwise a campaign interrupted during the call keeps its status and is flagged "
        "*needs attention* (reason and time, on `GET .../campaigns/{id}`) until an admin "
        "resolves it: `POST .../campaigns/{id}/resolve` (or `crm-host campaign resolve`) "
        'with `{"externalId": ...}` records the campaign the service has (it is then '
        'Sending, or Scheduled) and `{"notCreated": true}` lets the host call the create '
        "function again. The retry column of each function below says what the host does.\n",
        "### Functions and their hooks\n",
        "Trusted plugins serve or wrap these hooks; a plugin serves a call by returning a "
        "`ModuleResult` whose `value` is the module's return value (`None` means \"not served "
        'here").\n',
        _hooks(),
        "### Enums\n",
        "String-valued; scripts write `CRM_Marketing_CampaignStatus.Sent` or the plain string.\n",
        _enums(),
        "### Types\n",
        "Values the host passes in carry every field (`None` when unset); in values a module "
        "returns, optional fields may be left out. Limits are checked when the host validates "
        "a return value: a violation is `invalid_return` naming the field.\n",
        *(_type_table(name, model) for name, model in SCRIPT_TYPES.items()),
        "### Limits per call\n",
        "A manifest may lower each under `limits`, never raise it. Values passed in and "
        f"returned nest at most {MAX_NESTING_DEPTH} levels.\n",
        _limits(),
        "### Categories\n",
        "A category is the service's id of a subscription list or topic (what "
        "`categoryExternalId` of a campaign names). `UnsubscribeAction` and "
        '`ResubscribeAction` take a category id, or `{"all": true}` for every category; '
        "the host keeps a contact's unsubscribed categories and never sends a campaign of a "
        "category the contact left.\n",
        "### The default webhook response\n",
        f"A `response` without `status` answers {response.status}, without `headers` sends "
        "none of its own, without `body` an empty body. A result with no `response` at all "
        'answers `200 {"ok": true}`.\n',
    ]
    return "\n".join(parts)


def reference_sections() -> dict[str, str]:
    """Marker name → generated Markdown."""
    return {
        "functions-email": functions_table(ModuleKind.email),
        "functions-messenger": functions_table(ModuleKind.messenger),
        "reference": appendix(),
    }
