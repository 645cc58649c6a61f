"""The capabilities a crm-module-host script is lent — ``fetch``, ``log``, ``storage``,
``settings``, ``crm`` and their errors — as typed stubs (hand-written: they describe the
sandbox's world, not the CRM_Marketing_* contract, which ``__init__`` has generated).
Nothing here works outside the sandbox: calling a capability raises ``RuntimeError``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from crm_module_sdk import Contact

__all__ = [
    "CapabilityError",
    "EgressDenied",
    "FetchError",
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

    def set(self, key: str, value: Any, durable: bool = False) -> None:
        """Kept when the call succeeds; ``durable=True`` commits this write at once, so it
        survives a later failure of the call (the id of something the service created)."""
        _outside()

    def delete(self, key: str) -> None:
        _outside()


class _Crm:
    """Callbacks into the CRM, scoped to the calling tenant."""

    def contacts(self, ids: list[str]) -> list[Contact]:
        _outside()

    def set_campaign_keys(self, campaignExternalId: str, keys: list[str]) -> int:
        """Attribute ``keys`` (ids the service echoes per message, at most 5,000 per call,
        each 1-255 chars) to the campaign ``campaignExternalId`` in a host table (no storage
        quota; committed at once). Returns how many keys were new."""
        _outside()

    def campaign_for_key(self, key: str) -> str | None:
        """The campaign externalId a key was attributed to, or None."""
        _outside()


settings: Mapping[str, Any] = {}
"""This tenant's settings for the module (read-only; secrets included)."""

storage = _Storage()
crm = _Crm()
