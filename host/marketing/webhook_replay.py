"""Replaying a stored webhook request: for real, or as a dry run.

After a module was fixed (or to see what a new version would do), an admin runs a receipt's
stored request again (``POST .../webhooks/receipts/{id}/replay``, ``crm-host webhooks
replay``). For real it takes exactly the live path (:meth:`WebhookReceiver.process`): the
same FetchRequest, so signatures still verify; actions applied in one transaction with the
receipt; event ids deduped; the new receipt names the one it replays and the version it
ran. A dry run calls the module and applies its actions inside a transaction that is then
rolled back, so it reports precisely which actions would be applied or skipped (and why)
and keeps nothing — except the script's ``durable=True`` storage writes, which commit at
once by design. Useful for "shadow runs" of a new version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from host.calls import ModuleResult, mask_secrets
from host.contract.types import WebhookResult
from host.db.models import WebhookReceipt, WebhookRequest
from host.errors import ModuleCallFailed, NotFound
from host.marketing.actions import ApplyOutcome
from host.marketing.webhooks import (
    FUNCTION,
    IncomingRequest,
    Processed,
    Provenance,
    WebhookReceiver,
    WebhookReply,
    failure_reply,
    fetch_request,
    incoming_of,
    masked_response,
    reply_from,
)
from host.tenants import RuntimeEnablement


class DryRunDone(Exception):
    """Raised inside the effects of a dry run, so the invoker rolls everything back."""

    def __init__(self, outcome: ApplyOutcome, reply: WebhookReply):
        super().__init__("dry run")
        self.outcome = outcome
        self.reply = reply


class WebhookReplay:
    """Replays the stored requests of a :class:`WebhookReceiver`."""

    def __init__(self, receiver: WebhookReceiver):
        self.receiver = receiver

    def replay(
        self,
        tenant_id: str,
        receipt_id: int,
        *,
        version: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Run the request of receipt ``receipt_id`` again, on the module's pinned version or
        ``version``. For real it takes the live path (actions applied, event ids deduped, a
        new receipt with ``replayOf``); ``dry_run`` reports the actions that would be
        applied and skipped and keeps nothing. NotFound when the receipt is not the
        tenant's or its request is no longer stored; Conflict when the module is disabled."""
        with self.receiver.db.transaction() as session:
            receipt = session.get(WebhookReceipt, receipt_id)
            if receipt is None or receipt.tenant_id != tenant_id:
                raise NotFound(f"no webhook receipt {receipt_id} for tenant {tenant_id}")
            module_id, request_id = receipt.module_id, receipt.request_id
            stored = session.get(WebhookRequest, request_id) if request_id is not None else None
            if stored is None or request_id is None:
                raise NotFound(
                    f"the request of webhook receipt {receipt_id} is not stored "
                    "(never stored, or removed by retention)"
                )
            sealed = stored.sealed
        incoming = incoming_of(self.receiver.box, sealed)
        target = self.receiver.tenants.runtime(tenant_id, module_id, version)
        if dry_run:
            return self._dry_run(target, incoming, receipt_id)
        processed = self.receiver.process(target, incoming, Provenance(request_id, receipt_id))
        return self._report(target, receipt_id, processed, dry_run=False)

    def _dry_run(
        self, target: RuntimeEnablement, incoming: IncomingRequest, receipt_id: int
    ) -> dict[str, Any]:
        def apply_then_undo(session: Session, called: ModuleResult) -> None:
            result: WebhookResult = called.value
            reply = reply_from(masked_response(result.response, target.secret_values))
            outcome = self.receiver.actions.apply_in(
                session, target.tenant_id, target.module_id, result.actions
            )
            raise DryRunDone(outcome, reply)

        try:
            self.receiver.invoker.call_resolved(
                target, FUNCTION, effects=apply_then_undo, request=fetch_request(incoming)
            )
        except DryRunDone as done:
            return self._report(
                target, receipt_id, Processed(done.reply, None, done.outcome), dry_run=True
            )
        except ModuleCallFailed as exc:
            status = 501 if exc.kind == "not_implemented" else 500
            report = self._report(
                target, receipt_id, Processed(failure_reply(status, exc.kind), None, None), True
            )
            report["error"] = mask_secrets(f"{exc.kind}: {exc.message}", target.secret_values)
            return report
        raise AssertionError("a dry run always ends in DryRunDone")  # pragma: no cover

    @staticmethod
    def _report(
        target: RuntimeEnablement, receipt_id: int, processed: Processed, dry_run: bool
    ) -> dict[str, Any]:
        outcome = processed.outcome
        return {
            "replayOf": receipt_id,
            "version": target.version,
            "dryRun": dry_run,
            "receipt": processed.receipt_id,
            "status": processed.reply.status,
            "applied": outcome.applied if outcome else [],
            "skipped": outcome.skipped if outcome else [],
        }
