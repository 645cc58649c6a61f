"""JSON values the host accepts from outside: API bodies, ``module run`` arguments and
settings, and the values modules return.

Python's ``json`` happily decodes ``"\\ud800"`` (a lone surrogate) and ``"\\u0000"``, and
nests as deep as the interpreter's stack allows. None of that may reach the database or a
recursive walk: PostgreSQL refuses NUL in text, no database can encode a lone surrogate as
UTF-8 (the row is stored half-way or not at all, and reading it back fails), and a deep
value is a stack overflow waiting for whichever code walks it next. :func:`value_problem`
finds the first such spot, iteratively, and names its path so the caller answers with a
clear 4xx / one error line / ``invalid_return``.

The nesting limit is the sandbox's :data:`~sandbox.limits.MAX_NESTING_DEPTH`, so what the
API accepts is exactly what a script may receive and return.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sandbox.limits import MAX_NESTING_DEPTH

_UNSAFE_TEXT = re.compile("[\\x00\\ud800-\\udfff]")
#: path segments shown before a long path is elided (``body.a.a.a.a.a.a...``)
_SHOWN_SEGMENTS = 8


@dataclass(frozen=True)
class ValueProblem:
    """Where a value is unacceptable (``body.settings.api_key``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class InvalidJson(ValueError):
    """Text that is not acceptable JSON; ``problem`` names the path inside it."""

    def __init__(self, problem: ValueProblem):
        super().__init__(str(problem))
        self.problem = problem


def text_problem(text: str) -> str | None:
    """Why a string may not be stored (NUL or a lone surrogate), or None."""
    found = _UNSAFE_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains a lone surrogate (not valid Unicode)"


def _surrogate_problem(text: str) -> str | None:
    reason = text_problem(text)
    return None if reason is None or "NUL" in reason else reason


def value_problem(
    value: Any,
    root: str = "body",
    max_depth: int = MAX_NESTING_DEPTH,
    *,
    refuse_nul: bool = True,
) -> ValueProblem | None:
    """The first place in a decoded JSON value that nests deeper than ``max_depth`` levels
    or holds text the host cannot store (a key or a string value), or None.

    ``refuse_nul=False`` lets NUL through, for data that is sent on as bytes and never
    stored (a webhook's response body)."""
    text_check = text_problem if refuse_nul else _surrogate_problem
    # (value, its depth, its path as a linked list (parent, segment)) — paths are only
    # rendered for the one problem reported
    stack: list[tuple[Any, int, tuple[Any, str] | None]] = [(value, 0, None)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            reason = text_check(item)
            if reason is not None:
                return ValueProblem(_render(root, path), reason)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            return ValueProblem(_render(root, path), f"nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                reason = text_check(key) if isinstance(key, str) else None
                if reason is not None:
                    return ValueProblem(_render(root, path), f"a key {reason}")
                stack.append((child, depth + 1, (path, f".{key}")))
        else:
            for index, child in enumerate(item):
                stack.append((child, depth + 1, (path, f"[{index}]")))
    return None


def _render(root: str, path: tuple[Any, str] | None) -> str:
    segments: list[str] = []
    while path is not None:
        path, segment = path
        segments.append(segment)
    segments.reverse()
    if len(segments) > _SHOWN_SEGMENTS + 2:
        hidden = len(segments) - _SHOWN_SEGMENTS - 1
        segments = [*segments[:_SHOWN_SEGMENTS], f"...({hidden} more)...", segments[-1]]
    shown = root + "".join(segments)
    return shown if len(shown) <= 200 else f"{shown[:150]}...{shown[-40:]}"


def loads_checked(text: str | bytes, root: str = "body") -> Any:
    """``json.loads`` that refuses what :func:`value_problem` finds, invalid UTF-8 and
    nesting too deep for the parser itself; raises :class:`InvalidJson` naming the path."""
    try:
        value = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise InvalidJson(
            ValueProblem(root, f"nested deeper than {MAX_NESTING_DEPTH} levels")
        ) from None
    except UnicodeDecodeError as exc:
        raise InvalidJson(
            ValueProblem(root, f"is not UTF-8 text (invalid byte at offset {exc.start})")
        ) from None
    except ValueError as exc:
        raise InvalidJson(ValueProblem(root, f"is not JSON ({exc})")) from None
    problem = value_problem(value, root)
    if problem is not None:
        raise InvalidJson(problem)
    return value
