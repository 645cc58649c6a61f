"""``crm-host module new``: a module folder that validates, runs and tests from minute one.

Every function of the kind is written as a stub that raises ``NotImplementedError`` (which the
host reports as "not implemented", and ``validate`` lists with the feature it disables), with
its signature and docstring derived from the contract's definition
(:mod:`host.contract.functions`): when the host calls it, what the arguments are, what it
must return, what the host retries. The script imports its world from ``crm_module_sdk`` so
an editor completes and type-checks it; the sandbox serves the same import.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

from host.contract.enums import ModuleKind
from host.contract.function_model import ContractFunction
from host.contract.functions import FUNCTIONS_BY_KIND
from host.contract.script_names import annotation
from host.errors import InvalidInput, Problem

SLUG = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")
"""The manifest schema's id pattern."""


SDK_IMPORTS = {
    ModuleKind.email: (
        "CRM_Marketing_CampaignStats",
        "CRM_Marketing_CampaignType",
        "CRM_Marketing_CreateCampaignRequest",
        "CRM_Marketing_CreateCampaignResponse",
        "CRM_Marketing_DeliveryStatus",
        "CRM_Marketing_ImportTemplate",
        "CRM_Marketing_WebhookResult",
        "FetchRequest",
        "crm",
        "fetch",
        "log",
        "settings",
        "storage",
    ),
    ModuleKind.messenger: (
        "AccountType",
        "CRM_Marketing_CampaignStats",
        "CRM_Marketing_CampaignType",
        "CRM_Marketing_CreateCampaignResponse",
        "CRM_Marketing_CreateMessengerCampaignRequest",
        "CRM_Marketing_DeliveryStatus",
        "CRM_Marketing_MessengerBot",
        "CRM_Marketing_WebhookResult",
        "FetchRequest",
        "crm",
        "fetch",
        "log",
        "settings",
        "storage",
    ),
}


def script_text(module_id: str, kind: ModuleKind) -> str:
    imports = "".join(f"    {name},\n" for name in SDK_IMPORTS[kind])
    parts = [
        f'"""{module_id}: a CRM Marketing {kind.value} module.\n\n'
        "Implement the functions the service supports; leave the others raising\n"
        "NotImplementedError (the CRM then shows that feature as unsupported).\n"
        'See docs/writing-modules.md for the whole guide."""\n\n'
        f"from crm_module_sdk import (  # noqa: F401  (names the script may use)\n{imports})\n"
        f"\nAPI = {json.dumps(f'https://{API_HOST}/v1')}\n"
    ]
    parts += [_stub(function, kind) for function in FUNCTIONS_BY_KIND[kind]]
    return "".join(parts)


def _stub(function: ContractFunction, kind: ModuleKind) -> str:
    """A stub with the contract's parameters, annotated with the SDK's types, and a docstring
    put together from the contract's sentences (when called, arguments, result, retries)."""
    params = [f"{p.name}: {annotation(p.type)}" for p in function.params]
    for index in range(len(params) - function.optional, len(params)):
        params[index] += " = None"
    summary, body = function.docstring(kind).split("\n\n", 1)
    wrapped = textwrap.fill(body, 92, initial_indent="    ", subsequent_indent="    ")
    return (
        f"\n\ndef {function.name}({', '.join(params)}) -> {annotation(function.returns)}:\n"
        f'    """{summary}\n\n{wrapped}\n    """\n'
        "    raise NotImplementedError\n"
    )


API_HOST = "api.example.com"


def manifest_data(module_id: str, kind: ModuleKind) -> dict[str, object]:
    return {
        "id": module_id,
        "name": module_id.replace("-", " ").title(),
        "version": "0.1.0",
        "kind": kind.value,
        "script": "module.py",
        "description": f"Connects the CRM to ... (a {kind.value} module).",
        "egress": [API_HOST],
        "settings": {
            "type": "object",
            "properties": {
                "api_key": {
                    "type": "string",
                    "writeOnly": True,
                    "description": "API key of the service",
                }
            },
            "required": ["api_key"],
        },
    }


def example_case(kind: ModuleKind) -> dict[str, object]:
    """A case that passes on the fresh scaffold and shows every key a case uses."""
    return {
        "name": "webhook is not implemented yet (replace with the actions you expect)",
        "function": "CRM_Marketing_ParseWebhookRequest",
        "args": [{"json": {"events": [{"email": "ann@example.com", "event": "delivered"}]}}],
        "settings": {"api_key": "test-key"},
        "error": {"kind": "not_implemented"},
    }


README = """# {module_id}

A CRM Marketing {kind} module for crm-module-host.

| file | what |
|---|---|
| `manifest.json` | id, version, kind, the hosts `fetch()` may reach (`egress`), settings schema |
| `module.py` | the `CRM_Marketing_*` functions (stubs raise `NotImplementedError`) |
| `tests/*.json` | offline test cases; `tests/recordings/` holds recorded HTTP traffic |

    crm-host module validate .
    crm-host module run . ImportTemplates 0 10 --settings '{{"api_key": "..."}}' --show-log
    crm-host module run . ImportTemplates 0 10 --settings ... --record tests/recordings/t.json
    crm-host module test .
    crm-host module upload . --url https://crm-host.example --token $CRM_HOST_ADMIN_TOKEN

Bump `version` in `manifest.json` for every upload: versions are immutable.
"""


def create_module(parent: Path, module_id: str, kind: ModuleKind | str) -> Path:
    """Write the folder ``parent/module_id``; refuses a bad id or a non-empty folder."""
    kind = ModuleKind(kind)
    if not SLUG.match(module_id):
        raise InvalidInput(
            "module name is invalid",
            [
                Problem(
                    module_id,
                    "use 2-64 lowercase letters, digits, '-' or '_', starting with a letter "
                    "(e.g. acme-mail)",
                )
            ],
        )
    root = parent / module_id
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InvalidInput(
            "module folder already exists", [Problem(str(root), "exists and is not empty")]
        )
    (root / "tests" / "recordings").mkdir(parents=True, exist_ok=True)
    manifest = json.dumps(manifest_data(module_id, kind), indent=2)
    (root / "manifest.json").write_text(manifest + "\n", encoding="utf-8")
    (root / "module.py").write_text(script_text(module_id, kind), encoding="utf-8")
    case = json.dumps(example_case(kind), indent=2)
    (root / "tests" / "example_webhook.json").write_text(case + "\n", encoding="utf-8")
    readme = README.format(module_id=module_id, kind=kind.value)
    (root / "README.md").write_text(readme, encoding="utf-8")
    return root
