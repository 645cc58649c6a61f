"""campaign rate limits: how long a campaign's job waits for its provider's rate limit

* ``campaigns.rate_limited_until`` — while the job waits because a batch call ran into a
  429 of the service (``host.marketing.provider_rate_limits``): when it calls that batch
  again. Shown in the campaign's progress; cleared once the batch goes through.
* ``campaigns.rate_limit_waited_s`` — the campaign's rate-limit waits so far, kept across
  restarts, checked against ``CRM_HOST_CAMPAIGN_RATE_LIMIT_MAX_TOTAL_SECONDS``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("rate_limited_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("rate_limit_waited_s", sa.Double(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("rate_limit_waited_s")
        batch.drop_column("rate_limited_until")
