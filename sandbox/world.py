"""The script's whole world: the globals one invocation runs in.

:func:`build_globals` makes them FRESH for every invocation from two inputs:

- :class:`~sandbox.capabilities.Capabilities`, the callables the caller lends (fetch,
  storage, log, host callbacks, settings), reached through the objects of
  :mod:`sandbox.lent_objects`; every failure they raise is re-presented to the script as an
  exception class the script can name (:class:`~sandbox.capabilities.FetchError`,
  :class:`~sandbox.capabilities.EgressDenied` ...), never as a host object;
- :class:`WorldSpec`, extra globals described as data: enums, record types, constants and
  host-callback namespaces.

Nothing here knows what the script is for; the host decides the capabilities and the spec.
"""

from __future__ import annotations

import builtins
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.capabilities import CAPABILITY_ERRORS, Capabilities, CapabilityError, lend, limit_error
from sandbox.facades import ModuleFacade, build_facades, make_import
from sandbox.guards import (
    WriteGuard,
    guarded_apply,
    guarded_getattr,
    guarded_getitem,
    guarded_hasattr,
    guarded_iter,
    iter_unpack_sequence,
    make_limited_range,
    unpack_sequence,
)
from sandbox.lent_objects import HostFunction, ScriptPrinter, ScriptStorage, make_fetch
from sandbox.records import EnumNamespace, Record, RecordConstructor, to_plain

# What the caller describes as data


