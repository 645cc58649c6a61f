"""Shadow runs: what a module version would do with the tenant's real webhook traffic, before
it is enabled, with no effect anywhere.

An admin about to pin version N+1 for a tenant runs ``crm-host module shadow --tenant T
--module M --version V`` (or ``POST /api/v1/tenants/{t}/modules/{m}/shadow``). The host takes
the tenant's stored webhook requests of that module (:mod:`host.marketing.webhook_store`;
a window, newest ``limit`` of it, run oldest first) and runs each through V's
``CRM_Marketing_ParseWebhookRequest``, then reports per request how V's actions differ
from those the current version returned (kept on the request's receipt,
:mod:`host.marketing.action_diff`), V's reply status or error, its fetches and its time.

What keeps a shadow run without effect — each a rule, not a convention:

* **No actions applied, no receipt, no invocation log row.** The call does not go through
  the hook chain or the invoker (which commit effects); it runs V on the sandbox pool
  directly and validates its value against the contract like any call.
* **A worker of its own.** The call's purpose is ``shadow``, so its isolation key differs
  from live traffic's: V's code never shares a worker process with the live version.
* **Storage is a snapshot.** The module's stored values are read once when the run starts;
  a request's writes (``durable=True`` ones included) change only the run's private copy,
  which later requests of the run see, and are listed in ``storageWrites``. Nothing is
  written to the database.
* **No live fetch.** Fetches go through the real egress checks to a replay transport
  (:mod:`host.toolkit.replayer`): answered from the admin's recording when one is given,
  otherwise refused in the script like an unmatched replay. Every refused fetch is listed
  in ``unmatchedFetches``; no connection is ever opened.
* **Host callbacks that write are refused** (``crm.set_campaign_keys``); reading ones
  (``crm.contacts``, ``crm.campaign_for_key``) see live data.
* **Bounded.** At most :data:`MAX_REQUESTS` requests and :data:`MAX_SECONDS` seconds per
  run (the run stops before the next request once its time is up, so one invocation's wall
  time limit is the most it overruns); each call keeps V's own limits and takes a slot of
  the admin's sandbox share, so a shadow run can neither stall the tenants' live traffic nor
  be stalled by it.

A receipt written before actions were kept on receipts (schema revision 0015) has no
actions: the current side is then the receipt's version run in shadow the same way
(``current.source: "rerun"``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from host.calls import ModuleCall, ModuleResult, mask_secrets
from host.contract.enforce import validate_return
from host.contract.types import WebhookResult
from host.db.engine import Database
from host.db.models import WebhookReceipt, WebhookRequest
from host.errors import InvalidInput, ModuleCallFailed, NotFound, Problem, ServiceBusy
from host.marketing import campaign_keys
from host.marketing.action_diff import action_records, diff_actions
from host.marketing.webhooks import FUNCTION, fetch_request, incoming_of, reply_from
from host.module_runtime import run_module_function
from host.module_shares import ModuleShares
from host.module_storage import ModuleStorageStore
from host.secrets import SecretBox
from host.tenants import RuntimeEnablement, TenantService
from host.toolkit.recording import Recording
from host.toolkit.replayer import Replayer
from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.errors import ScriptError
from sandbox.invocation import HostCallback
from sandbox.pool import SandboxPool

PURPOSE = "shadow"
"""The ModuleCall purpose of a shadow run: its own sandbox workers."""
MAX_REQUESTS = 1000
DEFAULT_REQUESTS = 100
MAX_SECONDS = 600.0
DEFAULT_SECONDS = 120.0
READ_ONLY_CALLBACKS = frozenset({"crm.contacts", campaign_keys.GET})
"""Host callbacks a shadow run lends as they are; every other one is refused."""
MAX_ERROR_CHARS = 2000

ProgressCallback = Callable[[int, int], None]
"""``(requests done, requests to run)``, after each request."""


@dataclass(frozen=True)
class ShadowWindow:
    """Which stored requests to run: received in ``[since, until)``, the newest ``limit``."""

    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_REQUESTS
    max_seconds: float = DEFAULT_SECONDS

    def checked(self) -> ShadowWindow:
        """Itself, or InvalidInput naming each field out of bounds."""
        problems = []
        if not 1 <= self.limit <= MAX_REQUESTS:
            problems.append(Problem("limit", f"must be between 1 and {MAX_REQUESTS}"))
        if not 0 < self.max_seconds <= MAX_SECONDS:
            problems.append(Problem("maxSeconds", f"must be over 0 and at most {MAX_SECONDS:g}"))
        if self.since and self.until and self.since >= self.until:
            problems.append(Problem("until", "must be after since"))
        if problems:
            raise InvalidInput("invalid shadow run window", problems)
        return self


@dataclass
class ShadowSide:
    """What one version did (``receipt``) or would do (``shadow``, ``rerun``) with a request.
    ``actions`` is None when the call failed (``error`` says why) or nothing is known."""

    version: str | None
    source: str
    status: int | None = None
    error: str | None = None
    actions: list[dict[str, Any]] | None = None
    duration_ms: float | None = None
    unmatched_fetches: list[str] = field(default_factory=list)
    storage_writes: list[str] = field(default_factory=list)
    fetches: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ShadowResult:
    """One stored request: ``verdict`` is ``same``, ``differs`` or ``no_baseline`` (the
    request has no receipt yet, or it was purged)."""

    request: int
    received_at: datetime
    verdict: str
    current: ShadowSide
    candidate: ShadowSide
    only_current: list[dict[str, Any]] = field(default_factory=list)
    only_candidate: list[dict[str, Any]] = field(default_factory=list)
    reordered: bool = False


@dataclass
class ShadowReport:
    """A whole run. ``matched``: stored requests in the window (``requests`` holds at most
    ``limit`` of them); ``stopped``: ``complete`` or ``time`` (the time was up first)."""

    tenant: str
    module: str
    version: str
    current_version: str
    matched: int
    stopped: str
    elapsed_ms: float
    requests: list[ShadowResult]

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.requests if r.verdict == verdict)

    @property
    def same(self) -> int:
        return self.count("same")

    @property
    def differs(self) -> int:
        return self.count("differs")

    @property
    def no_baseline(self) -> int:
        return self.count("no_baseline")


@dataclass(frozen=True)
class _Stored:
    id: int
    received_at: datetime
    sealed: str
    receipt: WebhookReceipt | None


class _Lane:
    """One version's side of a run: its enablement and its private storage copy."""

    def __init__(self, runtime: RuntimeEnablement, snapshot: Mapping[str, Any]):
        self.runtime = runtime
        self.storage = dict(snapshot)


