"""retention: timestamp indexes, so the purge finds expired rows without scanning

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_invocations_started_at", "invocations", ["started_at"])
    op.create_index("ix_webhook_receipts_received_at", "webhook_receipts", ["received_at"])
    op.create_index("ix_campaigns_finished_at", "campaigns", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_campaigns_finished_at", table_name="campaigns")
    op.drop_index("ix_webhook_receipts_received_at", table_name="webhook_receipts")
    op.drop_index("ix_invocations_started_at", table_name="invocations")
