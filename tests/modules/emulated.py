"""Example modules pointed at a local emulator, declared honestly.

An example manifest lists the real service (``api.sendgrid.com``); the tests send it to an
emulator on ``127.0.0.1:PORT`` through its base-URL setting. The admin's allow-list only
waives the loopback refusal for destinations a manifest declares (SPEC §4), so the copy of
the module under test also declares the emulator's ``host:port``."""

from __future__ import annotations

import dataclasses
import json

from host.calls import ModuleCall
from host.module_program import ModuleProgram
from host.modules.packages import ModulePackage


def declaring(package: ModulePackage, *destinations: str) -> ModulePackage:
    """``package`` with ``destinations`` appended to its manifest's ``egress``."""
    manifest = json.loads(package.manifest_text)
    manifest["egress"] = [*manifest.get("egress", []), *destinations]
    return dataclasses.replace(package, manifest_text=json.dumps(manifest))


def call_declaring(call: ModuleCall, *destinations: str) -> ModuleCall:
    """``call`` of a module whose manifest also declares ``destinations``."""
    manifest = call.manifest.model_copy(update={"egress": [*call.manifest.egress, *destinations]})
    return dataclasses.replace(call, program=ModuleProgram.of(manifest, call.script))