class ShadowRunner:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        tenants: TenantService,
        module_storage: ModuleStorageStore,
        shares: ModuleShares,
        *,
        sandbox: Callable[[], SandboxPool],
        script_callbacks: Callable[[ModuleCall], dict[str, HostCallback]],
        egress_allow: list[str],
    ):
        self.db = db
        self.box = box
        self.tenants = tenants
        self.module_storage = module_storage
        self.shares = shares
        self.sandbox = sandbox
        self.script_callbacks = script_callbacks
        self.egress_allow = egress_allow

    def run(
        self,
        tenant_id: str,
        module_id: str,
        version: str,
        window: ShadowWindow | None = None,
        *,
        recording: Recording | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ShadowReport:
        """Run ``version`` over the window's stored requests (see the module docstring).
        NotFound for an unknown tenant, module or version; Conflict when the module is
        disabled for the tenant (its settings are the enabled ones)."""
        window = (window or ShadowWindow()).checked()
        started = time.monotonic()
        current = self.tenants.runtime(tenant_id, module_id)
        candidate = self.tenants.runtime(tenant_id, module_id, version)
        matched, stored = self._requests(tenant_id, module_id, window)
        snapshot = self.module_storage.load(tenant_id, module_id)
        lane = _Lane(candidate, snapshot)
        reruns: dict[str, _Lane] = {}
        results: list[ShadowResult] = []
        stopped = "complete"
        for done, request in enumerate(stored):
            if time.monotonic() - started >= window.max_seconds:
                stopped = "time"
                break
            payload = fetch_request(incoming_of(self.box, request.sealed))
            shadow = self._shadow(lane, payload, recording)
            baseline = self._baseline(request, payload, recording, reruns, snapshot)
            results.append(_compare(request, baseline, shadow))
            if on_progress is not None:
                on_progress(done + 1, len(stored))
        return ShadowReport(
            tenant=tenant_id,
            module=module_id,
            version=candidate.version,
            current_version=current.version,
            matched=matched,
            stopped=stopped,
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
            requests=results,
        )

    # --- which requests ---------------------------------------------------------------

    def _requests(
        self, tenant_id: str, module_id: str, window: ShadowWindow
    ) -> tuple[int, list[_Stored]]:
        """How many stored requests the window holds, and its newest ``limit``, oldest
        first, each with its first (non-replay) receipt. Pending requests (acknowledged,
        not yet run) are left out: they have no current answer to compare with."""
        conditions = [
            WebhookRequest.tenant_id == tenant_id,
            WebhookRequest.module_id == module_id,
            WebhookRequest.pending.is_(False),
        ]
        if window.since is not None:
            conditions.append(WebhookRequest.received_at >= window.since)
        if window.until is not None:
            conditions.append(WebhookRequest.received_at < window.until)
        with self.db.transaction() as session:
            matched = session.scalar(select(func.count()).where(*conditions)) or 0
            rows = session.scalars(
                select(WebhookRequest)
                .where(*conditions)
                .order_by(WebhookRequest.id.desc())
                .limit(window.limit)
            ).all()
            ids = [row.id for row in rows]
            receipts: dict[int, WebhookReceipt] = {}
            for receipt in session.scalars(
                select(WebhookReceipt)
                .where(
                    WebhookReceipt.tenant_id == tenant_id,
                    WebhookReceipt.request_id.in_(ids),
                    WebhookReceipt.replay_of.is_(None),
                )
                .order_by(WebhookReceipt.id.desc())
            ):
                assert receipt.request_id is not None
                receipts[receipt.request_id] = receipt  # the first one wins (descending)
            session.expunge_all()
        stored = [
            _Stored(row.id, row.received_at, row.sealed, receipts.get(row.id)) for row in rows
        ]
        stored.reverse()
        return matched, stored

    # --- the current side -------------------------------------------------------------

    def _baseline(
        self,
        request: _Stored,
        payload: dict[str, Any],
        recording: Recording | None,
        reruns: dict[str, _Lane],
        snapshot: Mapping[str, Any],
    ) -> ShadowSide:
        receipt = request.receipt
        if receipt is None:
            return ShadowSide(version=None, source="none")
        if receipt.error is not None or receipt.actions is not None:
            return ShadowSide(
                version=receipt.module_version,
                source="receipt",
                status=receipt.status_code,
                error=receipt.error,
                actions=receipt.actions if receipt.error is None else None,
            )
        version = receipt.module_version
        try:
            lane = reruns.get(version or "")
            if lane is None:
                runtime = self.tenants.runtime(receipt.tenant_id, receipt.module_id, version)
                lane = reruns[version or ""] = _Lane(runtime, snapshot)
        except NotFound:  # that version was removed since
            return ShadowSide(
                version=version, source="none", error=f"version {version} is no longer stored"
            )
        side = self._shadow(lane, payload, recording)
        side.source = "rerun"
        return side

    # --- one shadow call --------------------------------------------------------------

    def _shadow(
        self, lane: _Lane, payload: dict[str, Any], recording: Recording | None
    ) -> ShadowSide:
        runtime = lane.runtime
        secrets = runtime.secret_values
        call = ModuleCall(
            tenant_id=runtime.tenant_id,
            module_id=runtime.module_id,
            version=runtime.version,
            function=FUNCTION,
            program=runtime.program,
            settings=runtime.settings,
            secret_values=secrets,
            purpose=PURPOSE,
        )
        replayer = Replayer(recording or Recording(), secrets, source="the shadow run")
        refused: list[str] = []
        side = ShadowSide(version=runtime.version, source="shadow")
        started = time.monotonic()
        try:
            with self.shares.admin_work(), self.shares.slot(call.tenant_id, call.module_id):
                result = run_module_function(
                    self.sandbox(),
                    call,
                    [payload],
                    egress_allow=self.egress_allow,
                    callbacks=self._callbacks(call, refused),
                    storage=lane.storage,
                    network=replayer.network(),
                )
            validated = validate_return(call, result)
        except ModuleCallFailed as exc:
            side.status = 501 if exc.kind == "not_implemented" else 500
            text = mask_secrets(f"{exc.kind}: {exc.message}", secrets) or exc.kind
            side.error = text[:MAX_ERROR_CHARS]
            if isinstance(exc.trace, ModuleResult):
                side.fetches = list(exc.trace.fetches)
        except ServiceBusy as exc:
            side.status = 503
            side.error = f"busy: {exc.message}"
        except TimeoutError:  # no idle worker before the pool's acquire deadline
            side.status = 503
            side.error = "busy: no sandbox worker was free"
        else:
            value: WebhookResult = validated.value
            side.status = reply_from(value.response).status
            side.actions = action_records(value.actions, secrets)
            side.fetches = list(validated.fetches)
            changes = validated.storage_changes
            if changes is not None:
                side.storage_writes = sorted({*changes.changed, *changes.removed})
                lane.storage = {
                    **{k: v for k, v in lane.storage.items() if k not in changes.removed},
                    **changes.changed,
                }
        side.duration_ms = round((time.monotonic() - started) * 1000, 1)
        side.unmatched_fetches = list(replayer.misses)
        side.storage_writes = sorted({*side.storage_writes, *refused})
        return side

    def _callbacks(self, call: ModuleCall, refused: list[str]) -> dict[str, HostCallback]:
        """The host's callbacks for this call with every writing one refused; a durable
        storage write stays in the run's private copy (the worker keeps it there)."""
        lent: dict[str, HostCallback] = {}
        for name, callback in self.script_callbacks(call).items():
            lent[name] = callback if name in READ_ONLY_CALLBACKS else _refusal(name, refused)
        lent[DURABLE_STORAGE_CALLBACK] = _durable_kept_private
        return lent


def _durable_kept_private(args: list[Any]) -> None:
    """``storage.set(..., durable=True)`` in a shadow run: nothing to commit, the value is
    already in the worker's copy, which the run keeps privately."""
    if len(args) != 2:
        raise ScriptError("storage.durable takes a key and a value")


def _refusal(name: str, refused: list[str]) -> HostCallback:
    def refuse(args: list[Any]) -> Any:
        refused.append(name)
        raise ScriptError(f"{name} writes to the host; a shadow run makes no writes")

    return refuse


def _compare(request: _Stored, current: ShadowSide, candidate: ShadowSide) -> ShadowResult:
    result = ShadowResult(request.id, request.received_at, "differs", current, candidate)
    if current.source == "none":
        result.verdict = "no_baseline"
        return result
    if current.actions is None or candidate.actions is None:
        both_failed = current.actions is None and candidate.actions is None
        same_failure = _kind(current.error) == _kind(candidate.error)
        if both_failed and same_failure and current.status == candidate.status:
            result.verdict = "same"
        result.only_candidate = list(candidate.actions or [])
        return result
    diff = diff_actions(current.actions, candidate.actions)
    result.only_current, result.only_candidate = diff.only_current, diff.only_candidate
    result.reordered = diff.reordered
    if diff.same and current.status == candidate.status:
        result.verdict = "same"
    return result


def _kind(error: str | None) -> str | None:
    """``script_error: ...`` → ``script_error``; a receipt's ``apply_failed`` stays itself."""
    return error.partition(":")[0] if error else None
