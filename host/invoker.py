"""Calling a tenant's module function: resolve the enablement, build the ModuleCall, call the
function's hook, and turn "nobody served it" into not_implemented. Every caller in the host
(flows, routes, CLI) goes through here, so every call is validated and logged the same way,
and every call first takes a slot of its tenant's fair share of the sandbox
(:mod:`host.module_shares`), so no tenant can stall the others."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pluggy

from host.calls import ModuleCall, ModuleResult, mask_secrets
from host.contract.functions import HOOK_NAMES, contract_function
from host.errors import HostError, ModuleCallFailed, ModuleNotImplemented, NotFound
from host.module_shares import ModuleShares
from host.tenants import RuntimeEnablement, TenantService


class ModuleInvoker:
    """``shares`` admits calls to the sandbox (None: no admission, for embedders and tools
    that run one call at a time)."""

    def __init__(
        self,
        tenants: TenantService,
        hooks: pluggy.PluginManager,
        shares: ModuleShares | None = None,
    ):
        self.tenants = tenants
        self.hooks = hooks
        self.shares = shares

    def call(
        self,
        tenant_id: str,
        module_id: str,
        function: str,
        *,
        version: str | None = None,
        **arguments: Any,
    ) -> Any:
        """Call ``function`` of the module enabled for the tenant (its pinned version, or
        ``version``) and return its validated value; raises ModuleCallFailed (with its SPEC
        kind) on failure."""
        return self.call_with_trace(
            tenant_id, module_id, function, version=version, **arguments
        ).value

    def call_with_trace(
        self,
        tenant_id: str,
        module_id: str,
        function: str,
        *,
        version: str | None = None,
        **arguments: Any,
    ) -> ModuleResult:
        runtime = self.tenants.runtime(tenant_id, module_id, version)
        return self.call_resolved(runtime, function, **arguments)

    def call_resolved(
        self, runtime: RuntimeEnablement, function: str, **arguments: Any
    ) -> ModuleResult:
        """Like :meth:`call_with_trace` for an enablement the caller has just resolved (a
        webhook resolves it to check its token), saving a second lookup on a hot path."""
        tenant_id, module_id = runtime.tenant_id, runtime.module_id
        contract = contract_function(runtime.manifest.kind, function)
        if contract is None:
            raise NotFound(f"{function} is not a function of {runtime.manifest.kind} modules")
        call = ModuleCall(
            tenant_id=tenant_id,
            module_id=module_id,
            version=runtime.version,
            function=function,
            manifest=runtime.manifest.model_dump(mode="json"),
            script=runtime.script,
            settings=runtime.settings,
            secret_values=runtime.secret_values,
        )
        hook = getattr(self.hooks.hook, HOOK_NAMES[function])
        arguments = contract.complete_keywords(arguments)  # omitted optional ones → None
        # Admission happens before the hook: a refused call (ServiceBusy) reaches neither
        # the plugins nor the invocation log, because nothing ran.
        slot = self.shares.slot(tenant_id, module_id) if self.shares else nullcontext()
        try:
            with slot:
                result = hook(call=call, **arguments)
        except HostError:
            raise
        except Exception as exc:
            # A trusted plugin crashed: the caller gets the same typed failure as for a
            # module, never a bare traceback (the invocation log says plugin_error).
            raise ModuleCallFailed(
                "plugin_error",
                mask_secrets(f"{type(exc).__name__}: {exc}", call.secret_values) or "",
                module=call.module_ref,
                function=function,
            ) from exc
        if result is None:
            raise ModuleNotImplemented(call.module_ref, function)
        if not isinstance(result, ModuleResult):  # the hookspecs' documented shape
            raise ModuleCallFailed(
                "plugin_error",
                f"a plugin served {function} with a {type(result).__name__}, not a ModuleResult",
                module=call.module_ref,
                function=function,
            )
        return result
