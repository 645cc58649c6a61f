"""Serves every CRM_Marketing_* hook from the tenant's module, run in the sandbox.

Registered last among servers (``trylast``), so a trusted in-process plugin may serve a
function instead (for tests, or a native integration). The module's storage snapshot is
loaded before the call; the writes a successful call made come back as pending
``storage_changes`` that the invoker commits once the value is validated — the bridge never
commits them itself. It does lend the script ``storage.durable``, the host callback behind
``storage.set(key, value, durable=True)``, which commits that one write at once (under the
version's storage quota). A pool with no idle worker before its deadline is the host being
busy (ServiceBusy), not a module failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host.calls import ModuleCall, ModuleResult
from host.errors import ServiceBusy
from host.hookspecs import hookimpl
from host.module_runtime import run_module_function
from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.errors import ScriptError
from sandbox.invocation import HostCallback

if TYPE_CHECKING:
    from host.platform import Host


class SandboxBridge:
    def __init__(self, host: Host):
        self.host = host

    def _serve(self, call: ModuleCall, *args: Any) -> ModuleResult:
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
        return result

    def _callbacks(self, call: ModuleCall) -> dict[str, HostCallback]:
        provide: Callable[[ModuleCall], dict[str, HostCallback]] = self.host.script_callbacks
        return {**provide(call), DURABLE_STORAGE_CALLBACK: self._durable_writer(call)}

    def _durable_writer(self, call: ModuleCall) -> HostCallback:
        """``storage.durable`` for this call only: its tenant and module, its quota."""
        store = self.host.module_storage
        quota = call.program.limits.storage_bytes

        def write(args: list[Any]) -> None:
            if len(args) != 2:
                raise ScriptError("storage.durable takes a key and a value")
            store.write_durable(call.tenant_id, call.module_id, args[0], args[1], quota_bytes=quota)

        return write

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
