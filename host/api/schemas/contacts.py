"""API models: contacts, their unsubscriptions, erasure and export."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime, from_names


class ContactsUpserted(ApiModel):
    ids: list[str] = Field(description="One id per input row, in input order")
    created: int
    updated: int


class ContactOut(ApiModel):
    """A contact in a listing: the categories it unsubscribed from, by name."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    unsubscribed_categories: list[str]
    created_at: IsoTime
    updated_at: IsoTime


class ContactPage(ApiModel):
    items: list[ContactOut]
    next: str | None = Field(description="`after` of the next page; null on the last one")


class UnsubscriptionOut(ApiModel):
    category: str
    module: str | None = Field(description="Module whose webhook unsubscribed it")
    at: IsoTime


class ContactDetail(ApiModel):
    """One contact, with when and through which module it left each category."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    unsubscribed_categories: list[UnsubscriptionOut] = Field(
        validation_alias=from_names("unsubscribed", "unsubscribedCategories")
    )
    created_at: IsoTime
    updated_at: IsoTime


class ContactErased(ApiModel):
    id: str = Field(validation_alias=from_names("contact_id", "id"))
    erased: bool = True
    deliveries_anonymised: int = Field(
        validation_alias=from_names("deliveries", "deliveriesAnonymised")
    )
    webhook_receipts_redacted: int = Field(
        validation_alias=from_names("webhook_receipts", "webhookReceiptsRedacted")
    )
    invocations_redacted: int = Field(
        validation_alias=from_names("invocations", "invocationsRedacted")
    )
    outbox_deleted: int = Field(validation_alias=from_names("outbox", "outboxDeleted"))
    suppressions_kept: int = Field(
        validation_alias=from_names("suppressions", "suppressionsKept"),
        description="Hashed addresses kept so that an unsubscribed person stays unsubscribed "
        "when imported again",
    )


class ExportedContactOut(ApiModel):
    id: str
    name: str
    email: str | None
    phone: str | None
    status: str = Field(description="SubscriberStatus")
    created_at: IsoTime
    updated_at: IsoTime


class ExportedDeliveryOut(ApiModel):
    campaign_id: str
    campaign_name: str
    module: str
    email: str | None
    phone: str | None
    status: str = Field(description="DeliveryStatus")
    history: list[Any]
    updated_at: IsoTime


class ExportedReceiptOut(ApiModel):
    id: int
    module: str
    received_at: IsoTime
    status: int
    skipped: list[Any]
    error: str | None
    actions: list[Any] | None = Field(None, description="The actions the module returned")


class ExportedMailOut(ApiModel):
    id: int
    module: str
    recipient: str
    subject: str
    html: str
    status: str
    created_at: IsoTime
    sent_at: IsoTime | None


class ExportedInvocationOut(ApiModel):
    id: int
    module: str
    function: str
    started_at: IsoTime
    log: str | None
    error: str | None


class ContactExport(ApiModel):
    contact: ExportedContactOut
    unsubscriptions: list[UnsubscriptionOut]
    deliveries: list[ExportedDeliveryOut]
    webhook_receipts: list[ExportedReceiptOut] = Field(
        description="Receipts mentioning the contact"
    )
    outbox: list[ExportedMailOut] = Field(description="Mail addressed to the contact")
    invocations: list[ExportedInvocationOut] = Field(
        description="Calls whose log mentions the contact"
    )
