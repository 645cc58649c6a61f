"""webhook intake: stored requests (sealed) for replay, provider event ids for dedupe

* ``webhook_requests`` — every webhook request exactly as received, sealed with the host's
  secret key; kept by retention (days and bytes per tenant). ``pending``: acknowledged
  (acknowledge-first intake) and not processed yet.
* ``webhook_events`` — (tenant, module, provider event id) already applied, for the
  configured window, so a repeated event applies none of its actions.
* ``webhook_receipts.request_id / replay_of / module_version`` — a receipt names its stored
  request, and a replay names the receipt it replayed and the version it ran.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_requests_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_requests")),
    )
    op.create_index("ix_webhook_requests_received_at", "webhook_requests", ["received_at"])
    op.create_index(
        "ix_webhook_requests_tenant_received", "webhook_requests", ["tenant_id", "received_at"]
    )
    op.create_table(
        "webhook_events",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "module_id", "event_id", name=op.f("pk_webhook_events")
        ),
    )
    op.create_index("ix_webhook_events_seen_at", "webhook_events", ["seen_at"])
    with op.batch_alter_table("webhook_receipts") as batch:
        batch.add_column(sa.Column("request_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("replay_of", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("module_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_receipts") as batch:
        batch.drop_column("module_version")
        batch.drop_column("replay_of")
        batch.drop_column("request_id")
    op.drop_index("ix_webhook_events_seen_at", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_webhook_requests_tenant_received", table_name="webhook_requests")
    op.drop_index("ix_webhook_requests_received_at", table_name="webhook_requests")
    op.drop_table("webhook_requests")
