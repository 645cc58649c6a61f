"""Pydantic models of the values that cross the module boundary (SPEC §3).

Field names are the camelCase names of the original TypeScript API; every value a module
returns is validated against these before the host touches the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from host.contract.enums import (
    AccountType,
    CampaignStatus,
    CampaignType,
    DeliveryStatus,
    SubscriberStatus,
)


class ContractModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignStats(ContractModel):
    total: NonNegativeInt = 0
    sent: NonNegativeInt = 0
    delivered: NonNegativeInt = 0
    opened: NonNegativeInt = 0
    clicked: NonNegativeInt = 0
    bounced: NonNegativeInt = 0
    unsubscribed: NonNegativeInt = 0
    complained: NonNegativeInt = 0
    failed: NonNegativeInt = 0


class CreateCampaignRequest(ContractModel):
    campaignId: str
    name: str
    type: CampaignType
    subject: str
    senderName: str
    senderEmail: str
    templateExternalId: str | None = None
    html: str | None = None
    scheduledAt: datetime | None = None
    categoryExternalId: str | None = None


class CreateCampaignResponse(ContractModel):
    externalId: Annotated[str, Field(min_length=1, max_length=255)]
    status: CampaignStatus | None = None


class CreateMessengerCampaignRequest(ContractModel):
    campaignId: str
    name: str
    campaignType: AccountType
    botId: str
    text: str
    scheduledAt: datetime | None = None


class ImportTemplate(ContractModel):
    externalId: Annotated[str, Field(min_length=1, max_length=255)]
    name: Annotated[str, Field(min_length=1, max_length=500)]
    subject: str | None = None
    html: str | None = None


class MessengerBot(ContractModel):
    id: Annotated[str, Field(min_length=1, max_length=255)]
    name: str
    type: AccountType
    description: str | None = None


EventId = Annotated[str, Field(min_length=1, max_length=255)]


class ActionModel(ContractModel):
    """Fields every action has. ``eventId`` is the provider's id of the event the action
    comes from (SendGrid's ``sg_event_id``): the host remembers (tenant, module, eventId)
    for ``CRM_HOST_WEBHOOK_EVENT_WINDOW_DAYS``, and a webhook that brings an event id again
    applies none of that event's actions (skipped as ``duplicate_event``). Actions of one
    result sharing an event id are that event's actions and are all applied."""

    eventId: EventId | None = None


class UpdateCampaignAction(ActionModel):
    type: Literal["UpdateCampaign"]
    externalId: str
    status: CampaignStatus
    error: str | None = None


class UpdateCampaignStatsAction(ActionModel):
    type: Literal["UpdateCampaignStats"]
    externalId: str
    stats: CampaignStats


class UpdateDeliveryStatusAction(ActionModel):
    type: Literal["UpdateDeliveryStatus"]
    email: str
    externalId: str
    status: DeliveryStatus


class AllCategories(ContractModel):
    all: Literal[True]


class UnsubscribeAction(ActionModel):
    type: Literal["Unsubscribe"]
    email: str
    # the category is stored as a key column of 255 characters
    externalId: Annotated[str, Field(max_length=255)] | AllCategories


class ResubscribeAction(ActionModel):
    """Host extension (not in the original platform's list): the inverse of Unsubscribe. A
    category id lifts only that category's unsubscription; ``{"all": true}`` makes the
    contact Subscribed again: send it only for the service's explicit subscribe event for that
    address, since it also lifts Bounced and Complained (unless the tenant's suppression policy
    says ``providerSubscribeLifts: false``)."""

    type: Literal["Resubscribe"]
    email: str
    externalId: Annotated[str, Field(max_length=255)] | AllCategories


class UpdateContactAction(ActionModel):
    """Host extension (not in the original platform's list): create or update the contact
    with ``email``: set its name, move it to ``newEmail``. Never changes a subscription."""

    type: Literal["UpdateContact"]
    # the widths of the contacts table's columns
    email: Annotated[str, Field(min_length=3, max_length=320)]
    name: Annotated[str, Field(max_length=300)] | None = None
    newEmail: Annotated[str, Field(min_length=3, max_length=320)] | None = None


class SendEmailAction(ActionModel):
    type: Literal["SendEmail"]
    email: str
    subject: str
    html: str


Action = Annotated[
    UpdateCampaignAction
    | UpdateCampaignStatsAction
    | UpdateDeliveryStatusAction
    | UnsubscribeAction
    | SendEmailAction
    | ResubscribeAction
    | UpdateContactAction,
    Field(discriminator="type"),
]


class WebhookResponse(ContractModel):
    status: Annotated[int, Field(ge=100, le=599)] = 200
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


class WebhookResult(ContractModel):
    actions: list[Action] = Field(default_factory=list)
    response: WebhookResponse | None = None


class FetchRequest(ContractModel):
    """An HTTP request received on a module's webhook URL, as the module sees it."""

    method: str
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    query: dict[str, str | list[str]] = Field(default_factory=dict)


class Contact(ContractModel):
    """What ``crm.contacts(ids)`` returns for each contact of the calling tenant."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: SubscriberStatus


RECORD_TYPES: dict[str, type[ContractModel]] = {
    "CRM_Marketing_CampaignStats": CampaignStats,
    "CRM_Marketing_CreateCampaignResponse": CreateCampaignResponse,
    "CRM_Marketing_ImportTemplate": ImportTemplate,
    "CRM_Marketing_MessengerBot": MessengerBot,
    "CRM_Marketing_UpdateCampaignAction": UpdateCampaignAction,
    "CRM_Marketing_UpdateCampaignStatsAction": UpdateCampaignStatsAction,
    "CRM_Marketing_UpdateDeliveryStatusAction": UpdateDeliveryStatusAction,
    "CRM_Marketing_UnsubscribeAction": UnsubscribeAction,
    "CRM_Marketing_SendEmailAction": SendEmailAction,
    "CRM_Marketing_ResubscribeAction": ResubscribeAction,
    "CRM_Marketing_UpdateContactAction": UpdateContactAction,
    "CRM_Marketing_WebhookResult": WebhookResult,
}
"""Constructors scripts may call to build return values (they produce plain dicts)."""


INPUT_TYPES: dict[str, type[ContractModel]] = {
    "FetchRequest": FetchRequest,
    "CRM_Marketing_CreateCampaignRequest": CreateCampaignRequest,
    "CRM_Marketing_CreateMessengerCampaignRequest": CreateMessengerCampaignRequest,
    "Contact": Contact,
}
"""Values the host passes in (read-only records; every key present, ``None`` when unset)."""

SCRIPT_TYPES: dict[str, type[ContractModel]] = {
    **INPUT_TYPES,
    **RECORD_TYPES,
    "CRM_Marketing_WebhookResponse": WebhookResponse,
}
"""Every type of the contract under the name scripts (and the SDK) know it by."""
