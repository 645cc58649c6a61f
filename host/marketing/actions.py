"""Applying a module's WebhookResult actions to the CRM data, all in one transaction.

Services deliver webhooks late, twice and out of order, so an action carrying a provider
``eventId`` already applied is skipped (``host.marketing.event_dedupe``), and every action is
idempotent anyway: a
status only moves forward (``host.marketing.lifecycle``), stats are SET (never added), an
unsubscribe already recorded is not recorded again (nor a resubscribe or a contact update
that changes nothing). An action that names a campaign or
contact this tenant's module does not know is *skipped* with a reason, not an error: one
stray event must not make the service retry (and the host re-apply) a whole batch.

Everything a module names is looked up within the calling tenant, and campaigns also within
the calling module, so a module can never reach another tenant's (or module's) data, whatever
ids it sends. Events (``crm_host_*``) fire only after the transaction committed.

Host extensions (SPEC §8, not in the original platform's list):

* ``Resubscribe`` is the inverse of ``Unsubscribe``: a category id deletes only that
  category's unsubscription; ``{"all": true}`` turns the contact's status back into
  Subscribed and leaves category unsubscriptions alone. A module sends it for the service's
  explicit subscribe event for that address, so it lifts Unsubscribed and also Bounced and
  Complained (and the soft-bounce count) unless the tenant's suppression policy says
  ``providerSubscribeLifts: false``.

Suppressions (``host/marketing/suppression_policy.py``): a delivery that moves forward to
Bounced or Complained moves its contact to that status (never back down the order of
``lifecycle.SUBSCRIBER_RANK``); SoftBounced deliveries count up the contact's soft bounces in
a row, a Delivered/Opened/Clicked one resets them. Only a delivery that moved counts, so a
replayed event is not counted twice.
* ``UpdateContact`` creates or updates the contact with ``email``: ``name`` sets its name,
  ``newEmail`` moves it to another address (a replay after the move finds it there). It
  never changes a subscription. Moving onto the email of another contact is skipped
  (``email_taken``): merging contacts is an admin's decision, not a webhook's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from host.contract.enums import DeliveryStatus, SubscriberStatus
from host.contract.types import (
    Action,
    AllCategories,
    ResubscribeAction,
    SendEmailAction,
    UnsubscribeAction,
    UpdateCampaignAction,
    UpdateCampaignStatsAction,
    UpdateContactAction,
    UpdateDeliveryStatusAction,
)
from host.db.engine import Database
from host.db.models import Campaign, ContactUnsubscription, OutboxMessage
from host.marketing.contact_changes import (
    ContactRow,
    insert_contact,
    locked_contacts,
    write_changes,
)
from host.marketing.contact_rows import is_email
from host.marketing.delivery_moves import DeliveryRow, locked_deliveries, move_forward, write_moves
from host.marketing.event_dedupe import DUPLICATE_EVENT, claim_events
from host.marketing.lifecycle import (
    FINAL_CAMPAIGN_STATUSES,
    SUBSCRIBER_RANK,
    campaign_moves_forward,
    subscriber_moves_forward,
)
from host.marketing.outbox import QUEUED, clean_header, queue_message, valid_recipient
from host.marketing.suppression_policy import SuppressionPolicy, policy_in
from host.plugin_manager import notify

UNKNOWN_CAMPAIGN = "unknown_campaign"
UNKNOWN_RECIPIENT = "unknown_recipient"
UNKNOWN_CONTACT = "unknown_contact"
INVALID_RECIPIENT = "invalid_recipient"
INVALID_EMAIL = "invalid_email"
EMAIL_TAKEN = "email_taken"
NO_CHANGE = "no_change"
SKIP_REASONS = (
    UNKNOWN_CAMPAIGN,
    UNKNOWN_RECIPIENT,
    UNKNOWN_CONTACT,
    INVALID_RECIPIENT,
    INVALID_EMAIL,
    EMAIL_TAKEN,
    NO_CHANGE,
    DUPLICATE_EVENT,
)
"""Why an action changed nothing; stable codes for receipts, events and dashboards."""

ENGAGED = frozenset({DeliveryStatus.Delivered, DeliveryStatus.Opened, DeliveryStatus.Clicked})
"""Delivery statuses that prove the address takes mail: they end a run of soft bounces."""


class Skip(Exception):
    """An action that changes nothing; ``reason`` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ApplyOutcome:
    """What applying a result did. ``applied``/``skipped`` describe each action (by
    ``index`` in the result; skipped ones carry ``reason`` and ``detail``)."""

    applied: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    queued_mail: int = 0
    _events: list[tuple[str, dict[str, Any]]] = field(default_factory=list, repr=False)


