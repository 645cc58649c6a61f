"""Failure kinds of a sandboxed script, one exception class per kind.

The kind strings are the public vocabulary (CLI ``error: KIND: message``, HTTP bodies,
invocation log); callers map classes to surfaces in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ScriptProblem:
    """One problem found in a script, pointing at its line when known."""

    kind: str
    message: str
    filename: str = "module.py"
    line: int | None = None
    column: int | None = None

    def location(self) -> str:
        if self.line is None:
            return self.filename
        return f"{self.filename}:{self.line}"

    def __str__(self) -> str:
        return f"{self.location()}: {self.message}"


class SandboxError(Exception):
    """Base of every failure a script can cause; ``kind`` names it on every surface."""

    kind: ClassVar[str] = "script_error"

    def __init__(self, message: str, *, filename: str = "module.py", line: int | None = None):
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.line = line

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.filename}:{self.line}: {self.message}"
        return self.message


class ScriptError(SandboxError):
    kind = "script_error"


class FetchFailed(ScriptError):
    """A network failure (refused, unreachable, timed out, bad response, invalid request).

    Kind ``script_error``: unlike a denial or a cap, the script may catch it and retry."""

    kind = "script_error"


class InvalidModule(SandboxError):
    kind = "invalid_module"


class PolicyViolation(SandboxError):
    kind = "policy_violation"


class Timeout(SandboxError):
    kind = "timeout"


class MemoryLimit(SandboxError):
    kind = "memory_limit"


class LimitExceeded(SandboxError):
    kind = "limit_exceeded"


class EgressDenied(SandboxError):
    kind = "egress_denied"


class NotImplementedFunction(SandboxError):
    kind = "not_implemented"


class InvalidReturn(SandboxError):
    """The script returned something that is not JSON-compatible data."""

    kind = "invalid_return"


class ScriptCompileError(SandboxError):
    """A script that cannot be compiled; carries every problem found, not just the first."""

    kind = "invalid_module"

    def __init__(self, problems: list[ScriptProblem]):
        self.problems = problems
        first = problems[0]
        super().__init__(
            "; ".join(str(p) for p in problems), filename=first.filename, line=first.line
        )
        if any(p.kind == PolicyViolation.kind for p in problems):
            self.kind = PolicyViolation.kind  # type: ignore[misc]

    def __str__(self) -> str:
        return self.message  # each problem already names its file and line


ERROR_CLASSES: dict[str, type[SandboxError]] = {
    cls.kind: cls
    for cls in (
        ScriptError,
        InvalidModule,
        PolicyViolation,
        Timeout,
        MemoryLimit,
        LimitExceeded,
        EgressDenied,
        NotImplementedFunction,
        InvalidReturn,
    )
}
"""Every kind a failure may carry, by name; an unknown kind is treated as script_error."""
