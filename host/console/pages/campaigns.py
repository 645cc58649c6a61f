"""A tenant's campaigns (its marketers and admins): *New campaign* (email or SMS through an
enabled email module — the *Email service* field — or messenger through a *Campaign module*
with the account type and bot the module lists), the list, and one campaign with its live
progress, cancel, stats with a chart and its deliveries.

Everything is the API's services: ``host.campaigns`` (create, list, get, deliveries,
cancel, as ``host/api/routes/campaigns.py``), ``host.campaign_stats`` and the module's
GetMessengerTypes / GetMessengerBots through ``host.invoker`` (as ``messenger.py``). The
campaign page polls ``…/progress`` (the API's campaign answer, without stats) from
``console.js`` while the send runs; without JavaScript it shows the state at load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from host.api.bodies import checked_router
from host.api.schemas import CampaignOut
from host.console.csrf import CheckedForm
from host.console.flash import flash
from host.console.forms import FormErrors
from host.console.guard import TenantViewer
from host.console.pages.templates import email_modules
from host.console.templating import SECURITY_HEADERS, redirect, render
from host.console_sessions import SignedIn
from host.contract.enums import CampaignStatus, DeliveryStatus
from host.errors import Conflict, HostError, InvalidInput, Problem
from host.marketing.campaigns import CampaignDraft
from host.marketing.lifecycle import FINAL_STAGES, CampaignStage
from host.marketing.stats import StatsView
from host.platform import Host

router = checked_router(prefix="/console/tenants/{tenant_id}/campaigns", include_in_schema=False)

LIST_PAGE = 50
DELIVERY_PAGE = 50
STATUS_VALUES = [s.value for s in DeliveryStatus]
STATUSES = [("", "Any status")] + [(s, s) for s in STATUS_VALUES]
EMAIL_FIELDS = [
    "type", "name", "module", "subject", "senderName", "senderEmail", "templateId", "html",
    "audience", "contactIds", "scheduledAt", "batchSize",
]  # fmt: skip
MESSENGER_FIELDS = ["name", "module", "campaignType", "botId", "text", "audience", "contactIds"]
FINAL_STATUSES = (CampaignStatus.Sent, CampaignStatus.Failed, CampaignStatus.Cancelled)
CHART_WIDTH = 100.0
"""The stats chart's bars are drawn in a 0-100 wide viewBox (the SVG scales to its box)."""


@dataclass
class Messenger:
    """What the messenger form offers for the chosen *Campaign module*: its account types
    and bots, asked from the module (GetMessengerTypes / GetMessengerBots)."""

    module: str = ""
    types: list[str] = field(default_factory=list)
    bots: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    width: float
    y: int


def messenger_modules(host: Host, tenant_id: str) -> list[str]:
    """The tenant's enabled messenger modules (the *Campaign module* choices)."""
    return [
        e.module_id
        for e in host.tenants.enablements(tenant_id)
        if e.enabled and host.registry.get(e.module_id).kind == "messenger"
    ]


def _messenger(host: Host, tenant_id: str, module: str) -> Messenger:
    if not module:
        return Messenger()
    if module not in messenger_modules(host, tenant_id):
        return Messenger(module, error=f"{module} is not an enabled messenger module")
    try:
        types = host.invoker.call(tenant_id, module, "CRM_Marketing_GetMessengerTypes")
        bots = host.invoker.call(tenant_id, module, "CRM_Marketing_GetMessengerBots")
    except HostError as exc:
        return Messenger(module, error=f"the module could not list its bots: {exc.message}")
    return Messenger(
        module,
        [str(getattr(t, "value", t)) for t in types],
        [bot.model_dump(mode="json") for bot in bots],
    )


def chart(values: dict[str, int] | None) -> list[Bar]:
    """The stats as horizontal bars scaled to the largest value (drawn server-side as
    inline SVG: the console's CSP allows no script-drawn or inline-styled chart)."""
    if not values:
        return []
    top = max(max(values.values()), 1)
    return [
        Bar(name, value, round(CHART_WIDTH * value / top, 2), index * 10)
        for index, (name, value) in enumerate(values.items())
    ]