def describe(index: int, action: Any) -> dict[str, Any]:
    """An action for receipts and events: its fields without bulky HTML."""
    described: dict[str, Any] = {"index": index}
    described.update(action.model_dump(mode="json", exclude={"html"}))
    return described


def describe_all(actions: Sequence[Action]) -> list[dict[str, Any]]:
    """Every action described (:func:`describe`): a caller builds these before its write
    transaction opens and hands them to :meth:`ActionApplier.apply_in`."""
    return [describe(index, action) for index, action in enumerate(actions)]


def email_key(email: str) -> str:
    return email.strip().lower()


LOOKUPS = "crm_host.action_lookups"
IN_CHUNK = 500
CAMPAIGN_ACTIONS = (UpdateDeliveryStatusAction, UpdateCampaignAction, UpdateCampaignStatsAction)
CAMPAIGN_ROW_ACTIONS = (UpdateCampaignAction, UpdateCampaignStatsAction)
CONTACT_ACTIONS = (UnsubscribeAction, ResubscribeAction, UpdateContactAction)


CAMPAIGNS = (
    select(Campaign)
    .where(
        Campaign.tenant_id == bindparam("tenant"),
        Campaign.module_id == bindparam("module"),
        Campaign.external_id.in_(bindparam("external_ids", expanding=True)),
    )
    .order_by(Campaign.created_at.desc(), Campaign.id)
)
LOCKED_CAMPAIGNS = CAMPAIGNS.with_for_update()
"""The campaigns a batch names (built once: it runs inside the write transaction)."""


@dataclass
class Lookups:
    """Every row a batch of actions names, read with a few IN queries before applying
    (rather than two queries per action). Complete for the batch: actions never create
    campaigns or deliveries, and UpdateContact records every contact it creates or moves
    here, so a miss means "unknown"."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    deliveries: dict[tuple[str, str], list[DeliveryRow]] = field(default_factory=dict)
    contacts: dict[str, ContactRow] = field(default_factory=dict)
    #: every contact row read or created (``contacts`` forgets an address a contact left)
    contact_rows: list[ContactRow] = field(default_factory=list)
    policy: SuppressionPolicy = field(default_factory=SuppressionPolicy)


def chunks(values: set[str]) -> Iterator[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), IN_CHUNK):
        yield ordered[start : start + IN_CHUNK]


def prefetch(
    session: Session, tenant_id: str, module_id: str, actions: Sequence[Action]
) -> Lookups:
    """Campaigns of this tenant AND module by externalId (the newest wins if a service
    reused one), their deliveries by email key, and this tenant's contacts by email key."""
    found = Lookups()
    external_ids = {a.externalId for a in actions if isinstance(a, CAMPAIGN_ACTIONS)}
    # Rows this batch changes are read locked, campaigns, deliveries, contacts in that order
    # (see host.marketing.delivery_moves); a campaign only when the batch changes it, so
    # delivery events of one campaign do not queue behind each other on PostgreSQL.
    changes_campaigns = any(isinstance(a, CAMPAIGN_ROW_ACTIONS) for a in actions)
    campaigns = LOCKED_CAMPAIGNS if changes_campaigns else CAMPAIGNS
    for part in chunks(external_ids):
        named = {"tenant": tenant_id, "module": module_id, "external_ids": part}
        for campaign in session.scalars(campaigns, named):
            found.campaigns.setdefault(str(campaign.external_id), campaign)
    wanted = [
        (found.campaigns[a.externalId].id, email_key(a.email))
        for a in actions
        if isinstance(a, UpdateDeliveryStatusAction) and a.externalId in found.campaigns
    ]
    campaign_ids = {cid for cid, _ in wanted}
    for part in chunks({key for _, key in wanted}):
        for delivery in locked_deliveries(session, campaign_ids, part):
            key = (delivery.campaign_id, delivery.email_key)
            found.deliveries.setdefault(key, []).append(delivery)
    found.policy = policy_in(session, tenant_id)
    emails = {
        email_key(a.email)
        for a in actions
        if isinstance(a, (*CONTACT_ACTIONS, UpdateDeliveryStatusAction))
    }
    emails |= {
        email_key(a.newEmail)
        for a in actions
        if isinstance(a, UpdateContactAction) and a.newEmail is not None
    }
    for part in chunks(emails):
        for contact in locked_contacts(session, tenant_id, part):
            found.contacts[str(contact.email_key)] = contact
            found.contact_rows.append(contact)
    return found


