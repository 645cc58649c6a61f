"""Typed stubs of the world a crm-module-host script lives in.

A module script may start with::

    from crm_module_sdk import fetch, settings, storage, log, CRM_Marketing_DeliveryStatus

Inside the host's sandbox that import returns the real capabilities lent to the call; in an
editor, these definitions give completion and let mypy check the script. Nothing here works
outside the sandbox: calling a capability raises ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NoReturn, TypedDict

from host.contract.enums import AccountType
from host.contract.enums import ActionType as CRM_Marketing_ActionType
from host.contract.enums import CampaignStatus as CRM_Marketing_CampaignStatus
from host.contract.enums import CampaignType as CRM_Marketing_CampaignType
from host.contract.enums import DeliveryStatus as CRM_Marketing_DeliveryStatus
from host.contract.enums import SubscriberStatus as CRM_Marketing_SubscriberStatus

__all__ = [
    "AccountType",
    "CRM_Marketing_Action",
    "CRM_Marketing_ActionType",
    "CRM_Marketing_CampaignStats",
    "CRM_Marketing_CampaignStatus",
    "CRM_Marketing_CampaignType",
    "CRM_Marketing_CreateCampaignRequest",
    "CRM_Marketing_CreateCampaignResponse",
    "CRM_Marketing_CreateMessengerCampaignRequest",
    "CRM_Marketing_DeliveryStatus",
    "CRM_Marketing_ImportTemplate",
    "CRM_Marketing_MessengerBot",
    "CRM_Marketing_ResubscribeAction",
    "CRM_Marketing_SendEmailAction",
    "CRM_Marketing_SubscriberStatus",
    "CRM_Marketing_UnsubscribeAction",
    "CRM_Marketing_UpdateCampaignAction",
    "CRM_Marketing_UpdateCampaignStatsAction",
    "CRM_Marketing_UpdateContactAction",
    "CRM_Marketing_UpdateDeliveryStatusAction",
    "CRM_Marketing_WebhookResponse",
    "CRM_Marketing_WebhookResult",
    "CapabilityError",
    "Contact",
    "EgressDenied",
    "FetchError",
    "FetchRequest",
    "FetchResponse",
    "HostCallError",
    "LimitExceeded",
    "crm",
    "fetch",
    "log",
    "settings",
    "storage",
]


def _outside() -> NoReturn:
    raise RuntimeError(
        "crm_module_sdk only describes the sandbox; run the module with `crm-host module run`"
    )


# --- enums (the host's own, under the names scripts use) ----------------------------------

# --- values the host passes in (read-only records: r.field and r["field"]) ------------------


class FetchRequest(TypedDict):
    """A request received on the module's webhook URL. ``body`` is the text of the body."""

    method: str
    url: str
    headers: dict[str, str]
    body: str
    query: dict[str, str | list[str]]


class _CreateCampaignRequestOptional(TypedDict, total=False):
    templateExternalId: str | None
    html: str | None
    scheduledAt: str | None
    categoryExternalId: str | None


class CRM_Marketing_CreateCampaignRequest(_CreateCampaignRequestOptional):
    campaignId: str
    name: str
    type: CRM_Marketing_CampaignType
    subject: str
    senderName: str
    senderEmail: str


class CRM_Marketing_CreateMessengerCampaignRequest(TypedDict, total=False):
    campaignId: str
    name: str
    campaignType: AccountType
    botId: str
    text: str
    scheduledAt: str | None


class Contact(TypedDict):
    """What ``crm.contacts(ids)`` returns for each contact."""

    id: str
    name: str
    email: str | None
    phone: str | None
    status: CRM_Marketing_SubscriberStatus


# --- values a module returns (plain dicts, or built with these constructors) ----------------


class CRM_Marketing_CampaignStats(TypedDict, total=False):
    total: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    complained: int
    failed: int


class _WithStatus(TypedDict, total=False):
    status: CRM_Marketing_CampaignStatus


class CRM_Marketing_CreateCampaignResponse(_WithStatus):
    externalId: str


class _TemplateOptional(TypedDict, total=False):
    subject: str | None
    html: str | None


class CRM_Marketing_ImportTemplate(_TemplateOptional):
    externalId: str
    name: str


class _BotOptional(TypedDict, total=False):
    description: str | None