@dataclass(frozen=True)
class WorldSpec:
    """Extra globals, as JSON-serialisable data (it crosses process boundaries).

    - ``enums``: ``{"Status": {"Sent": "Sent", ...}}`` → ``Status.Sent == "Sent"``;
    - ``record_types``: ``{"Stats": ["total", "sent"]}`` or ``{"Stats": {"total": 0}}``
      (field → default) → ``Stats(total=1)`` returns a plain dict;
    - ``constants``: ``{"PAGE_SIZE": 100}`` → JSON values, deep-copied per invocation;
    - ``namespaces``: ``{"crm": ["contacts"]}`` → ``crm.contacts(ids)`` calls
      ``capabilities.call("crm.contacts", [ids])``;
    - ``sdk_module``: a module name scripts may import to get every lent name (``from
      my_sdk import fetch, Status``), so that the same source type-checks in an editor
      against an installed stub package of that name.
    """

    enums: dict[str, dict[str, str]] = field(default_factory=dict)
    record_types: dict[str, list[str] | dict[str, Any]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    namespaces: dict[str, list[str]] = field(default_factory=dict)
    sdk_module: str | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for group in (self.enums, self.record_types, self.constants, self.namespaces):
            for name in group:
                _check_global_name(name)
                if name in seen:
                    raise ValueError(f"global {name!r} is declared twice in the world spec")
                seen.add(name)
        for name, members in self.enums.items():
            for member, value in members.items():
                _check_global_name(member)
                if not isinstance(value, str):
                    raise ValueError(f"enum {name}.{member} must be a string")
        for name, fields in self.record_types.items():
            for field_name in fields:
                if not isinstance(field_name, str) or not field_name.isidentifier():
                    raise ValueError(f"record type {name}: bad field name {field_name!r}")
        for functions in self.namespaces.values():
            for function in functions:
                _check_global_name(function)
        if self.sdk_module is not None and not self.sdk_module.isidentifier():
            raise ValueError(f"sdk_module must be a plain module name, not {self.sdk_module!r}")
        json.dumps(self.to_dict())  # constants and defaults must be JSON

    def names(self) -> list[str]:
        """Every global this spec defines."""
        return [*self.enums, *self.record_types, *self.constants, *self.namespaces]

    def to_dict(self) -> dict[str, Any]:
        return {
            "enums": copy.deepcopy(self.enums),
            "record_types": copy.deepcopy(self.record_types),
            "constants": copy.deepcopy(self.constants),
            "namespaces": copy.deepcopy(self.namespaces),
            "sdk_module": self.sdk_module,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldSpec:
        unknown = set(data) - {"enums", "record_types", "constants", "namespaces", "sdk_module"}
        if unknown:
            raise ValueError(f"unknown world spec keys: {', '.join(sorted(unknown))}")
        return cls(
            enums=copy.deepcopy(dict(data.get("enums", {}))),
            record_types=copy.deepcopy(dict(data.get("record_types", {}))),
            constants=copy.deepcopy(dict(data.get("constants", {}))),
            namespaces={k: list(v) for k, v in dict(data.get("namespaces", {})).items()},
            sdk_module=data.get("sdk_module"),
        )


def _check_global_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"{name!r} is not a valid script name")
    if "__" in name:
        raise ValueError(f"{name!r} is not a valid script name (contains '__')")


# Builtins

_SAFE_BUILTIN_NAMES = (
    "None", "False", "True", "Ellipsis", "NotImplemented",
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hash", "hex", "int", "isinstance", "issubclass", "iter", "len", "list",
    "map", "max", "min", "next", "object", "oct", "ord", "pow", "property", "repr",
    "reversed", "round", "set", "slice", "sorted", "staticmethod", "str", "sum", "super",
    "tuple", "zip", "__build_class__",
)  # fmt: skip

# Absent on purpose: type, vars, dir, globals, locals, id, open, input, exec, eval, compile,
# breakpoint, help, memoryview, __import__ (replaced), getattr/setattr/delattr/hasattr
# (replaced by guarded versions), KeyboardInterrupt/SystemExit (a script must not be able
# to raise what the worker treats as its own shutdown).

_SAFE_EXCEPTION_NAMES = (
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BufferError",
    "BytesWarning", "ConnectionError", "DeprecationWarning", "EOFError", "EnvironmentError",
    "Exception", "FloatingPointError", "FutureWarning", "GeneratorExit", "IOError",
    "ImportError", "ImportWarning", "IndentationError", "IndexError", "KeyError",
    "LookupError", "MemoryError", "ModuleNotFoundError", "NameError", "NotImplementedError",
    "OSError", "OverflowError", "PendingDeprecationWarning", "RecursionError",
    "ReferenceError", "RuntimeError", "RuntimeWarning", "StopIteration", "SyntaxError",
    "SyntaxWarning", "SystemError", "TabError", "TimeoutError", "TypeError",
    "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError",
    "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError", "Warning",
    "ZeroDivisionError",
)  # fmt: skip


def _text(objects: tuple[Any, ...]) -> str:
    return " ".join(str(o) for o in objects)


def build_globals(
    capabilities: Capabilities,
    spec: WorldSpec | None = None,
    *,
    module_name: str = "module",
) -> dict[str, Any]:
    """Fresh globals for one invocation: builtins, guards, facades, capabilities, spec.

    Nothing mutable is shared with another invocation: the write-guard registry, the
    ``random`` generator, the sleep budget, constants and the print collector are all new.
    """
    spec = spec or WorldSpec()
    write_guard = WriteGuard()
    facades = build_facades(limit_error)
    lent_log = capabilities.log

    def log(*objects: Any) -> None:
        """Write one line to the captured invocation log."""
        lend(CapabilityError, "log", lent_log, _text(objects))

    def print_collector(_getattr_: Any = None) -> ScriptPrinter:
        return ScriptPrinter(log=lambda text: lend(CapabilityError, "log", lent_log, text))

    script_builtins: dict[str, Any] = {
        name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES
    }
    script_builtins.update({name: getattr(builtins, name) for name in _SAFE_EXCEPTION_NAMES})
    script_builtins.update(
        {
            "__import__": make_import(facades),
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": write_guard.setattr,
            "delattr": write_guard.delattr,
            "range": make_limited_range(limit_error),
        }
    )

    world: dict[str, Any] = {
        "__builtins__": script_builtins,
        "__name__": module_name,
        "__metaclass__": write_guard.make_class,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_iter,
        "_iter_unpack_sequence_": iter_unpack_sequence,
        "_unpack_sequence_": unpack_sequence,
        "_write_": write_guard,
        "_inplacevar_": write_guard.inplacevar,
        "_apply_": guarded_apply,
        "_print_": print_collector,
    }
    lent: dict[str, Any] = {
        "settings": Record(to_plain(dict(capabilities.settings), what="settings", error=TypeError)),
        "fetch": make_fetch(capabilities),
        "storage": ScriptStorage(capabilities),
        "log": log,
        **CAPABILITY_ERRORS,
    }
    for name, members in spec.enums.items():
        lent[name] = EnumNamespace(name, members)
    for name, fields in spec.record_types.items():
        defaults = fields if isinstance(fields, dict) else {}
        lent[name] = RecordConstructor(name, list(fields), defaults)
    for name, value in spec.constants.items():
        lent[name] = copy.deepcopy(value)
    for name, functions in spec.namespaces.items():
        lent[name] = ModuleFacade(
            name, {f: HostFunction(f"{name}.{f}", capabilities.call) for f in functions}
        )
    clashes = sorted(
        set(spec.names())
        & (set(CAPABILITY_ERRORS) | set(script_builtins) | {"settings", "fetch", "storage", "log"})
    )
    if clashes:
        raise ValueError(f"world spec redefines built-in names: {', '.join(clashes)}")
    world.update(lent)
    if spec.sdk_module:
        facades[spec.sdk_module] = ModuleFacade(spec.sdk_module, lent)
    return world
