"""suppressions kept by the host, and campaign attribution keys

* ``suppression_policies`` — a tenant's suppression policy (JSON), defaults when absent.
* ``contacts.soft_bounces`` — soft bounces in a row, for the policy's soft-bounce limit.
* ``campaigns.skipped_by`` — why a campaign's skipped recipients were left out.
* ``campaign_keys`` — per (tenant, module) key -> campaign externalId, the attribution map
  modules use when a service echoes only per-message ids.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suppression_policies",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_table(
        "campaign_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("campaign_external_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "module_id", "key"),
    )
    op.create_index("ix_campaign_keys_created_at", "campaign_keys", ["created_at"])
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column("soft_bounces", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("skipped_by", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("skipped_by")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("soft_bounces")
    op.drop_index("ix_campaign_keys_created_at", table_name="campaign_keys")
    op.drop_table("campaign_keys")
    op.drop_table("suppression_policies")