class CRM_Marketing_MessengerBot(_BotOptional):
    id: str
    name: str
    type: AccountType


class _ErrorOptional(TypedDict, total=False):
    error: str | None


class CRM_Marketing_UpdateCampaignAction(_ErrorOptional):
    type: Literal["UpdateCampaign"]
    externalId: str
    status: CRM_Marketing_CampaignStatus


class CRM_Marketing_UpdateCampaignStatsAction(TypedDict):
    type: Literal["UpdateCampaignStats"]
    externalId: str
    stats: CRM_Marketing_CampaignStats


class CRM_Marketing_UpdateDeliveryStatusAction(TypedDict):
    type: Literal["UpdateDeliveryStatus"]
    email: str
    externalId: str
    status: CRM_Marketing_DeliveryStatus


class AllCategories(TypedDict):
    all: Literal[True]


class CRM_Marketing_UnsubscribeAction(TypedDict):
    type: Literal["Unsubscribe"]
    email: str
    externalId: str | AllCategories


class CRM_Marketing_SendEmailAction(TypedDict):
    type: Literal["SendEmail"]
    email: str
    subject: str
    html: str


class CRM_Marketing_ResubscribeAction(TypedDict):
    """Host extension, not part of the original platform's list: lifts an unsubscription
    (a category's, or "from everything" with ``{"all": True}``), never a bounce/complaint."""

    type: Literal["Resubscribe"]
    email: str
    externalId: str | AllCategories


class _UpdateContactOptional(TypedDict, total=False):
    name: str | None
    newEmail: str | None


class CRM_Marketing_UpdateContactAction(_UpdateContactOptional):
    """Host extension, not part of the original platform's list: create or update the
    contact with ``email`` (name, a new email); never changes a subscription."""

    type: Literal["UpdateContact"]
    email: str


CRM_Marketing_Action = (
    CRM_Marketing_UpdateCampaignAction
    | CRM_Marketing_UpdateCampaignStatsAction
    | CRM_Marketing_UpdateDeliveryStatusAction
    | CRM_Marketing_UnsubscribeAction
    | CRM_Marketing_SendEmailAction
    | CRM_Marketing_ResubscribeAction
    | CRM_Marketing_UpdateContactAction
)


class CRM_Marketing_WebhookResponse(TypedDict, total=False):
    status: int
    headers: dict[str, str]
    body: Any


class CRM_Marketing_WebhookResult(TypedDict, total=False):
    actions: Sequence[CRM_Marketing_Action]
    response: CRM_Marketing_WebhookResponse


# --- capabilities -----------------------------------------------------------------------------


class FetchResponse:
    """The answer of ``fetch()``; ``ok`` is ``status < 300``."""

    ok: bool
    status: int
    statusText: str
    headers: Mapping[str, str]
    url: str

    def text(self) -> str:
        _outside()

    def json(self) -> Any:
        _outside()


class CapabilityError(Exception):
    """Base of the errors a lent capability raises; scripts may catch them."""


class FetchError(CapabilityError):
    """fetch() failed: connection refused, timeout, TLS, invalid request."""


class EgressDenied(FetchError):
    """fetch() to a host outside the manifest's ``egress`` or to a private address."""


class LimitExceeded(CapabilityError):
    """A per-invocation limit was reached (fetch count, response size, storage quota)."""


class HostCallError(CapabilityError):
    """A host callback such as ``crm.contacts`` failed."""


def fetch(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    json: Any = None,
    timeout: float | None = None,
) -> FetchResponse:
    """HTTP request performed by the host, limited to the manifest's ``egress`` hosts."""
    _outside()


def log(*values: Any) -> None:
    """Write one line to the invocation log (``print`` does the same)."""
    _outside()


class _Storage:
    """Small persistent key-value store of this (tenant, module); JSON values, size quota."""

    def get(self, key: str, default: Any = None) -> Any:
        _outside()

    def set(self, key: str, value: Any) -> None:
        _outside()

    def delete(self, key: str) -> None:
        _outside()


class _Crm:
    """Callbacks into the CRM, scoped to the calling tenant."""

    def contacts(self, ids: list[str]) -> list[Contact]:
        _outside()


settings: Mapping[str, Any] = {}
"""This tenant's settings for the module (read-only; secrets included)."""

storage = _Storage()
crm = _Crm()
