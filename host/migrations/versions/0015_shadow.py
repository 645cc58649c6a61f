"""shadow runs: a webhook receipt keeps the actions its module returned

* ``webhook_receipts.actions`` — the actions of a successful request as the module returned
  them (secret settings masked, a SendEmail body as its length and SHA-256), so a shadow run
  of another version can report per request what it would do differently
  (``host/marketing/shadow_runs.py``). NULL for failed requests and for receipts written
  before this revision.

Revision ID: 0015
Revises: 0008
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_receipts") as batch:
        batch.add_column(sa.Column("actions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_receipts") as batch:
        batch.drop_column("actions")
