"""procrastinate, the job engine on PostgreSQL: whether it is installed, and its schema.

Imported by revision 0016 and by ``Host.open`` on PostgreSQL, so a missing package is one
clear line naming the extra that installs it, like a missing database driver."""

from __future__ import annotations

from importlib import resources

from host.db.engine import DatabaseUnavailable

PROCRASTINATE_VERSION = "3.10.0"
"""The pinned release (``pyproject.toml``): revision 0016 applies its schema."""


def require_procrastinate() -> None:
    """Raise :class:`DatabaseUnavailable` (one line) when procrastinate is not importable."""
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        raise DatabaseUnavailable(
            "CRM_HOST_DATABASE_URL: PostgreSQL runs campaign jobs on procrastinate, which is "
            'not installed; pip install "crm-module-host[postgres]"'
        ) from None


def procrastinate_schema() -> str:
    """The SQL script that creates procrastinate's tables, types and functions, read from the
    installed package (never a copy kept in this repository)."""
    require_procrastinate()
    return (resources.files("procrastinate.sql") / "schema.sql").read_text(encoding="utf-8")
