"""Running one function of an example module the way the host does — its settings, its
storage carried from call to call, ``crm.contacts`` answered by the test, the attribution
map (``crm.set_campaign_keys`` / ``crm.campaign_for_key``) in ``campaign_keys`` — in the real
sandbox, against an emulator on 127.0.0.1 that the module declares and the admin allow-list
waives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from host.calls import ModuleResult
from host.contract.enforce import validate_return
from host.marketing.campaign_keys import offline_callbacks
from host.module_runtime import run_module_function
from host.toolkit.local_run import local_call, plain
from sandbox.pool import SandboxPool
from tests.modules.emulated import call_declaring


class ModuleRunner:
    def __init__(
        self,
        pool: SandboxPool,
        module: Any,
        server: Any,
        settings: dict[str, Any],
        contacts: Callable[[list[str]], list[dict[str, Any]]],
    ):
        self.pool, self.module, self.server = pool, module, server
        self.settings = settings
        self.contacts_for = contacts
        self.storage: dict[str, Any] = {}
        self.campaign_keys: dict[str, str] = {}

    def result(self, function: str, *args: Any) -> ModuleResult:
        call = call_declaring(local_call(self.module, function, self.settings), self.server.netloc)
        result = validate_return(
            call,
            run_module_function(
                self.pool,
                call,
                args,
                egress_allow=[self.server.netloc],
                callbacks={
                    "crm.contacts": lambda a: self.contacts_for(a[0]),
                    "storage.durable": self._write_durable,
                    **offline_callbacks(self.campaign_keys),
                },
                storage=self.storage,
            ),
        )
        changes = result.storage_changes
        if changes is not None:  # what the invoker would commit
            kept = {k: v for k, v in self.storage.items() if k not in changes.removed}
            self.storage = {**kept, **changes.changed}
        return result

    def _write_durable(self, arguments: list[Any]) -> None:
        """``storage.set(key, value, durable=True)``: committed at once, as the host does."""
        key, value = arguments
        self.storage = {**self.storage, key: value}

    def crashed(self, function: str, *args: Any) -> None:
        """Run ``function`` as a host that dies before committing it: its effects on the
        service stay, its storage writes are lost (all but the durable ones)."""
        before = dict(self.storage)
        durable: dict[str, Any] = {}
        real = self._write_durable

        def keep(arguments: list[Any]) -> None:
            durable[arguments[0]] = arguments[1]
            real(arguments)

        self._write_durable = keep  # type: ignore[method-assign]
        try:
            self.result(function, *args)
        finally:
            self._write_durable = real  # type: ignore[method-assign]
            self.storage = {**before, **durable}

    def __call__(self, function: str, *args: Any) -> Any:
        return plain(self.result(function, *args).value)
