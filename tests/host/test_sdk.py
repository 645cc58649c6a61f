"""The typed SDK stub and the sandbox agree: every stub name is importable in a script, and
a module written against the stub type-checks with mypy and runs in the sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import crm_module_sdk
from host.contract.world import script_world
from sandbox.capabilities import InMemoryCapabilities
from sandbox.compiler import compile_script
from sandbox.execution import execute

MODULE = """\
from crm_module_sdk import (
    CRM_Marketing_DeliveryStatus,
    CRM_Marketing_UpdateDeliveryStatusAction,
    CRM_Marketing_WebhookResult,
    FetchRequest,
    log,
    settings,
)
import json


def CRM_Marketing_ParseWebhookRequest(request: FetchRequest) -> CRM_Marketing_WebhookResult:
    events = json.loads(request["body"])
    log("events:", len(events), "tenant setting:", settings.get("list_id"))
    actions = [
        CRM_Marketing_UpdateDeliveryStatusAction(
            type="UpdateDeliveryStatus",
            email=e["email"],
            externalId=e["campaign"],
            status=CRM_Marketing_DeliveryStatus.Opened,
        )
        for e in events
    ]
    return {"actions": actions}
"""


def test_every_sdk_name_is_importable_in_the_sandbox() -> None:
    names = ", ".join(crm_module_sdk.__all__)
    script = f"from crm_module_sdk import {names}\n\ndef f():\n    return [{names}] and 'ok'\n"
    compiled = compile_script(script)
    assert execute(compiled, "f", capabilities=InMemoryCapabilities(), spec=script_world()) == "ok"


def test_module_written_against_the_stub_runs_in_the_sandbox() -> None:
    capabilities = InMemoryCapabilities(settings={"list_id": "L1"})
    request = {
        "method": "POST",
        "url": "u",
        "headers": {},
        "query": {},
        "body": '[{"email": "a@b.co", "campaign": "c9"}]',
    }
    result = execute(
        compile_script(MODULE),
        "CRM_Marketing_ParseWebhookRequest",
        [request],
        capabilities=capabilities,
        spec=script_world(),
    )
    assert result == {
        "actions": [
            {
                "type": "UpdateDeliveryStatus",
                "email": "a@b.co",
                "externalId": "c9",
                "status": "Opened",
                "eventId": None,  # optional fields are there, as None
            }
        ]
    }
    assert capabilities.logs == ["events: 1 tenant setting: L1"]


def test_stub_calls_fail_clearly_outside_the_sandbox() -> None:
    try:
        crm_module_sdk.fetch("https://example.com")
    except RuntimeError as exc:
        assert "crm-host module run" in str(exc)
    else:
        raise AssertionError("fetch() outside the sandbox must raise")


def test_module_type_checks_with_mypy(tmp_path: Path) -> None:
    good = tmp_path / "module.py"
    good.write_text(MODULE)
    ok = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(good)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    bad = tmp_path / "bad.py"
    bad.write_text(
        MODULE.replace("CRM_Marketing_DeliveryStatus.Opened", "CRM_Marketing_DeliveryStatus.Read")
    )
    failed = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert 'DeliveryStatus]" has no attribute "Read"' in failed.stdout
