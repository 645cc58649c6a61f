"""Counts every CRM_Marketing_* call for ``GET /metrics``: by module, function, outcome and
failure kind, with its duration and its fetches; and campaign status changes. A wrapper of
every function hook, outermost like the invocation log, so it sees the final outcome (a
contract violation the host's enforcer found included) and also the calls the sandbox
refused for want of a worker (``refused``/``busy``), which the invocation log leaves out."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.errors import ModuleCallFailed, ServiceBusy
from host.hook_wrappers import wraps_every_function
from host.hookspecs import hookimpl
from host.metrics.instruments import OK_KIND, HostMetrics
from host.plugin_context import PluginContext


@wraps_every_function(tryfirst=True)
class CallMetrics:
    def __init__(self, metrics: HostMetrics):
        self.metrics = metrics

    @classmethod
    def from_context(cls, context: PluginContext) -> CallMetrics:
        return cls(context.metrics)

    def around_call(self, call: ModuleCall) -> Generator[None, Any, Any]:
        clock = time.perf_counter()
        try:
            result = yield
        except ServiceBusy:
            self._observe(call, clock, "refused", "busy", None)
            raise
        except ModuleCallFailed as exc:
            trace = exc.trace if isinstance(exc.trace, ModuleResult) else None
            self._observe(call, clock, "failed", exc.kind, trace)
            raise
        except Exception:
            self._observe(call, clock, "failed", "plugin_error", None)
            raise
        if isinstance(result, ModuleResult):
            self._observe(call, clock, "ok", OK_KIND, result)
        else:
            self._observe(call, clock, "failed", "not_implemented", None)
        return result

    def _observe(
        self, call: ModuleCall, clock: float, outcome: str, kind: str, trace: ModuleResult | None
    ) -> None:
        self.metrics.observe_call(
            module=call.module_id,
            function=call.function,
            outcome=outcome,
            kind=kind,
            seconds=time.perf_counter() - clock,
            fetches=trace.fetches if trace else (),
            egress=call.manifest.egress,
        )

    @hookimpl
    def crm_host_campaign_status_changed(
        self, tenant_id: str, campaign_id: str, old_status: str, new_status: str, error: str | None
    ) -> None:
        self.metrics.count_campaign_status(str(new_status))
