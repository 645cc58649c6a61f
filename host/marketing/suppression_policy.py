"""A tenant's suppression policy: which delivery events stop the host from mailing a
contact again, and what lifts that.

The defaults (a tenant without a stored policy has them):

* ``hardBounce`` (true) — a delivery that becomes **Bounced** sets the contact Bounced.
* ``complaint`` (true) — a delivery that becomes **Complained** sets the contact Complained.
* ``softBounceLimit`` (3) — that many **SoftBounced** deliveries in a row (a delivery that
  reaches Delivered, Opened or Clicked resets the count) set the contact Bounced; ``null``
  never does.
* ``providerSubscribeLifts`` (true) — a ``Resubscribe`` ``{"all": true}`` (the module's
  translation of the service's explicit subscribe event for that address) lifts Bounced and
  Complained as well as Unsubscribed. With false, only an admin (re-importing or editing the
  contact) can.

Campaigns always leave out contacts that are Unsubscribed, Bounced or Complained, and those
unsubscribed from the campaign's category; the policy decides only how contacts get there.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import SuppressionPolicySetting
from host.tenants import TenantService


class SuppressionPolicy(BaseModel):
    """The policy body of ``GET``/``PUT /api/v1/tenants/{t}/suppression-policy``."""

    model_config = ConfigDict(extra="forbid")

    hardBounce: bool = Field(True, description="a hard bounce sets the contact Bounced")
    complaint: bool = Field(True, description="a complaint sets the contact Complained")
    softBounceLimit: int | None = Field(
        3, ge=1, le=100, description="soft bounces in a row that set Bounced; null: never"
    )
    providerSubscribeLifts: bool = Field(
        True, description="a service's subscribe event lifts Bounced and Complained"
    )


_POLICIES = SuppressionPolicySetting.__table__.c
STORED_POLICY = select(_POLICIES.policy).where(_POLICIES.tenant_id == bindparam("tenant"))


def policy_in(session: Session, tenant_id: str) -> SuppressionPolicy:
    """The tenant's policy, read inside the caller's transaction (a webhook's write
    transaction: one column read, no ORM object)."""
    stored = session.connection().execute(STORED_POLICY, {"tenant": tenant_id}).scalar()
    return SuppressionPolicy() if stored is None else SuppressionPolicy.model_validate(stored)


class SuppressionPolicyService:
    """Reads and replaces tenants' policies (the admin API)."""

    def __init__(self, db: Database, tenants: TenantService):
        self.db = db
        self.tenants = tenants

    def get(self, tenant_id: str) -> SuppressionPolicy:
        self.tenants.get(tenant_id)
        with self.db.transaction() as session:
            return policy_in(session, tenant_id)

    def set(self, tenant_id: str, policy: SuppressionPolicy) -> SuppressionPolicy:
        self.tenants.get(tenant_id)
        with self.db.transaction() as session:
            row = session.get(SuppressionPolicySetting, tenant_id)
            if row is None:
                session.add(
                    SuppressionPolicySetting(tenant_id=tenant_id, policy=policy.model_dump())
                )
            else:
                row.policy = policy.model_dump()
        return policy
