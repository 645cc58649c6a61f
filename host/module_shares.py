"""Who may run module code now: the host's mapping of tenants and modules onto the sandbox's
fair admission (:mod:`sandbox.admission`).

Every tenant is one group (its share of this node's sandbox), every (tenant, module) one key
inside it, so a tenant's flood of one module neither takes the whole pool nor starves the
tenant's other modules; campaign jobs count against their tenant's share like any other call.
Admin work that runs module code (validation or trial runs an admin starts) runs in a share
of its own, entered with :meth:`ModuleShares.admin_work`, so a tenant's flood cannot stall
the admin and the admin cannot take the tenants' whole pool.

A refusal becomes :class:`host.errors.ServiceBusy`; the module was never called, so it is not
in the invocation log (there is no invocation to record).

Calls through :class:`host.invoker.ModuleInvoker` take their slot there. Code that runs a
module on the pool directly (an admin route validating settings in a worker, say) takes one
itself: ``with shares.admin_work(), shares.slot(tenant_id, module_id): ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from host.config import HostSettings
from host.errors import ServiceBusy
from sandbox.admission import AdmissionRefused, FairAdmission

ADMIN_GROUP = "admin"
"""The admin's share; tenant groups are ``tenant:<id>``, so no tenant id can collide."""

_admin_work: ContextVar[bool] = ContextVar("admin_work", default=False)


class ModuleShares:
    def __init__(self, settings: HostSettings):
        slots = settings.sandbox_workers
        tenant_cap = settings.sandbox_tenant_max_concurrent or max(1, slots // 2)
        self.admission = FairAdmission(
            slots,
            group_cap=tenant_cap,
            key_cap=settings.sandbox_module_max_concurrent or tenant_cap,
            wait_s=settings.sandbox_wait_s,
            max_waiting_per_group=settings.sandbox_max_waiting,
            group_caps={ADMIN_GROUP: settings.sandbox_admin_max_concurrent},
        )

    @contextmanager
    def admin_work(self) -> Iterator[None]:
        """Module calls made inside this block (in this thread or context) use the admin
        share instead of the tenant's."""
        token = _admin_work.set(True)
        try:
            yield
        finally:
            _admin_work.reset(token)

    @contextmanager
    def slot(self, tenant_id: str, module_id: str) -> Iterator[None]:
        """Hold a sandbox slot of the caller's share while the module runs; raises
        ServiceBusy when none is free before the deadline."""
        group = ADMIN_GROUP if _admin_work.get() else f"tenant:{tenant_id}"
        try:
            self.admission.acquire(group, (group, tenant_id, module_id))
        except AdmissionRefused as refused:
            raise ServiceBusy(
                f"module {module_id} of tenant {tenant_id} is busy: {refused}; retry later",
                retry_after_s=refused.retry_after_s,
            ) from None
        try:
            yield
        finally:
            self.admission.release(group, (group, tenant_id, module_id))
