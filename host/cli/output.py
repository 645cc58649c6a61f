"""How the CLI talks to people: Rich tables on stdout, one-line errors on stderr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from host.errors import HostError
from sandbox.errors import SandboxError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, details: Iterable[str] = ()) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    for line in details:
        err.print(f"  {line}", markup=False, highlight=False)
    return typer.Exit(1)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Expected failures become ``error: ...`` lines and exit status 1, never tracebacks."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except HostError as exc:
            raise fail(exc.message, (str(p) for p in exc.problems)) from None
        except SandboxError as exc:
            raise fail(f"{exc.kind}: {exc}") from None

    return run


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
        count += 1
    if count == 0:
        out.print(f"{title}: none")
    else:
        out.print(grid)


def print_json(value: Any) -> None:
    """``value`` as JSON on stdout; an API model prints as the API answers it (camelCase)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    out.print_json(json.dumps(value, default=str))
