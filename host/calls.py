"""What a hook implementation needs to know about a CRM_Marketing_* call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.invocation import redact_text

if TYPE_CHECKING:
    from host.manifest import Manifest
    from host.module_program import ModuleProgram
    from host.module_storage import StorageChanges


@dataclass(frozen=True)
class ModuleCall:
    """One call of a tenant's module: which version, with which settings.

    ``program`` is the stored version as the sandbox runs it (typed manifest, script, limits,
    compiled-code key), one object shared by every call of that version. ``settings``
    includes decrypted secrets (the module needs its API key); ``secret_values`` lists them
    so whoever surfaces script output can mask them.
    """

    tenant_id: str
    module_id: str
    version: str
    function: str
    program: ModuleProgram = field(repr=False)
    settings: dict[str, Any] = field(repr=False)
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    #: what the call is for: ``live`` traffic, or a run outside it (``local`` for
    #: ``crm-host module run``/``module test``; shadow and console test runs name their own)
    purpose: str = "live"
    #: the HTTP request that caused the call (:mod:`host.request_ids`), None for background
    #: work; stored on the invocation log row and handed to the sandbox as an opaque label
    request_id: str | None = None

    @property
    def manifest(self) -> Manifest:
        return self.program.manifest

    @property
    def script(self) -> str:
        return self.program.script

    @property
    def module_ref(self) -> str:
        return f"{self.module_id}@{self.version}"

    @property
    def isolation_key(self) -> tuple[str, str, str, str]:
        """The sandbox workers this call may share: only calls of the same purpose, tenant,
        module and version ever run in the same worker process."""
        return (self.purpose, self.tenant_id, self.module_id, self.version)


@dataclass
class ModuleResult:
    """What serving a call produced: the value plus what the run left behind (captured log,
    fetch records, resource use), for the invocation log, and the storage writes the call
    asks for.

    ``storage_changes`` is a *pending* effect: whoever served the call never commits it; the
    invoker does, once the value is validated and the caller's own effects succeed, in one
    transaction with them (:meth:`host.invoker.ModuleInvoker.call_resolved`).

    ``records`` are rows a wrapping plugin (the invocation log) wants stored about the call,
    each a (mapped class, column values) pair built before the commit: the invoker inserts
    them with one Core statement per table in that same transaction, so a successful webhook
    costs one commit rather than one per plugin, and stores them on their own when the
    transaction fails (the call still happened).

    Hook implementations return this envelope rather than the bare value, because ``None`` is
    a legitimate return of some functions and means "not served here" to pluggy.
    """

    value: Any
    log: str = ""
    fetches: list[dict[str, Any]] = field(default_factory=list)
    cpu_ms: float | None = None
    peak_memory_kb: int | None = None
    storage_changes: StorageChanges | None = None
    records: list[tuple[type[Any], dict[str, Any]]] = field(default_factory=list)


def mask_secrets(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """``text`` with every secret value replaced by ``***``, as the sandbox masks script
    output (:func:`sandbox.invocation.redact_text`); None and "" pass through."""
    return redact_text(text, secrets) if text else text
