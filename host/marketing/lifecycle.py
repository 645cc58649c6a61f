"""Which way statuses may move, and the stages of a campaign's send job.

Webhooks arrive late, twice and out of order, so a status only ever moves forward: a replayed
"delivered" never downgrades a "clicked". A campaign has two axes: its ``status``
(:class:`CampaignStatus`, the contract's word, what the service says) and its ``stage``
(:class:`CampaignStage`, how far the host's own send job got); both live here side by side.
"""

from __future__ import annotations

from enum import StrEnum

from host.contract.enums import CampaignStatus, DeliveryStatus, SubscriberStatus


class CampaignStage(StrEnum):
    """Where a campaign's send job is (``Campaign.stage``; see ``host.marketing.campaign_job``
    for the flow). Host-internal, so not part of the module contract."""

    Queued = "queued"
    Exporting = "exporting"
    Preparing = "preparing"
    Creating = "creating"
    Done = "done"
    Failed = "failed"
    Cancelled = "cancelled"


ACTIVE_STAGES = (
    CampaignStage.Queued,
    CampaignStage.Exporting,
    CampaignStage.Preparing,
    CampaignStage.Creating,
)
"""A job may still run (or resume) the campaign."""

FINAL_STAGES = (CampaignStage.Done, CampaignStage.Failed, CampaignStage.Cancelled)
"""The job is over; nothing runs the campaign again."""

DELIVERY_RANK: dict[str, int] = {
    DeliveryStatus.Pending: 0,
    DeliveryStatus.Sent: 1,
    DeliveryStatus.SoftBounced: 2,
    DeliveryStatus.Delivered: 3,
    DeliveryStatus.Opened: 4,
    DeliveryStatus.Clicked: 5,
    DeliveryStatus.Failed: 6,
    DeliveryStatus.Bounced: 6,
    DeliveryStatus.Unsubscribed: 7,
    DeliveryStatus.Complained: 8,
}
"""Engagement grows Sent → Delivered → Opened → Clicked; a soft bounce may still be
delivered later; a hard failure, an unsubscribe or a complaint outranks engagement (it is
what the sender must act on)."""

CAMPAIGN_RANK: dict[str, int] = {
    CampaignStatus.Draft: 0,
    CampaignStatus.Scheduled: 1,
    CampaignStatus.Sending: 2,
    CampaignStatus.Paused: 2,
    CampaignStatus.Sent: 3,
    CampaignStatus.Cancelled: 4,
    CampaignStatus.Failed: 4,
}
"""Sending and Paused may alternate; Sent, Cancelled and Failed are final."""

FINAL_CAMPAIGN_STATUSES = frozenset(
    {CampaignStatus.Sent, CampaignStatus.Cancelled, CampaignStatus.Failed}
)


def delivery_moves_forward(current: str, new: str) -> bool:
    return DELIVERY_RANK[new] > DELIVERY_RANK[current]


def campaign_moves_forward(current: str, new: str) -> bool:
    if current == new or current in FINAL_CAMPAIGN_STATUSES:
        return False
    return CAMPAIGN_RANK[new] >= CAMPAIGN_RANK[current]


SUBSCRIBER_RANK: dict[str, int] = {
    SubscriberStatus.Pending: 0,
    SubscriberStatus.Subscribed: 0,
    SubscriberStatus.Unsubscribed: 1,
    SubscriberStatus.Bounced: 2,
    SubscriberStatus.Complained: 3,
}
"""How far a contact is from being mailable: an unsubscribe is the contact's wish, a hard
bounce is the address's fact, a complaint is the strongest signal (a sender who mails it
again risks its reputation). Webhook events only move a contact up this order; only an
explicit subscribe event from the service moves it back (``Resubscribe``)."""


def subscriber_moves_forward(current: str, new: str) -> bool:
    return SUBSCRIBER_RANK.get(new, 0) > SUBSCRIBER_RANK.get(current, 0)
