"""``crm-host admin token …``: the platform admin's credentials (see host/admin_tokens.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from host.cli.host_options import DatabaseOption, HomeOption, open_host
from host.cli.output import handles_errors, out, table

app = typer.Typer(help="Platform admin credentials.", no_args_is_help=True)
token_app = typer.Typer(
    help="Named admin tokens (stored hashed; each value is shown once).", no_args_is_help=True
)
app.add_typer(token_app, name="token")

NameArgument = Annotated[str, typer.Argument(help="Token name, e.g. ops or ci.")]


def _shown_once(name: str, token: str) -> None:
    out.print(
        f"admin token {name} (shown once, store it now): {token}", markup=False, highlight=False
    )


@token_app.command("create")
@handles_errors
def token_create(
    name: NameArgument, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Create a new admin token under NAME."""
    with open_host(database_url, home) as host:
        _shown_once(name, host.admin_tokens.create(name))


@token_app.command("rotate")
@handles_errors
def token_rotate(
    name: Annotated[str, typer.Argument(help="Token to replace.")] = "default",
    database_url: DatabaseOption = None,
    home: HomeOption = None,
) -> None:
    """Replace NAME's value; the old value stops working at once."""
    with open_host(database_url, home) as host:
        _shown_once(name, host.admin_tokens.rotate(name))


@token_app.command("revoke")
@handles_errors
def token_revoke(
    name: NameArgument, database_url: DatabaseOption = None, home: HomeOption = None
) -> None:
    """Delete the admin token NAME."""
    with open_host(database_url, home) as host:
        host.admin_tokens.revoke(name)
    out.print(f"admin token {name} revoked")


@token_app.command("list")
@handles_errors
def token_list(database_url: DatabaseOption = None, home: HomeOption = None) -> None:
    """Names and creation times (the values are not stored)."""
    with open_host(database_url, home, read_only=True) as host:
        tokens = host.admin_tokens.list()
    table(
        "Admin tokens",
        ("name", "created"),
        ((t.name, t.created_at.isoformat(timespec="seconds")) for t in tokens),
    )
