"""Campaigns needing attention (admin): the campaigns whose creation in the service was
interrupted by a module that does not declare CreateCampaign idempotent, and their
resolution — the campaign's id in the service (it exists) or *not created* (create it again).

No logic of its own: the list is :meth:`CampaignAttentionService.flagged` and the answer goes
through :meth:`~host.marketing.campaign_attention.CampaignAttentionService.resolve`, as
``POST /api/v1/tenants/{t}/campaigns/{id}/resolve`` and ``crm-host campaign resolve`` do; the
service checks the answer and refuses a campaign that needs no attention (any more: another
admin answered first). Marketers see the flag, read-only, on their campaign's page.
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from host.api.bodies import checked_router
from host.console.csrf import CheckedForm
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import AdminViewer
from host.console.templating import redirect, render
from host.console_sessions import SignedIn
from host.errors import Conflict, InvalidInput, Problem
from host.marketing.campaign_attention import MAX_EXTERNAL_ID, AttentionResolution
from host.platform import Host

router = checked_router(prefix="/console/attention", include_in_schema=False)

FIELDS = ("externalId", "resolution")
EXISTS, NOT_CREATED = "exists", "not-created"


@router.get("")
def flagged(request: Request, viewer: AdminViewer) -> Response:
    host: Host = request.app.state.host
    return render(
        request, "attention.html", {"flagged": host.campaign_attention.flagged()}, viewer=viewer
    )


def _page(
    request: Request, viewer: SignedIn, tenant_id: str, campaign_id: str, *,
    errors: FormErrors | None = None, external_id: str = "", status: int = 200,
) -> Response:  # fmt: skip
    """One campaign and the two answers; an unknown tenant or campaign is a 404 page."""
    host: Host = request.app.state.host
    return render(
        request,
        "attention_campaign.html",
        {
            "tenant": host.tenants.get(tenant_id),
            "campaign": host.campaigns.get(tenant_id, campaign_id, with_stats=False),
            "errors": errors or FormErrors(),
            "external_id": external_id,
            "max_external_id": MAX_EXTERNAL_ID,
        },
        viewer=viewer,
        status_code=status,
    )


@router.get("/{tenant_id}/{campaign_id}")
def flagged_campaign(
    request: Request, tenant_id: str, campaign_id: str, viewer: AdminViewer
) -> Response:
    return _page(request, viewer, tenant_id, campaign_id)


def resolution_of(form: dict[str, str]) -> AttentionResolution:
    """The API's body from the form: which button was pressed, and the id typed for *it
    exists* (the service checks it: empty, too long, another campaign's)."""
    chosen = form.get("resolution", "")
    if chosen == NOT_CREATED:
        return AttentionResolution(notCreated=True)
    if chosen == EXISTS:
        return AttentionResolution(externalId=form.get("externalId", ""))
    raise InvalidInput(
        "choose how to resolve the campaign",
        [Problem("resolution", f"must be {EXISTS!r} or {NOT_CREATED!r}")],
    )


@router.post("/{tenant_id}/{campaign_id}/resolve")
async def resolve(
    request: Request, tenant_id: str, campaign_id: str, viewer: AdminViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    values = {name: str(form.get(name) or "") for name in FIELDS}
    host.campaigns.get(tenant_id, campaign_id, with_stats=False)  # 404 page before the form
    try:
        resolution = resolution_of(values)
        await run_in_threadpool(host.campaign_attention.resolve, tenant_id, campaign_id, resolution)
    except (InvalidInput, Conflict) as exc:
        code = 422 if isinstance(exc, InvalidInput) else 409
        return _page(
            request, viewer, tenant_id, campaign_id, errors=FormErrors.of(exc, FIELDS),
            external_id=values["externalId"][:MAX_EXTERNAL_ID * 2], status=code,
        )  # fmt: skip
    if resolution.notCreated:
        what = "marked not created in the service: the host creates it again"
    else:
        what = f"recorded as {(resolution.externalId or '').strip()} in the service"
    request.state.audit_action = f"resolved campaign {campaign_id} of {tenant_id}: {what}"
    flash(request, viewer, f"Campaign {campaign_id} of {tenant_id} {what}.")
    return redirect("/console/attention")
