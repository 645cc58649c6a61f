"""request ids: the invocation log names the HTTP request that caused each call

* ``invocations.request_id`` — the request's ``X-Request-ID`` (accepted or generated), None
  for background work; indexed with the tenant, so one request's calls are found at once.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invocations") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
    op.create_index("ix_invocations_tenant_request", "invocations", ["tenant_id", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_invocations_tenant_request", table_name="invocations")
    with op.batch_alter_table("invocations") as batch:
        batch.drop_column("request_id")
