"""Campaigns that need an admin: the host-side *needs attention* flag and its resolution.

A job that resumes a campaign interrupted during CreateCampaign (or CreateMessengerCampaign)
cannot know whether the call reached the service. When the module's manifest declares the
call ``idempotent`` the job simply calls it again; otherwise it flags the campaign
(``Campaign.attention_reason`` / ``attention_at``): the campaign keeps its status and stage
(``creating``), no job claims it, and creating it again — perhaps mailing everyone twice —
is left to a person who can look in the service. The flag is not a ``CampaignStatus``: the
status is the contract's word for what the service says, and the service has said nothing.

An admin resolves it in one of two ways (API ``POST …/campaigns/{id}/resolve``, CLI
``crm-host campaign resolve``):

* **it exists** — ``externalId`` is the campaign's id in the service: the campaign is done,
  as if the create call had returned that id (status Sending, or Scheduled when it was
  scheduled; its Pending deliveries become Sent), and webhooks and stats find it by that id;
* **it was not created** — the host may create it: the campaign goes back to the end of its
  prepare pass (every batch is kept, nothing is prepared again) and the next job calls the
  create function once more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pluggy
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from host.contract.enums import CampaignStatus
from host.db.engine import Database
from host.db.models import Campaign
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.jobs.queue import CampaignQueue, InProcessQueue
from host.marketing.campaign_job import mark_sent, utcnow
from host.marketing.lifecycle import CampaignStage
from host.plugin_manager import notify

MAX_EXTERNAL_ID = 255  # the width of campaigns.external_id


@dataclass(frozen=True)
class CampaignAttention:
    """Why a campaign needs an admin, and since when."""

    reason: str
    at: datetime


class AttentionResolution(BaseModel):
    """What the admin found in the service: the campaign's id there, or that it does not
    exist (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")

    externalId: str | None = Field(
        None, description="The campaign's id in the service: it exists, record it"
    )
    notCreated: bool = Field(
        False, description="It does not exist in the service: let the host create it again"
    )

    def problems(self) -> list[Problem]:
        external = (self.externalId or "").strip()
        if bool(external) == self.notCreated:
            return [Problem("externalId", 'give either "externalId" or "notCreated": true')]
        if len(external) > MAX_EXTERNAL_ID:
            return [Problem("externalId", f"must be at most {MAX_EXTERNAL_ID} characters")]
        return []


class CampaignAttentionService:
    """Resolves flagged campaigns. ``jobs`` queues the job of a campaign that may be created
    again (in the resolving transaction) and wakes the runner."""

    def __init__(
        self,
        db: Database,
        hooks: pluggy.PluginManager,
        *,
        jobs: CampaignQueue | None = None,
    ):
        self.db = db
        self.hooks = hooks
        self.jobs = jobs or InProcessQueue()

    def resolve(self, tenant_id: str, campaign_id: str, resolution: AttentionResolution) -> None:
        """Apply the admin's answer; 409 when the campaign does not need attention (any more:
        two admins answering at once — the second one is refused, not applied twice)."""
        problems = resolution.problems()
        if problems:
            raise InvalidInput("the resolution is invalid", problems)
        external = (resolution.externalId or "").strip()
        now = utcnow()
        with self.db.transaction() as session:
            # Write first (SQLite takes its write lock before reading), guarded by the flag.
            values: dict[str, object] = {"attention_reason": None, "attention_at": None}
            if external:
                values |= {
                    "stage": CampaignStage.Done,
                    "external_id": external,
                    "finished_at": now,
                    "lease_owner": None,
                    "lease_until": None,
                }
            else:
                values |= {"stage": CampaignStage.Preparing, "lease_owner": None}
            resolved = session.execute(
                update(Campaign)
                .where(
                    Campaign.id == campaign_id,
                    Campaign.tenant_id == tenant_id,
                    Campaign.attention_reason.is_not(None),
                )
                .values(updated_at=now, **values)
            ).rowcount  # type: ignore[attr-defined]
            row = session.get(Campaign, campaign_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"campaign {campaign_id} does not exist")
            if not resolved:
                raise Conflict(f"campaign {campaign_id} does not need attention")
            old_status = row.status
            if external:
                self._check_unique(session, row, external)
                scheduled = bool((row.request or {}).get("scheduledAt"))
                row.status = (
                    CampaignStatus.Scheduled if scheduled else CampaignStatus.Sending
                ).value
                mark_sent(session, campaign_id, now)
            else:
                self.jobs.defer(session, campaign_id, tenant_id, resumed=True)
            new_status = row.status
        if not external:
            self.jobs.wake()
            return
        notify(
            self.hooks,
            "crm_host_campaign_status_changed",
            tenant_id=tenant_id,
            campaign_id=campaign_id,
            old_status=old_status,
            new_status=new_status,
            error=None,
        )

    @staticmethod
    def _check_unique(session: Session, row: Campaign, external: str) -> None:
        """An id another campaign of the module already has would merge two campaigns'
        webhooks and stats: refuse it (the transaction rolls back)."""
        other = session.scalar(
            select(Campaign.id).where(
                Campaign.tenant_id == row.tenant_id,
                Campaign.module_id == row.module_id,
                Campaign.external_id == external,
                Campaign.id != row.id,
            )
        )
        if other is not None:
            raise Conflict(f"campaign {other} already has externalId {external}")
