"""Calling a tenant's module function: resolve the enablement, build the ModuleCall, call the
function's hook, and turn "nobody served it" into not_implemented. Every caller in the host
(flows, routes, CLI) goes through here, so every call is validated and logged the same way,
and every call first takes a slot of its tenant's fair share of the sandbox
(:mod:`host.module_shares`), so no tenant can stall the others.

The invoker is also the one owner of a call's effects. Whoever served the hook only reports
the storage writes the call asks for (``ModuleResult.storage_changes``); the invoker commits
them after the hook chain returned, i.e. after the contract enforcer validated the value,
in ONE transaction with the caller's own ``effects`` (a webhook's actions and receipt, a
check of an import page). A call reported as failed — by the module, the enforcer, or the
caller's effects — therefore keeps no storage writes; only a script's explicit
``storage.set(..., durable=True)`` is committed before that (:mod:`host.module_storage`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pluggy
from sqlalchemy import insert
from sqlalchemy.orm import Session

from host.calls import ModuleCall, ModuleResult, mask_secrets
from host.contract.functions import HOOK_NAMES, contract_function
from host.errors import HostError, ModuleCallFailed, ModuleNotImplemented, NotFound
from host.module_shares import ModuleShares
from host.module_storage import ModuleStorageStore
from host.request_ids import current_request_id
from host.tenants import RuntimeEnablement, TenantService

log = logging.getLogger(__name__)

CallEffects = Callable[[Session, ModuleResult], None]
"""A caller's own effects of a successful call, run inside the transaction that commits the
call's storage writes; raising rolls both back (and the exception reaches the caller)."""
CallPreparation = Callable[[ModuleResult], None]
"""A caller's work on a successful call's value that needs no database (building rows,
masking), run just before the effects' transaction opens, so that transaction — on SQLite
the one writer at a time — holds only statements; raising is like the effects raising."""


class ModuleInvoker:
    """``shares`` admits calls to the sandbox (None: no admission, for embedders and tools
    that run one call at a time); ``storage`` is where a call's storage writes are committed."""

    def __init__(
        self,
        tenants: TenantService,
        hooks: pluggy.PluginManager,
        shares: ModuleShares | None = None,
        *,
        storage: ModuleStorageStore,
    ):
        self.tenants = tenants
        self.hooks = hooks
        self.shares = shares
        self.storage = storage

    def call(
        self,
        tenant_id: str,
        module_id: str,
        function: str,
        *,
        version: str | None = None,
        effects: CallEffects | None = None,
        **arguments: Any,
    ) -> Any:
        """Call ``function`` of the module enabled for the tenant (its pinned version, or
        ``version``) and return its validated value; raises ModuleCallFailed (with its SPEC
        kind) on failure."""
        return self.call_with_trace(
            tenant_id, module_id, function, version=version, effects=effects, **arguments
        ).value

    def call_with_trace(
        self,
        tenant_id: str,
        module_id: str,
        function: str,
        *,
        version: str | None = None,
        effects: CallEffects | None = None,
        **arguments: Any,
    ) -> ModuleResult:
        runtime = self.tenants.runtime(tenant_id, module_id, version)
        return self.call_resolved(runtime, function, effects=effects, **arguments)

    def call_resolved(
        self,
        runtime: RuntimeEnablement,
        function: str,
        *,
        effects: CallEffects | None = None,
        prepare: CallPreparation | None = None,
        **arguments: Any,
    ) -> ModuleResult:
        """Like :meth:`call_with_trace` for an enablement the caller has just resolved (a
        webhook resolves it to check its token), saving a second lookup on a hot path.

        On success the call's storage writes and ``effects`` are committed together (see the
        module docstring), ``prepare`` running first, outside the transaction; neither is
        run for a failed call."""
        tenant_id, module_id = runtime.tenant_id, runtime.module_id
        contract = contract_function(runtime.manifest.kind, function)
        if contract is None:
            raise NotFound(f"{function} is not a function of {runtime.manifest.kind} modules")
        call = ModuleCall(
            tenant_id=tenant_id,
            module_id=module_id,
            version=runtime.version,
            function=function,
            program=runtime.program,
            settings=runtime.settings,
            secret_values=runtime.secret_values,
            request_id=current_request_id(),
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
        self._commit(call, result, effects, prepare)
        return result

    def _commit(
        self,
        call: ModuleCall,
        result: ModuleResult,
        effects: CallEffects | None,
        prepare: CallPreparation | None = None,
    ) -> None:
        """One write transaction for everything the call changes: its storage writes, the
        caller's effects and the plugins' records. When it fails, the records (the call did
        run) are stored on their own and the failure reaches the caller."""
        changes = result.storage_changes
        if changes is None and effects is None and not result.records:
            return
        if changes is not None:  # a missing row is created first, in its own transaction
            self.storage.ensure_row(call.tenant_id, call.module_id)
        try:
            if prepare is not None:
                prepare(result)
            with self.storage.db.write_transaction() as session:
                if changes is not None:
                    self.storage.apply(session, call.tenant_id, call.module_id, changes)
                if effects is not None:
                    effects(session, result)
                self._add_records(session, call, result)
        except BaseException:
            self._store_records(result)
            raise

    @staticmethod
    def _add_records(session: Session, call: ModuleCall, result: ModuleResult) -> None:
        """The plugins' records in a savepoint: one that cannot be written is logged and
        left out, it never undoes the call's effects (its outcome matters more)."""
        if not result.records:
            return
        session.flush()  # the effects' own failures are theirs, raised here
        try:
            with session.begin_nested():
                insert_records(session, result.records)
        except Exception:
            log.exception("could not write the invocation log for %s", call.module_ref)

    def _store_records(self, result: ModuleResult) -> None:
        if not result.records:
            return
        try:
            with self.storage.db.transaction() as session:
                insert_records(session, result.records)
        except Exception:
            log.exception("could not write the invocation log of a call whose commit failed")


def insert_records(session: Session, records: list[tuple[type[Any], dict[str, Any]]]) -> None:
    """The records as Core INSERTs, one per table (no ORM unit of work: this runs inside
    the write transaction, which on SQLite every writer waits for)."""
    by_table: dict[Any, list[dict[str, Any]]] = {}
    for model, values in records:
        by_table.setdefault(model.__table__, []).append(values)
    connection = session.connection()
    for table, rows in by_table.items():
        connection.execute(insert(table), rows)
