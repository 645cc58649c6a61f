"""Annotated scripts run: the compiler drops annotations and ``typing`` is an inert stub.

The attacks on the same surface (``get_type_hints``, ``ForwardRef``, string annotations ...)
are in ``test_policy_attacks.py``; here the legitimate uses work, in a real worker process.
"""

from __future__ import annotations

import textwrap

from sandbox.invocation import Invocation
from sandbox.pool import SandboxPool

TYPED_SCRIPT = textwrap.dedent(
    """
    from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Protocol, TypedDict, cast
    import typing

    if TYPE_CHECKING:  # only a type checker reads it: this world has no crm_module_sdk
        from crm_module_sdk import Contact

    Rows = list[dict[str, Any]]
    MaybeText = Optional[str] | None
    T = typing.TypeVar("T")
    UserId = typing.NewType("UserId", int)

    class Row(TypedDict):
        id: int
        email: str

    Point = NamedTuple("Point", [("x", int), ("y", int)])

    class Named(Protocol):
        name: str

    class Box(typing.Generic[T]):
        def __init__(self, item: T) -> None:
            self.item = item

    total: int = 0
    pending: list[str]

    def f(rows: Rows, label: "MaybeText" = None, *rest: int, **extra: str) -> dict[str, Any]:
        count: int = len(rows)
        seen: set[int]
        row: Row = Row(id=UserId(7), email="a@x.test")
        box = Box(cast(int, count))
        return {
            "count": count,
            "row": row,
            "point": list(Point(1, 2)),
            "box": box.item,
            "label": label,
        }
    """
)


def test_an_annotated_script_runs_in_a_worker(sandbox_pool: SandboxPool) -> None:
    result = sandbox_pool.run(
        Invocation(source=TYPED_SCRIPT, function="f", args=[[{"a": 1}, {"a": 2}]])
    )
    assert result.error is None, result.error
    assert result.value == {
        "count": 2,
        "row": {"id": 7, "email": "a@x.test"},
        "point": [1, 2],
        "box": 2,
        "label": None,
    }


def test_class_form_of_namedtuple_says_what_to_write(sandbox_pool: SandboxPool) -> None:
    source = (
        "from typing import NamedTuple\nclass P(NamedTuple):\n    x: int\ndef f():\n    return 1\n"
    )
    result = sandbox_pool.run(Invocation(source=source, function="f"))
    assert result.error is not None
    assert result.error.kind == "script_error"
    assert 'NamedTuple("Point", [("x", int), ("y", int)])' in result.error.message


def test_an_absent_typing_name_is_refused_with_its_name(sandbox_pool: SandboxPool) -> None:
    source = "def f():\n    from typing import get_type_hints\n    return 1\n"
    result = sandbox_pool.run(Invocation(source=source, function="f"))
    assert result.error is not None
    assert result.error.kind == "policy_violation"
    assert "get_type_hints" in result.error.message
    assert "typing" in result.error.message
