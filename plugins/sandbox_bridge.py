"""Serves every CRM_Marketing_* hook from the tenant's module, run in the sandbox.

Registered last among servers (``trylast``), so a trusted in-process plugin may serve a
function instead (for tests, or a native integration). The module's storage snapshot is
loaded before the call and saved only if the call succeeded and changed it. A pool with no
idle worker before its deadline is the host being busy (ServiceBusy), not a module failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.errors import ServiceBusy
from host.hookspecs import hookimpl
from host.module_runtime import run_module_function
from host.module_storage import ModuleStorageStore
from host.plugin_context import PluginContext, ScriptCallbacks
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

    def _serve(self, call: ModuleCall, *args: Any) -> ModuleResult:
        storage = self.module_storage.load(call.tenant_id, call.module_id)
        try:
            result = run_module_function(
                self.sandbox(),
                call,
                args,
                egress_allow=self.egress_allow,
                callbacks=self.script_callbacks(call),
                storage=storage,
            )
        except TimeoutError:  # no idle worker before the pool's acquire deadline
            raise ServiceBusy(
                f"no sandbox worker is free for {call.module_ref}; retry later",
                retry_after_s=max(1, math.ceil(self.sandbox_wait_s)),
            ) from None
        if result.storage is not None:
            self.module_storage.save(call.tenant_id, call.module_id, storage, result.storage)
        return result

    @hookimpl(trylast=True)
    def crm_marketing_import_templates(self, call: ModuleCall, offset: int, limit: int) -> Any:
        return self._serve(call, offset, limit)

    @hookimpl(trylast=True)
    def crm_marketing_export_contacts(self, call: ModuleCall, contactIds: list[str]) -> Any:
        return self._serve(call, contactIds)

    @hookimpl(trylast=True)
    def crm_marketing_prepare_campaign(
        self, call: ModuleCall, campaignId: str, type: str, contacts: list[str]
    ) -> Any:
        return self._serve(call, campaignId, type, contacts)

    @hookimpl(trylast=True)
    def crm_marketing_create_campaign(self, call: ModuleCall, request: dict[str, Any]) -> Any:
        return self._serve(call, request)

    @hookimpl(trylast=True)
    def crm_marketing_create_messenger_campaign(
        self, call: ModuleCall, request: dict[str, Any]
    ) -> Any:
        return self._serve(call, request)

    @hookimpl(trylast=True)
    def crm_marketing_get_campaign_stats(self, call: ModuleCall, campaignExternalId: str) -> Any:
        return self._serve(call, campaignExternalId)

    @hookimpl(trylast=True)
    def crm_marketing_parse_webhook_request(self, call: ModuleCall, request: dict[str, Any]) -> Any:
        return self._serve(call, request)

    @hookimpl(trylast=True)
    def crm_marketing_get_template_html(self, call: ModuleCall, templateExternalId: str) -> Any:
        return self._serve(call, templateExternalId)

    @hookimpl(trylast=True)
    def crm_marketing_set_template_html(
        self, call: ModuleCall, html: str, name: str, templateExternalId: str | None
    ) -> Any:
        return self._serve(call, html, name, templateExternalId)

    @hookimpl(trylast=True)
    def crm_marketing_get_messenger_types(self, call: ModuleCall) -> Any:
        return self._serve(call)

    @hookimpl(trylast=True)
    def crm_marketing_get_messenger_bots(self, call: ModuleCall) -> Any:
        return self._serve(call)
