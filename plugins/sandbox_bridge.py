"""Serves every CRM_Marketing_* hook from the tenant's module, run in the sandbox.

Registered last among servers (``trylast``), so a trusted in-process plugin may serve a
function instead (for tests, or a native integration). The module's storage snapshot is
loaded before the call and saved only if the call succeeded and changed it. A pool with no
idle worker before its deadline is the host being busy (ServiceBusy), not a module failure.

The hook methods are not written out: one per contract function is built from its definition
(:mod:`host.contract.functions`) when this module is imported, each passing its arguments,
in the contract's order, to the one :meth:`SandboxBridge.serve`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.calls import ModuleCall, ModuleResult
from host.contract.functions import ALL_FUNCTIONS
from host.contract.hooks import delegating_method
from host.errors import ServiceBusy
from host.hookspecs import hookimpl
from host.module_runtime import run_module_function
from sandbox.invocation import HostCallback

if TYPE_CHECKING:
    from host.platform import Host


class SandboxBridge:
    def __init__(self, host: Host):
        self.host = host

    def serve(self, call: ModuleCall, *args: Any) -> ModuleResult:
        """Run ``call.function`` of the tenant's module with ``args`` (positional, in the
        contract's order, as the module defines them)."""
        storage = self.host.module_storage.load(call.tenant_id, call.module_id)
        try:
            result = run_module_function(
                self.host.sandbox,
                call,
                args,
                egress_allow=self.host.settings.egress_allow,
                callbacks=self._callbacks(call),
                storage=storage,
            )
        except TimeoutError:  # no idle worker before the pool's acquire deadline
            raise ServiceBusy(
                f"no sandbox worker is free for {call.module_ref}; retry later",
                retry_after_s=max(1, math.ceil(self.host.settings.sandbox_wait_s)),
            ) from None
        if result.storage is not None:
            self.host.module_storage.save(call.tenant_id, call.module_id, storage, result.storage)
        return result

    def _callbacks(self, call: ModuleCall) -> dict[str, HostCallback]:
        provide: Callable[[ModuleCall], dict[str, HostCallback]] = self.host.script_callbacks
        return provide(call)


for _function in ALL_FUNCTIONS.values():
    setattr(
        SandboxBridge, _function.hook, hookimpl(trylast=True)(delegating_method(_function, "serve"))
    )
del _function
