"""One contract function of a module, run in the sandbox: the Invocation a ModuleCall
becomes, and the ModuleResult (or ModuleCallFailed) that comes back. The server's bridge
plugin and ``crm-host module run`` both go through here, so a local run has exactly the
server's policy, limits and error kinds."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.contract.world import script_world
from host.errors import ModuleCallFailed, ModuleNotImplemented
from host.module_storage import StorageChanges
from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.invocation import FetchNetwork, HostCallback, Invocation, InvocationResult
from sandbox.pool import SandboxPool


def module_invocation(
    call: ModuleCall,
    args: Sequence[Any],
    *,
    egress_allow: Sequence[str],
    callbacks: Mapping[str, HostCallback],
    storage: Mapping[str, Any] | None,
    network: FetchNetwork | None = None,
) -> Invocation:
    """``network`` is what the egress-checked Fetcher connects through (``module run
    --record/--replay`` and ``module test`` pass a recording or a replay); the Fetcher
    itself, and with it the egress policy, is the server's in every case. What belongs to
    the version (limits, egress policy, compiled-code key, file name) comes ready-made from
    ``call.program``."""
    program = call.program
    return Invocation(
        source=program.script,
        source_hash=program.script_key,
        function=call.function,
        args=list(args),
        filename=program.filename,
        settings=call.settings,
        limits=program.limits,
        egress=program.egress_policy(egress_allow),
        world=script_world(),
        storage=storage,
        network=network,
        callbacks=callbacks,
        redact=call.secret_values,
        label=f"{call.tenant_id}/{call.module_ref}",
        request_id=call.request_id or "",
        isolation_key=call.isolation_key,
    )


def as_module_result(
    call: ModuleCall,
    result: InvocationResult,
    storage: Mapping[str, Any] | None = None,
    durable_keys: Collection[str] = (),
) -> ModuleResult:
    """The envelope of a successful run; a failure raises ModuleCallFailed with its SPEC
    kind, line and the run's trace (captured log, fetches) for the invocation log. The new
    storage snapshot (the sandbox sends one only for a successful call) becomes the changes
    from ``storage``, the snapshot the run started from, left for the invoker to commit."""
    trace = ModuleResult(
        value=result.value,
        log=result.log,
        fetches=result.fetches,
        cpu_ms=result.cpu_ms,
        peak_memory_kb=result.peak_memory_kb,
        storage_changes=(
            StorageChanges.between(storage or {}, result.storage, durable_keys)
            if result.ok and result.storage is not None
            else None
        ),
    )
    if result.ok:
        return trace
    assert result.error is not None
    if result.error.kind == "not_implemented":
        failure: ModuleCallFailed = ModuleNotImplemented(call.module_ref, call.function)
        failure.trace = trace
        raise failure
    raise ModuleCallFailed(
        result.error.kind,
        result.error.message,
        module=call.module_ref,
        function=call.function,
        line=result.error.line,
        trace=trace,
    )


def run_module_function(
    pool: SandboxPool,
    call: ModuleCall,
    args: Sequence[Any],
    *,
    egress_allow: Sequence[str] = (),
    callbacks: Mapping[str, HostCallback] | None = None,
    storage: Mapping[str, Any] | None = None,
    network: FetchNetwork | None = None,
) -> ModuleResult:
    durable_keys: set[str] = set()
    invocation = module_invocation(
        call,
        args,
        egress_allow=egress_allow,
        callbacks=_noting_durable_keys(callbacks or {}, durable_keys),
        storage=storage,
        network=network,
    )
    return as_module_result(call, pool.run(invocation), storage, durable_keys)


def _noting_durable_keys(
    callbacks: Mapping[str, HostCallback], durable_keys: set[str]
) -> Mapping[str, HostCallback]:
    """``callbacks`` with each accepted durable write's key noted in ``durable_keys``. Why: a
    durable value is stored during the call, so the call's changes must carry that key's
    final state even when it ends as it began (deleted again, or set back)."""
    durable = callbacks.get(DURABLE_STORAGE_CALLBACK)
    if durable is None:
        return callbacks

    def write(args: list[Any]) -> Any:
        result = durable(args)
        durable_keys.add(str(args[0]))  # only once the host accepted the write
        return result

    return {**callbacks, DURABLE_STORAGE_CALLBACK: write}
