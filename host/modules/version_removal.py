"""Removing a module version — only one nothing needs any more.

A version is in use while an enablement pins it (or keeps it as its rollback version), while
a campaign created with it is unfinished (its job calls that version), and while a campaign
created with it is inside the stats retention (stats of a campaign are fetched with the
version that created it). Removal is refused with a 409 listing every use, so the admin knows
what to change first. The module itself stays known (its id and kind) when its last version
goes, so a later upload of the same id must keep its kind.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import Campaign, Enablement, ModuleVersion, Tenant, utcnow
from host.errors import Conflict, NotFound, Problem
from host.marketing.lifecycle import ACTIVE_STAGES

MAX_LISTED_USES = 20


def _uses(
    session: Session, module_id: str, version: str, *, stats_retention: timedelta
) -> list[Problem]:
    """Every reason the version cannot be removed now (empty: it can)."""
    cutoff = utcnow() - stats_retention
    uses: list[Problem] = []
    for tenant_id, pinned, deleted in session.execute(
        select(Enablement.tenant_id, Enablement.version, Tenant.deleted_at)
        .join(Tenant, Tenant.id == Enablement.tenant_id)
        .where(
            Enablement.module_id == module_id,
            or_(Enablement.version == version, Enablement.previous_version == version),
        )
        .order_by(Enablement.tenant_id)
    ):
        what = "pins it" if pinned == version else "keeps it as its rollback version"
        note = " (tenant being deleted)" if deleted is not None else ""
        uses.append(Problem(f"tenant {tenant_id}", what + note))
    ended = func.coalesce(Campaign.finished_at, Campaign.created_at)
    for campaign_id, tenant_id, stage, finished in session.execute(
        select(Campaign.id, Campaign.tenant_id, Campaign.stage, ended)
        .where(
            Campaign.module_id == module_id,
            Campaign.module_version == version,
            or_(Campaign.stage.in_(ACTIVE_STAGES), ended > cutoff),
        )
        .order_by(Campaign.created_at)
    ):
        where = f"campaign {campaign_id} of tenant {tenant_id}"
        if stage in ACTIVE_STAGES:
            uses.append(Problem(where, f"is unfinished ({stage})"))
        else:
            uses.append(
                Problem(
                    where,
                    f"ended {finished:%Y-%m-%d}, inside the stats retention "
                    f"({stats_retention.days} days)",
                )
            )
    return uses


def remove_version(
    db: Database, module_id: str, version: str, *, stats_retention: timedelta
) -> None:
    """Delete the version, or raise a Conflict naming everything that uses it. The delete
    comes first in the transaction (SQLite's write lock is taken before the uses are read,
    so no enablement can pin the version in between); a use rolls it back."""
    with db.transaction() as session:
        deleted = session.execute(
            delete(ModuleVersion).where(
                ModuleVersion.module_id == module_id, ModuleVersion.version == version
            )
        ).rowcount  # type: ignore[attr-defined]
        if not deleted:
            raise NotFound(f"module {module_id} has no version {version}")
        uses = _uses(session, module_id, version, stats_retention=stats_retention)
        if uses:
            shown = uses[:MAX_LISTED_USES]
            if len(uses) > len(shown):
                shown.append(Problem("", f"… and {len(uses) - len(shown)} more"))
            raise Conflict(f"module {module_id}@{version} is in use and was not removed", shown)
