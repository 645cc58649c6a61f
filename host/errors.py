"""Domain errors of the host, one class per failure kind.

Each carries the problems found (every one, not just the first) with the place they point
at: a field path (``settings.api_key``, ``$.egress[0]``) or ``file:line``. The HTTP layer
maps classes to status codes in ``host/api/errors.py``; the CLI prints them in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what is wrong."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message

    def as_dict(self) -> dict[str, str]:
        return {"location": self.location, "message": self.message}


class HostError(Exception):
    """Base of every expected failure; ``kind`` is its stable public name."""

    kind: ClassVar[str] = "error"

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  {p}" for p in self.problems)


class InvalidInput(HostError):
    """Input that fails validation (manifest, script, settings, request body)."""

    kind = "invalid_input"


class PayloadTooLarge(InvalidInput):
    """A request over a size cap (bytes, rows, files); nothing of it was stored."""

    kind = "too_large"


class NotFound(HostError):
    kind = "not_found"


class Conflict(HostError):
    """The request contradicts what is stored (duplicate id, immutable version changed)."""

    kind = "conflict"


class Unauthorized(HostError):
    kind = "unauthorized"


class Forbidden(HostError):
    kind = "forbidden"


class ServiceBusy(HostError):
    """The host refused to start work now because a share is full (sandbox admission, a
    webhook URL's in-flight or rate limit). Not a module failure: the module never ran.
    ``retry_after_s`` becomes the ``Retry-After`` header."""

    kind = "busy"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(ServiceBusy):
    """A configured rate was exceeded (always 429): a webhook URL's request rate, or a
    console account's or client address's failed sign-ins."""

    kind = "rate_limited"


class ModuleCallFailed(HostError):
    """A module function failed; ``kind`` is one of SPEC §7's kinds (script_error, timeout,
    memory_limit, limit_exceeded, policy_violation, egress_denied, invalid_return,
    not_implemented, invalid_module)."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        module: str = "",
        function: str = "",
        line: int | None = None,
        trace: object | None = None,
    ):
        super().__init__(message)
        self.kind = kind  # type: ignore[misc]
        self.module = module
        self.function = function
        self.line = line
        self.trace = trace

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.kind}: {self.message}{where}"


class ModuleNotImplemented(ModuleCallFailed):
    def __init__(self, module: str, function: str):
        super().__init__(
            "not_implemented",
            f"module {module} does not implement {function}",
            module=module,
            function=function,
        )
