"""console sessions begun with an admin token remember which value of it

* ``console_sessions.admin_token_sha256`` — the SHA-256 of the admin token a session was
  begun with (NULL for a user's session). A session is live only while that value is still
  the named token's: a revoked or rotated stored token, or a ``CRM_HOST_ADMIN_TOKEN`` changed
  or removed between restarts, ends it (``host/console_sessions.py``). Sessions begun with
  an admin token before this revision have no value and end: their holders sign in again.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.add_column(sa.Column("admin_token_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_column("admin_token_sha256")
