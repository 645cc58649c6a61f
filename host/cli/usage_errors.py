"""Usage errors as SPEC §7 wants them: one line ``error: ...`` naming the option, exit 2.

Click (under Typer) answers a usage error with the usage synopsis, a hint and a framed
message over several lines; scripts that drive ``crm-host`` read one line instead. Help
asked for (``--help``, or a group called without a command) is still printed whole.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer

from host.cli.output import err

try:  # recent Typer vendors Click as typer._click; older ones use Click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]


class OneLineUsageErrors(typer.Typer):
    """The ``crm-host`` application: Typer, with one-line usage errors."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            code = super().__call__(*args, standalone_mode=False, **kwargs)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            message = " ".join(exc.format_message().split())
            err.print(f"error: {message}", markup=False, highlight=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("error: aborted", markup=False, highlight=False)
            sys.exit(1)
        # without standalone mode Click returns a typer.Exit's code, or the command's value
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)
