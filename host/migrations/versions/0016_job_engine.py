"""the campaign job engine on PostgreSQL: procrastinate's schema, and the jobs' last errors

* On PostgreSQL, the schema of the pinned procrastinate (``procrastinate==3.10.0``, the
  ``postgres`` extra), read from the installed package at migration time rather than copied
  here: the SQL the worker runs and the SQL that created its tables come from one release.
  Nothing on SQLite, where campaign jobs keep running in the server's own threads.
* ``campaign_job_errors`` (both databases, used on PostgreSQL) — the last crash of a job,
  masked, for the failed-jobs view: procrastinate records a job's status and attempts, not
  why it failed.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)
PROCRASTINATE_TYPES = (
    "procrastinate_job_to_defer_v1",
    "procrastinate_job_event_type",
    "procrastinate_job_status",
)


def upgrade() -> None:
    op.create_table(
        "campaign_job_errors",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("crashes", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_job_errors_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_campaign_job_errors")),
    )
    op.create_index(
        op.f("ix_campaign_job_errors_campaign_id"), "campaign_job_errors", ["campaign_id"]
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from host.jobs.engine_schema import procrastinate_schema

    # straight to the driver without parameters, in the migration's transaction: the script
    # goes as it is (its "%" are not placeholders; SQLAlchemy would pass an empty set)
    cursor = bind.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(procrastinate_schema())
    finally:
        cursor.close()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(PROCRASTINATE_TABLES)} CASCADE")
        routines = bind.exec_driver_sql(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'"
        ).scalars()
        for routine in list(routines):
            bind.exec_driver_sql(f"DROP ROUTINE IF EXISTS {routine} CASCADE")
        bind.exec_driver_sql(f"DROP TYPE IF EXISTS {', '.join(PROCRASTINATE_TYPES)} CASCADE")
    op.drop_index(op.f("ix_campaign_job_errors_campaign_id"), table_name="campaign_job_errors")
    op.drop_table("campaign_job_errors")
