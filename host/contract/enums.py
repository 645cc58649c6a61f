"""String-valued enums of the contract, seen by scripts as ``CRM_Marketing_CampaignStatus.Sent``."""

from __future__ import annotations

from enum import StrEnum


class ActionType(StrEnum):
    UpdateCampaign = "UpdateCampaign"
    UpdateCampaignStats = "UpdateCampaignStats"
    UpdateDeliveryStatus = "UpdateDeliveryStatus"
    Unsubscribe = "Unsubscribe"
    SendEmail = "SendEmail"
    Resubscribe = "Resubscribe"
    UpdateContact = "UpdateContact"


HOST_EXTENSION_ACTIONS = frozenset({ActionType.Resubscribe, ActionType.UpdateContact})
"""Actions this host adds to the original platform's list (SPEC §8)."""


class CampaignStatus(StrEnum):
    Draft = "Draft"
    Scheduled = "Scheduled"
    Sending = "Sending"
    Sent = "Sent"
    Paused = "Paused"
    Cancelled = "Cancelled"
    Failed = "Failed"


class CampaignType(StrEnum):
    Email = "Email"
    Sms = "Sms"
    Messenger = "Messenger"


class DeliveryStatus(StrEnum):
    Pending = "Pending"
    Sent = "Sent"
    Delivered = "Delivered"
    Opened = "Opened"
    Clicked = "Clicked"
    SoftBounced = "SoftBounced"
    Bounced = "Bounced"
    Complained = "Complained"
    Unsubscribed = "Unsubscribed"
    Failed = "Failed"


class SubscriberStatus(StrEnum):
    Subscribed = "Subscribed"
    Unsubscribed = "Unsubscribed"
    Pending = "Pending"
    Bounced = "Bounced"
    Complained = "Complained"


class AccountType(StrEnum):
    Telegram = "Telegram"
    WhatsApp = "WhatsApp"
    Viber = "Viber"
    VK = "VK"
    Instagram = "Instagram"
    FacebookMessenger = "FacebookMessenger"


class ModuleKind(StrEnum):
    email = "email"
    messenger = "messenger"


SCRIPT_ENUMS: dict[str, type[StrEnum]] = {
    "CRM_Marketing_ActionType": ActionType,
    "CRM_Marketing_CampaignStatus": CampaignStatus,
    "CRM_Marketing_CampaignType": CampaignType,
    "CRM_Marketing_DeliveryStatus": DeliveryStatus,
    "CRM_Marketing_SubscriberStatus": SubscriberStatus,
    "AccountType": AccountType,
}
"""The enums under the names scripts use."""
