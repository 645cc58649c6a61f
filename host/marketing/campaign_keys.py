"""Campaign attribution keys: a per-(tenant, module) map from a key the service echoes in
its events (a per-message id, a recipient address) to the campaign's externalId.

Modules attribute an event by the campaign-level id the service echoes back (custom args,
campaign ids) — never by "the module's latest campaign", which loses events of an older
campaign that overlaps a newer one. Where a service echoes only per-message ids, the module
records them here when it learns them (``crm.set_campaign_keys(campaignExternalId, keys)``)
and reads them back while parsing a webhook (``crm.campaign_for_key(key)``). The map lives in
a host table because module storage is capped at 1 MiB, far too small for a million message
ids; it is bounded per module (:data:`MAX_KEYS_PER_MODULE`) and per call.

Writes commit at once (like ``storage.set(..., durable=True)``): a key describes what the
service already holds, so it must survive the call failing afterwards. Setting a key again
points it at the new campaign (the service reused the id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import CampaignKey
from sandbox import errors as sandbox_errors

MAX_KEY_CHARS = 255
MAX_KEYS_PER_CALL = 5_000
MAX_KEYS_PER_MODULE = 5_000_000
"""A million-recipient campaign fits several times; an endless writer is stopped."""

SET = "crm.set_campaign_keys"
GET = "crm.campaign_for_key"
IN_CHUNK = 500


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_KEY_CHARS:
        raise sandbox_errors.ScriptError(f"{what} must be a non-empty string of at most 255 chars")
    return value.strip()


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


class CampaignKeys:
    """The host table behind the ``crm.set_campaign_keys`` / ``crm.campaign_for_key``
    callbacks, scoped to one (tenant, module) by the callbacks it lends."""

    def __init__(self, db: Database):
        self.db = db

    def set(self, tenant_id: str, module_id: str, campaign: str, keys: list[str]) -> int:
        """Point every key at ``campaign``; returns how many keys are new."""
        wanted = list(dict.fromkeys(keys))
        with self.db.transaction() as session:
            existing: dict[str, CampaignKey] = {}
            for part in _chunks(wanted):
                for row in session.scalars(
                    select(CampaignKey).where(
                        CampaignKey.tenant_id == tenant_id,
                        CampaignKey.module_id == module_id,
                        CampaignKey.key.in_(part),
                    )
                ):
                    existing[row.key] = row
            new = [k for k in wanted if k not in existing]
            if new and self._count(session, tenant_id, module_id) + len(new) > MAX_KEYS_PER_MODULE:
                raise sandbox_errors.LimitExceeded(
                    f"crm.set_campaign_keys: a module keeps at most {MAX_KEYS_PER_MODULE} keys"
                )
            for row in existing.values():
                row.campaign_external_id = campaign
            session.add_all(
                CampaignKey(
                    tenant_id=tenant_id, module_id=module_id, key=k, campaign_external_id=campaign
                )
                for k in new
            )
        return len(new)

    def get(self, tenant_id: str, module_id: str, key: str) -> str | None:
        with self.db.transaction() as session:
            row = session.get(CampaignKey, (tenant_id, module_id, key))
            return None if row is None else str(row.campaign_external_id)

    @staticmethod
    def _count(session: Session, tenant_id: str, module_id: str) -> int:
        query = select(func.count()).where(
            CampaignKey.tenant_id == tenant_id, CampaignKey.module_id == module_id
        )
        return int(session.scalar(query) or 0)

    def script_callbacks(
        self, tenant_id: str, module_id: str
    ) -> dict[str, Callable[[list[Any]], Any]]:
        """The two callbacks of one call, bound to its tenant and module."""

        def set_keys(args: list[Any]) -> int:
            if len(args) != 2:
                raise sandbox_errors.ScriptError(
                    "crm.set_campaign_keys(campaignExternalId, keys) takes two arguments"
                )
            campaign = _text(args[0], "campaignExternalId")
            keys = args[1]
            if not isinstance(keys, list):
                raise sandbox_errors.ScriptError("crm.set_campaign_keys: keys must be a list")
            if len(keys) > MAX_KEYS_PER_CALL:
                raise sandbox_errors.LimitExceeded(
                    f"crm.set_campaign_keys takes at most {MAX_KEYS_PER_CALL} keys per call; "
                    f"got {len(keys)}"
                )
            return self.set(tenant_id, module_id, campaign, [_text(k, "a key") for k in keys])

        def campaign_for_key(args: list[Any]) -> str | None:
            if len(args) != 1:
                raise sandbox_errors.ScriptError("crm.campaign_for_key(key) takes one argument")
            return self.get(tenant_id, module_id, _text(args[0], "key"))

        return {SET: set_keys, GET: campaign_for_key}


def offline_callbacks(keys: dict[str, str]) -> dict[str, Callable[[list[Any]], Any]]:
    """The same callbacks over a plain dict, for ``crm-host module test`` cases
    (``campaignKeys``) and ``module run``: nothing is stored."""

    def set_keys(args: list[Any]) -> int:
        new = [k for k in args[1] if k not in keys]
        keys.update({k: args[0] for k in args[1]})
        return len(new)

    def campaign_for_key(args: list[Any]) -> str | None:
        return keys.get(args[0])

    return {SET: set_keys, GET: campaign_for_key}
