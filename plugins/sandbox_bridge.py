"""Serves every CRM_Marketing_* hook from the tenant's module, run in the sandbox.

Registered last among servers (``trylast``), so a trusted in-process plugin may serve a
function instead (for tests, or a native integration). The module's storage snapshot is
loaded before the call; the writes a successful call made come back as pending
``storage_changes`` that the invoker commits once the value is validated — the bridge never
commits them itself. It does lend the script ``storage.durable``, the host callback behind
``storage.set(key, value, durable=True)``, which commits that one write at once (under the
version's storage quota). A pool with no idle worker before its deadline is the host being
busy (ServiceBusy), not a module failure.

The hook methods are not written out: one per contract function is built from its definition
(:mod:`host.contract.functions`) when this module is imported, each passing its arguments,
in the contract's order, to the one :meth:`SandboxBridge.serve`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.contract.functions import ALL_FUNCTIONS
from host.contract.hooks import delegating_method
from host.errors import ServiceBusy
from host.hookspecs import hookimpl
from host.module_runtime import run_module_function
from host.module_storage import ModuleStorageStore
from host.plugin_context import PluginContext, ScriptCallbacks
from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.errors import ScriptError
from sandbox.invocation import HostCallback
from sandbox.pool import SandboxPool


class SandboxBridge:
    def __init__(
        self,
        *,
        sandbox: Callable[[], SandboxPool],
        module_storage: ModuleStorageStore,
        script_callbacks: ScriptCallbacks,
        egress_allow: list[str],
        sandbox_wait_s: float,
    ):
        self.sandbox = sandbox
        self.module_storage = module_storage
        self.script_callbacks = script_callbacks
        self.egress_allow = egress_allow
        self.sandbox_wait_s = sandbox_wait_s

    @classmethod
    def from_context(cls, context: PluginContext) -> SandboxBridge:
        return cls(
            sandbox=context.sandbox,
            module_storage=context.module_storage,
            script_callbacks=context.script_callbacks,
            egress_allow=context.settings.egress_allow,
            sandbox_wait_s=context.settings.sandbox_wait_s,
        )

    def serve(self, call: ModuleCall, *args: Any) -> ModuleResult:
        """Run ``call.function`` of the tenant's module with ``args`` (positional, in the
        contract's order, as the module defines them)."""
        storage = self.module_storage.load(call.tenant_id, call.module_id)
        try:
            return run_module_function(
                self.sandbox(),
                call,
                args,
                egress_allow=self.egress_allow,
                callbacks=self._callbacks(call),
                storage=storage,
            )
        except TimeoutError:  # no idle worker before the pool's acquire deadline
            raise ServiceBusy(
                f"no sandbox worker is free for {call.module_ref}; retry later",
                retry_after_s=max(1, math.ceil(self.sandbox_wait_s)),
            ) from None

    def _callbacks(self, call: ModuleCall) -> dict[str, HostCallback]:
        return {**self.script_callbacks(call), DURABLE_STORAGE_CALLBACK: self._durable_writer(call)}

    def _durable_writer(self, call: ModuleCall) -> HostCallback:
        """``storage.durable`` for this call only: its tenant and module, its quota."""
        store = self.module_storage
        quota = call.program.limits.storage_bytes

        def write(args: list[Any]) -> None:
            if len(args) != 2:
                raise ScriptError("storage.durable takes a key and a value")
            store.write_durable(call.tenant_id, call.module_id, args[0], args[1], quota_bytes=quota)

        return write


for _function in ALL_FUNCTIONS.values():
    setattr(
        SandboxBridge, _function.hook, hookimpl(trylast=True)(delegating_method(_function, "serve"))
    )
del _function
