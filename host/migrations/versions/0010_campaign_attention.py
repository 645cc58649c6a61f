"""campaign attention: a host-side flag on a campaign whose creation in the service is unknown

* ``campaigns.attention_reason / attention_at`` — set when a job resumes a campaign that was
  interrupted during CreateCampaign and its module does not declare that call idempotent: the
  campaign may or may not exist in the service, so the host neither creates it again nor
  fails it, and no job claims it until an admin resolves the flag (``crm-host campaign
  resolve``, ``POST …/campaigns/{id}/resolve``).

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("attention_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("attention_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("attention_at")
        batch.drop_column("attention_reason")