def _list_page(
    request: Request, viewer: SignedIn, tenant_id: str, *, offset: int = 0,
    form: FormData | None = None, errors: FormErrors | None = None, code: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    campaigns = host.campaigns.list(tenant_id, limit=LIST_PAGE + 1, offset=offset)
    modules = email_modules(host, tenant_id)
    templates = [
        t for t in host.templates.of_tenant(tenant_id) if t.external_id and t.module in modules
    ]
    return render(
        request,
        "campaigns.html",
        {
            "tenant": tenant,
            "campaigns": campaigns[:LIST_PAGE],
            "offset": offset,
            "more": len(campaigns) > LIST_PAGE,
            "page_size": LIST_PAGE,
            "email_modules": modules,
            "messenger_modules": messenger_modules(host, tenant_id),
            "module_options": [(m, m) for m in modules],
            "template_options": [("", "None: the HTML below")]
            + [(t.id, f"{t.name} ({t.module})") for t in templates],
            "form": form or {},
            "errors": errors or FormErrors(),
        },
        viewer=viewer,
        status_code=code,
    )


@router.get("")
def campaigns(
    request: Request,
    tenant_id: str,
    viewer: TenantViewer,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    return _list_page(request, viewer, tenant_id, offset=offset)


def _messenger_page(
    request: Request, viewer: SignedIn, tenant_id: str, module: str, *,
    form: FormData | None = None, errors: FormErrors | None = None, code: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    messenger = _messenger(host, tenant_id, module)
    if messenger.error and not errors:
        errors = FormErrors.of(InvalidInput(messenger.error, [Problem("module", messenger.error)]),
                               ["module"])  # fmt: skip
    return render(
        request,
        "campaign_messenger.html",
        {
            "tenant": tenant,
            "modules": messenger_modules(host, tenant_id),
            "messenger": messenger,
            "type_options": [(t, t) for t in messenger.types],
            "bot_options": [(str(b["id"]), f"{b['name']} ({b['type']})") for b in messenger.bots],
            "form": form or {},
            "errors": errors or FormErrors(),
        },
        viewer=viewer,
        status_code=code,
    )


@router.get("/new-messenger")
def new_messenger_campaign(
    request: Request,
    tenant_id: str,
    viewer: TenantViewer,
    module: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """Step one picks the *Campaign module*; step two offers its account types and bots."""
    return _messenger_page(request, viewer, tenant_id, module.strip())


def _text(form: FormData, name: str) -> str | None:
    value = str(form.get(name) or "").strip()
    return value or None


def draft_of(form: FormData, kind: str) -> CampaignDraft:
    """The API's campaign body from the form; what it means is checked by the service
    (every problem at once), only the form's own fields here."""
    problems: list[Problem] = []
    audience = str(form.get("audience") or "all")
    ids = [i.strip() for i in str(form.get("contactIds") or "").replace(",", "\n").splitlines()]
    contacts: list[str] | str = "all" if audience == "all" else [i for i in ids if i]
    batch = _text(form, "batchSize")
    if batch is not None and not batch.isdigit():
        problems.append(Problem("batchSize", f"{batch!r} is not a whole number"))
    if problems:
        raise InvalidInput("campaign is invalid", problems)
    common: dict[str, Any] = {
        "module": str(form.get("module") or ""),
        "name": str(form.get("name") or ""),
        "contactIds": contacts,
        "scheduledAt": _text(form, "scheduledAt"),
    }
    if kind == "messenger":
        return CampaignDraft(
            **common, type="Messenger", campaignType=_text(form, "campaignType"),
            botId=_text(form, "botId"), text=_text(form, "text"),
        )  # fmt: skip
    return CampaignDraft(
        **common,
        type=str(form.get("type") or "Email"),
        subject=_text(form, "subject"),
        senderName=_text(form, "senderName"),
        senderEmail=_text(form, "senderEmail"),
        templateId=_text(form, "templateId"),
        html=_text(form, "html"),
        batchSize=int(batch) if batch is not None else None,
    )


@router.post("")
async def create_campaign(
    request: Request, tenant_id: str, viewer: TenantViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    host.tenants.get(tenant_id)
    kind = "messenger" if form.get("kind") == "messenger" else "email"
    try:
        draft = draft_of(form, kind)
        queued = await run_in_threadpool(host.campaigns.create, tenant_id, draft)
    except InvalidInput as exc:
        if kind == "messenger":
            return _messenger_page(
                request, viewer, tenant_id, str(form.get("module") or ""), form=form,
                errors=FormErrors.of(exc, MESSENGER_FIELDS), code=422,
            )  # fmt: skip
        errors = FormErrors.of(exc, EMAIL_FIELDS)
        return _list_page(request, viewer, tenant_id, form=form, errors=errors, code=422)
    request.state.audit_action = f"created campaign {queued.id} of {tenant_id}"
    flash(request, viewer, f"Campaign {draft.name.strip()} created: its send runs now.")
    return redirect(f"/console/tenants/{tenant_id}/campaigns/{queued.id}")


def _stats(host: Host, tenant_id: str, campaign_id: str, refresh: bool) -> StatsView | None:
    """The stats block: fetched again on *Refresh* (the API's ``?refresh=true``)."""
    if not refresh:
        return host.campaigns.get(tenant_id, campaign_id).stats
    try:
        return host.campaign_stats.get(tenant_id, campaign_id, refresh=True)
    except Conflict:
        return None
    except HostError as exc:
        return StatsView(None, None, True, f"{exc.kind}: {exc.message}")


@router.get("/{campaign_id}")
def campaign(
    request: Request,
    tenant_id: str,
    campaign_id: str,
    viewer: TenantViewer,
    status: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[str | None, Query(max_length=255)] = None,
    refresh: bool = False,
) -> Response:
    if status and status not in STATUS_VALUES:
        raise InvalidInput(
            "unknown status", [Problem("status", "one of " + ", ".join(STATUS_VALUES))]
        )
    return _detail(request, viewer, tenant_id, campaign_id, status=status, after=after,
                   refresh=refresh)  # fmt: skip


def _detail(
    request: Request, viewer: SignedIn, tenant_id: str, campaign_id: str, *, status: str = "",
    after: str | None = None, refresh: bool = False, errors: FormErrors | None = None,
    code: int = 200,
) -> Response:  # fmt: skip
    host: Host = request.app.state.host
    tenant = host.tenants.get(tenant_id)
    view = host.campaigns.get(tenant_id, campaign_id, with_stats=False)
    stats = _stats(host, tenant_id, campaign_id, refresh)
    deliveries = host.campaigns.deliveries(
        tenant_id, campaign_id, after=after, limit=DELIVERY_PAGE, status=status or None
    )
    return render(
        request,
        "campaign.html",
        {
            "tenant": tenant,
            "campaign": view,
            "stats": stats,
            "bars": chart(stats.values if stats else None),
            "deliveries": deliveries,
            "status": status,
            "after": after,
            "statuses": STATUSES,
            "live": is_live(view.progress.stage, view.status),
            "cancellable": view.progress.stage not in (*FINAL_STAGES, CampaignStage.Creating),
            "errors": errors or FormErrors(),
        },
        viewer=viewer,
        status_code=code,
    )


def is_live(stage: str, status: str) -> bool:
    """Worth polling: the job still runs, or the service has not reported the campaign
    finished yet (SendGrid's first webhook moves it from Sending to Sent)."""
    return stage not in FINAL_STAGES or status not in FINAL_STATUSES


@router.get("/{campaign_id}/progress")
def progress(request: Request, tenant_id: str, campaign_id: str, viewer: TenantViewer) -> Response:
    """The API's campaign answer (camelCase, no stats: polling must not call the module),
    plus ``live``; what the campaign page's script polls."""
    host: Host = request.app.state.host
    view = host.campaigns.get(tenant_id, campaign_id, with_stats=False)
    body = CampaignOut.model_validate(view).model_dump(mode="json", by_alias=True)
    body["live"] = is_live(view.progress.stage, view.status)
    return JSONResponse(body, headers=SECURITY_HEADERS)


@router.post("/{campaign_id}/cancel")
async def cancel(
    request: Request, tenant_id: str, campaign_id: str, viewer: TenantViewer, form: CheckedForm
) -> Response:
    host: Host = request.app.state.host
    try:
        view = await run_in_threadpool(host.campaigns.cancel, tenant_id, campaign_id)
    except Conflict as exc:
        return _detail(request, viewer, tenant_id, campaign_id, errors=FormErrors.of(exc),
                       code=409)  # fmt: skip
    request.state.audit_action = f"cancelled campaign {campaign_id} of {tenant_id}"
    flash(request, viewer, f"Campaign {view.name}: cancel requested ({view.status}).")
    return redirect(f"/console/tenants/{tenant_id}/campaigns/{campaign_id}")
