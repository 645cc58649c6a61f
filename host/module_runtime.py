"""One contract function of a module, run in the sandbox: the Invocation a ModuleCall
becomes, and the ModuleResult (or ModuleCallFailed) that comes back. The server's bridge
plugin and ``crm-host module run`` both go through here, so a local run has exactly the
server's policy, limits and error kinds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.contract.world import script_world
from host.errors import ModuleCallFailed, ModuleNotImplemented
from sandbox.egress import EgressPolicy
from sandbox.invocation import FetchNetwork, HostCallback, Invocation, InvocationResult
from sandbox.limits import DEFAULT_LIMITS
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
    itself, and with it the egress policy, is the server's in every case."""
    manifest = call.manifest
    return Invocation(
        source=call.script,
        function=call.function,
        args=list(args),
        filename=manifest.get("script", "module.py"),
        settings=call.settings,
        limits=DEFAULT_LIMITS.lowered_by(manifest.get("limits") or {}),
        egress=EgressPolicy.from_config(manifest.get("egress") or [], egress_allow),
        world=script_world(),
        storage=dict(storage or {}),
        network=network,
        callbacks=dict(callbacks),
        redact=list(call.secret_values),
        label=f"{call.tenant_id}/{call.module_ref}",
        isolation_key=call.isolation_key,
    )


def as_module_result(call: ModuleCall, result: InvocationResult) -> ModuleResult:
    """The envelope of a successful run; a failure raises ModuleCallFailed with its SPEC
    kind, line and the run's trace (captured log, fetches) for the invocation log."""
    trace = ModuleResult(
        value=result.value,
        log=result.log,
        fetches=list(result.fetches),
        cpu_ms=result.cpu_ms,
        peak_memory_kb=result.peak_memory_kb,
        storage=result.storage,
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
    invocation = module_invocation(
        call,
        args,
        egress_allow=egress_allow,
        callbacks=callbacks or {},
        storage=storage,
        network=network,
    )
    return as_module_result(call, pool.run(invocation))
