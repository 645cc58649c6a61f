"""How a contract type is written in a script's annotations: ``list[ImportTemplate]`` is
``list[CRM_Marketing_ImportTemplate]``, a ``datetime`` is an ISO 8601 ``str``. The SDK, the
scaffold's stubs and the guide's reference all write types through :func:`annotation`, so
they name a type the same way the sandbox lends it."""

from __future__ import annotations

import types
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from host.contract.enums import SCRIPT_ENUMS
from host.contract.types import SCRIPT_TYPES, Action, ContractModel

ACTION_NAME = "CRM_Marketing_Action"
"""The script name of the union of every action."""

_MODEL_NAMES = {model: name for name, model in SCRIPT_TYPES.items()}
_ENUM_NAMES = {enum: name for name, enum in SCRIPT_ENUMS.items()}
_PRIVATE_NAMES = {"AllCategories": "_AllCategories"}
"""Types the SDK spells out but does not export (they are not lent to scripts)."""


def model_name(model: type[ContractModel]) -> str:
    if model in _MODEL_NAMES:
        return _MODEL_NAMES[model]
    return _PRIVATE_NAMES[model.__name__]


def annotation(tp: Any, *, sequence: bool = False) -> str:
    """``tp`` as a script writes it; ``sequence`` writes lists as ``Sequence`` (inside a
    returned record, so a ``list`` of one action type is accepted where actions go)."""
    if tp is None or tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if tp == Action:
        return ACTION_NAME
    if isinstance(tp, type):
        if issubclass(tp, ContractModel):
            return model_name(tp)
        if issubclass(tp, StrEnum):
            return _ENUM_NAMES[tp]
        if tp is datetime:
            return "str"  # ISO 8601, as JSON carries it
        if tp in (str, int, float, bool):
            return tp.__name__
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return annotation(args[0], sequence=sequence)
    if origin is Literal:
        return (
            "Literal["
            + ", ".join('"' + a + '"' if isinstance(a, str) else repr(a) for a in args)
            + "]"
        )
    if origin in (Union, types.UnionType):
        return " | ".join(annotation(a, sequence=sequence) for a in args)
    if origin is list:
        return f"{'Sequence' if sequence else 'list'}[{annotation(args[0], sequence=sequence)}]"
    if origin is dict:
        return f"dict[{annotation(args[0])}, {annotation(args[1])}]"
    raise TypeError(f"no script name for {tp!r}")
