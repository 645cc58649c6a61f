"""Campaigns: create one (validated completely, then queued for the background job), read
its progress and deliveries, cancel it.

Creating only records the campaign — the export/prepare/create flow runs in the job
(``campaign_job.py``) so the HTTP request answers at once, whatever the audience size.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select, update

from host.config import MAX_CAMPAIGN_BATCH_SIZE
from host.contract.enums import AccountType, CampaignStatus, CampaignType, ModuleKind
from host.contract.types import CreateCampaignRequest, CreateMessengerCampaignRequest
from host.db.engine import Database
from host.db.models import Campaign, Delivery, Enablement, Module, Template
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.idempotency import IdempotentRequest
from host.jobs.queue import CampaignQueue, InProcessQueue
from host.marketing.audience import MAX_EXPLICIT_IDS, tenant_has_contacts, unknown_contact_ids
from host.marketing.campaign_attention import CampaignAttention
from host.marketing.campaign_job import CampaignProgress, progress_of, utcnow
from host.marketing.lifecycle import FINAL_STAGES, CampaignStage
from host.marketing.stats import StatsService, StatsView
from host.plugin_manager import notify
from host.tenants import TenantService

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


class CampaignDraft(BaseModel):
    """The body of ``POST /campaigns``. Deliberately loose types: the service checks
    everything itself so that one answer lists every problem."""

    model_config = ConfigDict(extra="forbid")

    module: str = ""
    name: str = ""
    type: str = ""
    subject: str | None = None
    senderName: str | None = None
    senderEmail: str | None = None
    contactIds: list[str] | str | None = Field(None, description='Contact ids, or "all"')
    templateId: str | None = None
    html: str | None = None
    scheduledAt: str | None = Field(None, description="ISO 8601 with a UTC offset")
    categoryExternalId: str | None = None
    batchSize: int | None = None
    campaignType: str | None = Field(None, description="Messenger: AccountType")
    botId: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class QueuedCampaign:
    """A campaign just stored: its send runs in the background."""

    id: str
    status: str
    stage: str


@dataclass(frozen=True)
class CampaignView:
    """A campaign with its progress and, on the single-campaign call once it exists in the
    service, its stats."""

    id: str
    module: str
    module_version: str
    type: str
    name: str
    status: str
    external_id: str | None
    error: str | None
    cancel_requested: bool
    progress: CampaignProgress
    created_at: datetime
    finished_at: datetime | None
    attention: CampaignAttention | None = None
    """Set while the campaign needs an admin (``host.marketing.campaign_attention``)."""
    stats: StatsView | None = None


@dataclass(frozen=True)
class DeliveryView:
    contact_id: str
    email: str | None
    phone: str | None
    status: str
    history: list[dict[str, Any]]
    updated_at: datetime


@dataclass(frozen=True)
class DeliveryPage:
    items: list[DeliveryView]
    next: str | None
    """``after`` of the following page; None on the last one."""


def _when(value: str | None, problems: list[Problem]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.append(Problem("scheduledAt", "must be an ISO 8601 date-time"))
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class CampaignService:
    """Campaigns of a tenant: create (queued for the job runner), read, list, cancel.
    ``jobs`` queues each campaign's job in the transaction that stores it and wakes the
    runners once it committed."""

    def __init__(
        self,
        db: Database,
        tenants: TenantService,
        stats: StatsService,
        hooks: pluggy.PluginManager,
        *,
        default_batch_size: int,
        lease_seconds: float,
        jobs: CampaignQueue | None = None,
    ):
        self.db = db
        self.tenants = tenants
        self.stats = stats
        self.hooks = hooks
        self.default_batch_size = default_batch_size
        self.lease_seconds = lease_seconds
        self.jobs = jobs or InProcessQueue()

    # --- create -------------------------------------------------------------------------

    def create(
        self,
        tenant_id: str,
        draft: CampaignDraft,
        *,
        claim_for: str | None = None,
        idempotency: IdempotentRequest | None = None,
    ) -> QueuedCampaign:
        """Validate ``draft`` (every problem at once), store the campaign queued with its job
        and wake the job runner. ``claim_for`` stores it already leased to that owner (the CLI
        runs the job itself, and a server on the same database must not take it meanwhile;
        its job waits for the lease, and resumes the campaign if the CLI is interrupted).
        ``idempotency`` stores the answer under its key in the campaign's own transaction."""
        self.tenants.get(tenant_id)
        problems: list[Problem] = []
        campaign_id = uuid.uuid4().hex
        now = utcnow()
        answer = QueuedCampaign(campaign_id, CampaignStatus.Draft.value, CampaignStage.Queued)
        with self.db.transaction() as session:
            if idempotency is not None:
                idempotency.claim(session)
            version = self._check_module(session, tenant_id, draft, problems)
            request = self._request(session, tenant_id, campaign_id, draft, problems)
            audience = self._audience(session, tenant_id, draft, now, problems)
            batch = self.default_batch_size if draft.batchSize is None else draft.batchSize
            if not 1 <= batch <= MAX_CAMPAIGN_BATCH_SIZE:
                problems.append(Problem("batchSize", f"must be 1-{MAX_CAMPAIGN_BATCH_SIZE}"))
            if problems:
                raise InvalidInput("campaign is invalid", problems)
            row = Campaign(
                id=campaign_id,
                tenant_id=tenant_id,
                module_id=draft.module,
                module_version=version,
                type=draft.type,
                name=draft.name.strip(),
                request=request,
                audience=audience,
                status=CampaignStatus.Draft.value,
                stage=CampaignStage.Queued,
                batch_size=batch,
                created_at=now,
            )
            if claim_for is not None:
                row.lease_owner = claim_for
                row.lease_until = now + timedelta(seconds=self.lease_seconds)
            session.add(row)
            session.flush()  # the row before its job (the job names it)
            self.jobs.defer(session, campaign_id, tenant_id, resumed=False)
            if idempotency is not None:
                idempotency.complete(session, 202, asdict(answer))
        if claim_for is None:
            self.jobs.wake()
        return answer

    def _check_module(
        self, session: Any, tenant_id: str, draft: CampaignDraft, problems: list[Problem]
    ) -> str:
        if draft.type not in CampaignType.__members__:
            problems.append(Problem("type", "must be Email, Sms or Messenger"))
        enablement = session.get(Enablement, (tenant_id, draft.module))
        module = session.get(Module, draft.module)
        if not draft.module or module is None:
            problems.append(Problem("module", f"unknown module {draft.module!r}"))
            return ""
        if enablement is None:
            problems.append(Problem("module", f"module {draft.module} is not enabled"))
            return ""
        if not enablement.enabled:
            problems.append(Problem("module", f"module {draft.module} is disabled"))
        wanted = ModuleKind.messenger if draft.type == CampaignType.Messenger else ModuleKind.email
        if draft.type in CampaignType.__members__ and module.kind != wanted:
            problems.append(
                Problem(
                    "type",
                    f"{draft.type} campaigns need a {wanted.value} module; "
                    f"{draft.module} is a {module.kind} module",
                )
            )
        return str(enablement.version)

    def _request(
        self,
        session: Any,
        tenant_id: str,
        campaign_id: str,
        draft: CampaignDraft,
        problems: list[Problem],
    ) -> dict[str, Any]:
        """The CreateCampaignRequest / CreateMessengerCampaignRequest the job will send."""
        if not draft.name.strip() or len(draft.name) > 500:
            problems.append(Problem("name", "must be 1-500 characters"))
        scheduled = _when(draft.scheduledAt, problems)
        common = {"campaignId": campaign_id, "name": draft.name.strip()}
        if draft.type == CampaignType.Messenger:
            if draft.campaignType not in AccountType.__members__:
                choices = ", ".join(AccountType.__members__)
                problems.append(Problem("campaignType", f"must be one of {choices}"))
            for field in ("botId", "text"):
                if not (getattr(draft, field) or "").strip():
                    problems.append(Problem(field, "is required for Messenger campaigns"))
            if problems:
                return {}
            return CreateMessengerCampaignRequest(
                **common,
                campaignType=AccountType(str(draft.campaignType)),
                botId=draft.botId or "",
                text=draft.text or "",
                scheduledAt=scheduled,
            ).model_dump(mode="json")
        required: tuple[str, ...] = ("subject", "senderName", "senderEmail")
        if draft.type == CampaignType.Sms:
            required = ("senderName",)
        for field in required:
            if not (getattr(draft, field) or "").strip():
                problems.append(Problem(field, f"is required for {draft.type} campaigns"))
        if draft.senderEmail and not EMAIL.fullmatch(draft.senderEmail.strip()):
            problems.append(Problem("senderEmail", "is not an email address"))
        template_external_id = self._template(session, tenant_id, draft, problems)
        if problems:
            return {}
        return CreateCampaignRequest(
            **common,
            type=CampaignType(draft.type),
            subject=(draft.subject or "").strip(),
            senderName=(draft.senderName or "").strip(),
            senderEmail=(draft.senderEmail or "").strip(),
            templateExternalId=template_external_id,
            html=draft.html,
            scheduledAt=scheduled,
            categoryExternalId=draft.categoryExternalId,
        ).model_dump(mode="json")

    def _template(
        self, session: Any, tenant_id: str, draft: CampaignDraft, problems: list[Problem]
    ) -> str | None:
        if not draft.templateId:
            return None
        template = session.get(Template, draft.templateId)
        if template is None or template.tenant_id != tenant_id:
            problems.append(Problem("templateId", f"no template {draft.templateId}"))
            return None
        if template.module_id != draft.module:
            problems.append(
                Problem("templateId", f"template belongs to module {template.module_id}")
            )
        if not template.external_id:
            problems.append(Problem("templateId", "template is not published to the service"))
        return str(template.external_id) if template.external_id else None

    def _audience(
        self,
        session: Any,
        tenant_id: str,
        draft: CampaignDraft,
        now: datetime,
        problems: list[Problem],
    ) -> dict[str, Any]:
        chosen = draft.contactIds
        if chosen == "all":
            if not tenant_has_contacts(session, tenant_id):
                problems.append(Problem("contactIds", "the tenant has no contacts"))
            return {"all": True, "createdBefore": now.isoformat()}
        if not isinstance(chosen, list) or not chosen:
            problems.append(Problem("contactIds", 'give a non-empty list of ids, or "all"'))
            return {}
        ids = sorted(set(chosen))
        if len(ids) > MAX_EXPLICIT_IDS:
            problems.append(
                Problem("contactIds", f'at most {MAX_EXPLICIT_IDS} ids; use "all" for more')
            )
            return {}
        unknown = unknown_contact_ids(session, tenant_id, ids)
        if unknown:
            shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
            problems.append(Problem("contactIds", f"{len(unknown)} unknown contact(s): {shown}"))
        return {"ids": ids}

    # --- read ---------------------------------------------------------------------------

    def _row(self, session: Any, tenant_id: str, campaign_id: str) -> Campaign:
        row = session.get(Campaign, campaign_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound(f"campaign {campaign_id} does not exist")
        return row  # type: ignore[no-any-return]

    def get(self, tenant_id: str, campaign_id: str, *, with_stats: bool = True) -> CampaignView:
        """The campaign with its progress and (when it exists in the service) its stats."""
        with self.db.transaction() as session:
            view = self._view(self._row(session, tenant_id, campaign_id))
        if with_stats:
            view = replace(view, stats=self.stats.view(tenant_id, campaign_id))
        return view

    def _view(self, row: Campaign) -> CampaignView:
        return CampaignView(
            id=row.id,
            module=row.module_id,
            module_version=row.module_version,
            type=row.type,
            name=row.name,
            status=row.status,
            external_id=row.external_id,
            error=row.error,
            cancel_requested=row.cancel_requested,
            progress=progress_of(row),
            created_at=row.created_at,
            finished_at=row.finished_at,
            attention=(
                CampaignAttention(row.attention_reason, row.attention_at or row.updated_at)
                if row.attention_reason
                else None
            ),
        )

    def list(self, tenant_id: str, *, limit: int = 50, offset: int = 0) -> list[CampaignView]:
        """Campaigns newest first (without stats: listing must not call modules)."""
        self.tenants.get(tenant_id)
        columns = [c for c in Campaign.__table__.c if c.name not in ("audience", "request")]
        with self.db.transaction() as session:
            rows = session.execute(
                select(*columns)
                .where(Campaign.tenant_id == tenant_id)
                .order_by(Campaign.created_at.desc(), Campaign.id)
                .limit(limit)
                .offset(offset)
            ).all()
            return [self._view(Campaign(**row._mapping)) for row in rows]

    def deliveries(
        self,
        tenant_id: str,
        campaign_id: str,
        *,
        after: str | None = None,
        limit: int = 100,
        status: str | None = None,
    ) -> DeliveryPage:
        """One page of per-recipient statuses in contact id order; ``next`` is the cursor of
        the following page (keyset, so deep pages cost the same as the first)."""
        with self.db.transaction() as session:
            self._row(session, tenant_id, campaign_id)
            query = select(Delivery).where(Delivery.campaign_id == campaign_id)
            if after:
                query = query.where(Delivery.contact_id > after)
            if status:
                query = query.where(Delivery.status == status)
            rows = session.scalars(query.order_by(Delivery.contact_id).limit(limit + 1)).all()
            page = [
                DeliveryView(
                    contact_id=d.contact_id,
                    email=d.email_key,
                    phone=d.phone,
                    status=d.status,
                    history=d.history,
                    updated_at=d.updated_at,
                )
                for d in rows[:limit]
            ]
        more = len(rows) > limit
        return DeliveryPage(page, page[-1].contact_id if more and page else None)

    # --- cancel -------------------------------------------------------------------------

    def cancel(self, tenant_id: str, campaign_id: str) -> CampaignView:
        """Ask the job to stop before its next batch. A campaign no job holds is cancelled
        here at once; one already being created in the service cannot be cancelled here."""
        now = utcnow()
        open_stages = (*FINAL_STAGES, CampaignStage.Creating)
        with self.db.transaction() as session:
            # Write first: SQLite then holds its write lock before it reads anything.
            flagged = session.execute(
                update(Campaign)
                .where(
                    Campaign.id == campaign_id,
                    Campaign.tenant_id == tenant_id,
                    Campaign.stage.not_in(open_stages),
                )
                .values(cancel_requested=True)
            ).rowcount  # type: ignore[attr-defined]
            idle = 0
            if flagged:
                idle = session.execute(
                    update(Campaign)
                    .where(
                        Campaign.id == campaign_id,
                        or_(Campaign.lease_owner.is_(None), Campaign.lease_until < now),
                    )
                    .values(
                        stage=CampaignStage.Cancelled,
                        status=CampaignStatus.Cancelled.value,
                        finished_at=now,
                        lease_owner=None,
                        lease_until=None,
                    )
                ).rowcount  # type: ignore[attr-defined]
            row = self._row(session, tenant_id, campaign_id)
            old = CampaignStatus.Draft.value
        if not flagged:
            where = (
                " (it exists in the service)"
                if row.external_id or row.stage == CampaignStage.Creating
                else ""
            )
            if row.attention_reason:
                where = (
                    " (it needs attention: it may exist in the service; an admin resolves it "
                    "first, and one marked not created can be cancelled)"
                )
            raise Conflict(
                f"campaign {campaign_id} is {row.status} ({row.stage}) and can no longer be "
                f"cancelled{where}"
            )
        if idle:
            notify(
                self.hooks,
                "crm_host_campaign_status_changed",
                tenant_id=tenant_id,
                campaign_id=campaign_id,
                old_status=old,
                new_status=CampaignStatus.Cancelled.value,
                error=None,
            )
        return self.get(tenant_id, campaign_id, with_stats=False)
