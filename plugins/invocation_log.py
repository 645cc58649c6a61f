"""Writes every CRM_Marketing_* call into the invocation log table: who called what, when,
for how long, how it ended, and what the run captured. The outermost wrapper, so it sees the
final outcome (including a contract violation found by the host's enforcer).

A failed call's row is written at once. A successful call's row rides on its result
(``ModuleResult.records``): the invoker stores it in the transaction that commits the call's
effects (a webhook's actions and receipt), or on its own if that transaction fails, so a
webhook is one commit instead of two."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

from host.calls import ModuleCall, ModuleResult, mask_secrets
from host.db.engine import Database
from host.db.models import Invocation
from host.errors import ModuleCallFailed, ServiceBusy
from host.hook_wrappers import wraps_every_function
from host.plugin_context import PluginContext

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000


@wraps_every_function(tryfirst=True)
class InvocationLog:
    def __init__(self, db: Database):
        self.db = db

    @classmethod
    def from_context(cls, context: PluginContext) -> InvocationLog:
        return cls(context.db)

    def around_call(self, call: ModuleCall) -> Generator[None, Any, Any]:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        try:
            result = yield
        except ServiceBusy:
            raise  # the module never ran: nothing to log
        except ModuleCallFailed as exc:
            trace = exc.trace if isinstance(exc.trace, ModuleResult) else None
            self._record(call, started, clock, exc.kind, exc.message, exc.line, trace)
            raise
        except Exception as exc:
            self._record(call, started, clock, "plugin_error", f"{type(exc).__name__}: {exc}")
            raise
        if result is None:
            self._record(call, started, clock, "not_implemented", None)
        elif isinstance(result, ModuleResult):
            row = self._row(call, started, clock, "ok", None, None, result)
            result.records.append((Invocation, row))
        else:  # not the documented shape: the invoker refuses it, the log says it ran
            self._record(call, started, clock, "ok", None)
        return result

    def _record(
        self,
        call: ModuleCall,
        started: datetime,
        clock: float,
        outcome: str,
        error: str | None,
        line: int | None = None,
        trace: ModuleResult | None = None,
    ) -> None:
        columns = self._row(call, started, clock, outcome, error, line, trace)
        try:
            with self.db.transaction() as session:
                session.add(Invocation(**columns))
        except Exception:
            # The call's own outcome matters more than its log line.
            log.exception("could not write the invocation log for %s", call.module_ref)

    @staticmethod
    def _row(
        call: ModuleCall,
        started: datetime,
        clock: float,
        outcome: str,
        error: str | None,
        line: int | None = None,
        trace: ModuleResult | None = None,
    ) -> dict[str, Any]:
        """The log row's columns, secrets masked."""
        secrets = call.secret_values
        return dict(
            tenant_id=call.tenant_id,
            module_id=call.module_id,
            version=call.version,
            function=call.function,
            started_at=started,
            duration_ms=round((time.perf_counter() - clock) * 1000, 3),
            outcome=outcome,
            # mask before cutting: a cut through a secret would leave its prefix unmasked
            error=(mask_secrets(error, secrets) or "")[:MAX_ERROR_CHARS] or None,
            error_line=line,
            log=mask_secrets(trace.log if trace else None, secrets),
            fetches=trace.fetches if trace else [],
            cpu_ms=trace.cpu_ms if trace else None,
            peak_memory_kb=trace.peak_memory_kb if trace else None,
            request_id=call.request_id,
        )