class ActionApplier:
    """Applies validated actions for one (tenant, module); see the module docstring."""

    def __init__(
        self,
        db: Database,
        hooks: pluggy.PluginManager,
        *,
        on_mail_queued: Callable[[], None] | None = None,
        event_window: timedelta = timedelta(days=7),
    ):
        self.db = db
        self.hooks = hooks
        self.on_mail_queued = on_mail_queued
        self.event_window = event_window

    def apply(
        self,
        tenant_id: str,
        module_id: str,
        actions: Sequence[Action],
        *,
        record: Callable[[Session, ApplyOutcome], None] | None = None,
    ) -> ApplyOutcome:
        """Apply ``actions`` in one transaction, then fire the events. ``record`` runs in the
        same transaction after the last action, so what it writes and the changes are
        committed together or not at all. Any exception rolls everything back."""
        with self.db.transaction() as session:
            outcome = self.apply_in(session, tenant_id, module_id, actions)
            if record is not None:
                record(session, outcome)
        self.announce(tenant_id, module_id, actions, outcome)
        return outcome

    def apply_in(
        self,
        session: Session,
        tenant_id: str,
        module_id: str,
        actions: Sequence[Action],
        descriptions: Sequence[dict[str, Any]] | None = None,
    ) -> ApplyOutcome:
        """Apply ``actions`` inside the caller's transaction (a webhook's, which also holds
        the call's storage writes and the receipt). The caller calls :meth:`announce` once
        that transaction committed. ``descriptions``: :func:`describe_all` of ``actions``,
        built by the caller before its transaction opened."""
        if descriptions is None:
            descriptions = describe_all(actions)
        outcome = ApplyOutcome()
        session.info[LOOKUPS] = prefetch(session, tenant_id, module_id, actions)
        event_ids = [a.eventId for a in actions if a.eventId is not None]
        fresh = claim_events(session, tenant_id, module_id, event_ids, self.event_window)
        repeats = set(event_ids) - fresh
        for index, action in enumerate(actions):
            try:
                if action.eventId in repeats:
                    raise Skip(DUPLICATE_EVENT, f"event {action.eventId!r} was already applied")
                self._apply_one(session, tenant_id, module_id, action, outcome)
            except Skip as skip:
                outcome.skipped.append(
                    {**descriptions[index], "reason": skip.reason, "detail": skip.detail}
                )
            else:
                outcome.applied.append(descriptions[index])
        lookups: Lookups = session.info[LOOKUPS]
        write_moves(session, [row for rows in lookups.deliveries.values() for row in rows])
        write_changes(session, lookups.contact_rows)
        return outcome

    def announce(
        self, tenant_id: str, module_id: str, actions: Sequence[Action], outcome: ApplyOutcome
    ) -> None:
        """Fire the events of applied actions: only after their transaction committed."""
        if outcome.queued_mail and self.on_mail_queued is not None:
            self.on_mail_queued()
        for event, kwargs in outcome._events:
            notify(self.hooks, event, **kwargs)
        if actions:
            notify(
                self.hooks,
                "crm_host_actions_applied",
                tenant_id=tenant_id,
                module_id=module_id,
                applied=outcome.applied,
                skipped=outcome.skipped,
            )

    def _apply_one(
        self,
        session: Session,
        tenant_id: str,
        module_id: str,
        action: Action,
        outcome: ApplyOutcome,
    ) -> None:
        if isinstance(action, UpdateDeliveryStatusAction):
            self._update_delivery(session, tenant_id, module_id, action)
        elif isinstance(action, UpdateCampaignAction):
            self._update_campaign(session, tenant_id, module_id, action, outcome)
        elif isinstance(action, UpdateCampaignStatsAction):
            self._update_stats(session, tenant_id, module_id, action)
        elif isinstance(action, UnsubscribeAction):
            self._unsubscribe(session, tenant_id, module_id, action, outcome)
        elif isinstance(action, SendEmailAction):
            self._send_email(session, tenant_id, module_id, action, outcome)
        elif isinstance(action, ResubscribeAction):
            self._resubscribe(session, tenant_id, action)
        elif isinstance(action, UpdateContactAction):
            self._update_contact(session, tenant_id, action)
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(f"unknown action {type(action).__name__}")

    # --- lookups --------------------------------------------------------------------------

    def _campaign(
        self, session: Session, tenant_id: str, module_id: str, external_id: str
    ) -> Campaign:
        campaign = session.info[LOOKUPS].campaigns.get(external_id)
        if campaign is None:
            raise Skip(UNKNOWN_CAMPAIGN, f"no campaign with externalId {external_id!r}")
        return campaign

    def _contact(self, session: Session, tenant_id: str, email: str) -> ContactRow:
        contact = session.info[LOOKUPS].contacts.get(email_key(email))
        if contact is None:
            raise Skip(UNKNOWN_CONTACT, f"no contact with email {email!r}")
        return contact

    # --- actions --------------------------------------------------------------------------

    def _update_delivery(
        self, session: Session, tenant_id: str, module_id: str, action: UpdateDeliveryStatusAction
    ) -> None:
        campaign = self._campaign(session, tenant_id, module_id, action.externalId)
        deliveries = session.info[LOOKUPS].deliveries.get((campaign.id, email_key(action.email)))
        if not deliveries:
            raise Skip(UNKNOWN_RECIPIENT, f"{action.email!r} is not a recipient of the campaign")
        at = datetime.now(UTC)
        # moved in memory on the locked rows; apply_in writes them all at the end
        if not [d for d in deliveries if move_forward(d, action.status, at)]:
            raise Skip(
                NO_CHANGE, f"delivery is {deliveries[0].status}; {action.status} is not forward"
            )
        contact = session.info[LOOKUPS].contacts.get(email_key(action.email))
        if contact is not None:
            self._suppress(contact, action.status, session.info[LOOKUPS].policy)

    @staticmethod
    def _suppress(contact: ContactRow, status: str, policy: SuppressionPolicy) -> None:
        """What a delivery that moved to ``status`` does to its contact under ``policy``."""
        new: str | None = None
        if status == DeliveryStatus.Complained and policy.complaint:
            new = SubscriberStatus.Complained
        elif status == DeliveryStatus.Bounced and policy.hardBounce:
            new = SubscriberStatus.Bounced
        elif status == DeliveryStatus.SoftBounced:
            contact.soft_bounces = (contact.soft_bounces or 0) + 1
            limit = policy.softBounceLimit
            if limit is not None and contact.soft_bounces >= limit:
                new = SubscriberStatus.Bounced
        elif status in ENGAGED:
            contact.soft_bounces = 0
        if new is not None and subscriber_moves_forward(contact.status, new):
            contact.status = new

    def _update_campaign(
        self,
        session: Session,
        tenant_id: str,
        module_id: str,
        action: UpdateCampaignAction,
        outcome: ApplyOutcome,
    ) -> None:
        campaign = self._campaign(session, tenant_id, module_id, action.externalId)
        old = campaign.status
        if not campaign_moves_forward(old, action.status):
            raise Skip(NO_CHANGE, f"campaign is {old}; {action.status} is not forward")
        campaign.status = action.status
        if action.error is not None:
            campaign.error = action.error
        if action.status in FINAL_CAMPAIGN_STATUSES and campaign.finished_at is None:
            campaign.finished_at = datetime.now(UTC)
        outcome._events.append(
            (
                "crm_host_campaign_status_changed",
                {
                    "tenant_id": tenant_id,
                    "campaign_id": campaign.id,
                    "old_status": old,
                    "new_status": str(action.status),
                    "error": campaign.error,
                },
            )
        )

    def _update_stats(
        self,
        session: Session,
        tenant_id: str,
        module_id: str,
        action: UpdateCampaignStatsAction,
    ) -> None:
        campaign = self._campaign(session, tenant_id, module_id, action.externalId)
        stats = action.stats.model_dump(mode="json")
        if campaign.stats == stats and not campaign.stats_stale:
            raise Skip(NO_CHANGE, "stats are already these values")
        campaign.stats = stats
        campaign.stats_fetched_at = datetime.now(UTC)
        campaign.stats_stale = False

    def _unsubscribe(
        self,
        session: Session,
        tenant_id: str,
        module_id: str,
        action: UnsubscribeAction,
        outcome: ApplyOutcome,
    ) -> None:
        contact = self._contact(session, tenant_id, action.email)
        category: str | None
        if isinstance(action.externalId, AllCategories):
            category = None
            if not subscriber_moves_forward(contact.status, SubscriberStatus.Unsubscribed):
                raise Skip(NO_CHANGE, f"contact is already {contact.status}")
            contact.status = SubscriberStatus.Unsubscribed
        else:
            category = action.externalId
            key = (tenant_id, contact.id, category)
            if session.get(ContactUnsubscription, key) is not None:
                raise Skip(NO_CHANGE, f"already unsubscribed from {category!r}")
            session.add(
                ContactUnsubscription(
                    tenant_id=tenant_id,
                    contact_id=contact.id,
                    category=category,
                    module_id=module_id,
                )
            )
        outcome._events.append(
            (
                "crm_host_contact_unsubscribed",
                {
                    "tenant_id": tenant_id,
                    "contact_id": contact.id,
                    "email": contact.email or action.email,
                    "category": category,
                },
            )
        )

    def _send_email(
        self,
        session: Session,
        tenant_id: str,
        module_id: str,
        action: SendEmailAction,
        outcome: ApplyOutcome,
    ) -> None:
        if not valid_recipient(action.email.strip()):
            raise Skip(INVALID_RECIPIENT, f"{action.email!r} is not an email address")
        duplicate = session.scalars(
            select(OutboxMessage.id).where(
                OutboxMessage.tenant_id == tenant_id,
                OutboxMessage.module_id == module_id,
                OutboxMessage.status == QUEUED,
                OutboxMessage.recipient == action.email.strip(),
                OutboxMessage.subject == clean_header(action.subject),
                OutboxMessage.html == action.html,
            )
        ).first()
        if duplicate is not None:
            # A replayed webhook must not mail twice while the first copy is still waiting;
            # once it is sent, the contract gives no event id to tell a replay from a resend.
            raise Skip(NO_CHANGE, f"an identical message is already queued (#{duplicate})")
        queue_message(session, tenant_id, module_id, action.email, action.subject, action.html)
        outcome.queued_mail += 1

    def _resubscribe(self, session: Session, tenant_id: str, action: ResubscribeAction) -> None:
        contact = self._contact(session, tenant_id, action.email)
        if isinstance(action.externalId, AllCategories):
            lifts = session.info[LOOKUPS].policy.providerSubscribeLifts
            rank = SUBSCRIBER_RANK.get(contact.status, 0)
            if rank == 0:
                raise Skip(NO_CHANGE, f"contact is already {contact.status}")
            if rank > SUBSCRIBER_RANK[SubscriberStatus.Unsubscribed] and not lifts:
                raise Skip(
                    NO_CHANGE,
                    f"contact is {contact.status}; this tenant's suppression policy lets "
                    "only an admin lift it",
                )
            contact.status = SubscriberStatus.Subscribed
            contact.soft_bounces = 0
            return
        row = session.get(ContactUnsubscription, (tenant_id, contact.id, action.externalId))
        if row is None:
            raise Skip(NO_CHANGE, f"not unsubscribed from {action.externalId!r}")
        session.delete(row)

    def _update_contact(
        self, session: Session, tenant_id: str, action: UpdateContactAction
    ) -> None:
        lookups: Lookups = session.info[LOOKUPS]
        known = lookups.contacts
        email = action.email.strip()
        new_email = action.newEmail.strip() if action.newEmail is not None else email
        for value in (email, new_email):
            if not is_email(value):
                raise Skip(INVALID_EMAIL, f"{value!r} is not an email address")
        contact = known.get(email_key(email))
        holder = known.get(email_key(new_email))
        if holder is not None and contact is not None and holder is not contact:
            raise Skip(EMAIL_TAKEN, f"{new_email!r} is the email of contact {holder.id}")
        contact = contact or holder  # a replayed move finds the contact at its new address
        name = action.name.strip() if action.name is not None else None
        created = contact is None
        if contact is None:
            contact = ContactRow(
                tenant_id, uuid.uuid4().hex, None, None, "", SubscriberStatus.Subscribed, 0
            )
        else:
            if action.newEmail is None:  # no move: keep the address as the CRM spells it
                new_email = contact.email or email
            if contact.email == new_email and (name is None or contact.name == name):
                raise Skip(NO_CHANGE, f"contact {contact.id} already has these values")
        if contact.email_key is not None and contact.email_key != email_key(new_email):
            known.pop(contact.email_key, None)
        contact.email, contact.email_key = new_email, email_key(new_email)
        known[contact.email_key] = contact
        if name is not None:
            contact.name = name
        if created:
            insert_contact(session, contact, lookups.contact_rows)
            lookups.contact_rows.append(contact)
