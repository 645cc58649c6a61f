"""Data crossing the script boundary: read-only records in, plain JSON data out.

Values the caller passes in (requests, contacts, settings) reach the script as
:class:`Record`/:class:`RecordList`: they answer ``r.campaignId`` and ``r["campaignId"]``,
nested too, and refuse every mutation, so a script cannot corrupt what its caller still
holds. Whatever the script returns goes through :func:`to_plain`, which rebuilds plain
``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` values and refuses anything else
(functions, classes, script objects): only data may leave the sandbox.

Enums and record types arrive as *data* (they cross a process boundary) and become
:class:`EnumNamespace` and :class:`RecordConstructor` objects here.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from sandbox.errors import InvalidReturn
from sandbox.limits import MAX_NESTING_DEPTH

MAX_DEPTH = MAX_NESTING_DEPTH
#: Python frames one nesting level of :func:`to_plain` takes (value, container, comprehension)
_FRAMES_PER_LEVEL = 3
#: a path longer than this is shown as its start and end (a 64-level path of long keys)
_MAX_PATH_CHARS = 120
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ReadOnlyError(TypeError):
    """Raised when a script tries to change a record, an enum or another lent value."""


def _read_only(self: object, *args: Any) -> NoReturn:
    raise ReadOnlyError(f"'{type(self).__name__}' object is read-only")


class Record(Mapping[str, Any]):
    """A read-only view of a JSON object: ``r.key``, ``r["key"]``, ``.get``/``.keys``/``.items``.

    Attribute lookup falls back to the keys, so a key named like a method (``items``) is read
    with ``r["items"]``. Nested objects and arrays come back as records and record lists.
    """

    __slots__ = ("_data",)
    _data: Mapping[str, Any]

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", data)

    def __getitem__(self, key: str) -> Any:
        return wrap(self._data[key])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return wrap(self._data[name])
        except KeyError:
            raise AttributeError(f"record has no field '{name}'") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return repr(self._data)

    def to_dict(self) -> dict[str, Any]:
        """A mutable deep copy, for scripts that want to build on the data."""
        return copy.deepcopy(dict(self._data))

    __setattr__ = _read_only
    __delattr__ = _read_only
    __setitem__ = _read_only
    __delitem__ = _read_only


class CaseInsensitiveRecord(Record):
    """A record whose keys are matched without regard to case (HTTP headers)."""

    __slots__ = ("_folded",)
    _folded: dict[str, str]

    def __init__(self, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        object.__setattr__(self, "_folded", {k.lower(): k for k in data})

    def __getitem__(self, key: str) -> Any:
        if isinstance(key, str):
            key = self._folded.get(key.lower(), key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._folded


class RecordList(Sequence[Any]):
    """A read-only view of a JSON array; items come back wrapped like :class:`Record`."""

    __slots__ = ("_items",)
    _items: Sequence[Any]

    def __init__(self, items: Sequence[Any]) -> None:
        object.__setattr__(self, "_items", items)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return RecordList(self._items[index])
        return wrap(self._items[index])

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return (wrap(item) for item in self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, RecordList)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Any) -> list[Any]:
        return [*self, *other]

    def __radd__(self, other: Any) -> list[Any]:
        return [*other, *self]

    def __repr__(self) -> str:
        return repr(self._items)

    def to_list(self) -> list[Any]:
        """A mutable deep copy."""
        return copy.deepcopy(list(self._items))

    __setattr__ = _read_only
    __delattr__ = _read_only
    __setitem__ = _read_only
    __delitem__ = _read_only


def wrap(value: Any) -> Any:
    """Present JSON data read-only: objects as records, arrays as record lists."""
    if isinstance(value, dict):
        return Record(value)
    if isinstance(value, list):
        return RecordList(value)
    return value


class EnumNamespace:
    """A string-valued enum as the script sees it: ``Status.Sent == "Sent"``.

    Iterating yields the values; ``"Sent" in Status`` tests values; ``Status["Sent"]`` looks a
    member up by name. Members are plain ``str``, so returning one needs no conversion.
    """

    __slots__ = ("_members", "_name")
    _members: dict[str, str]
    _name: str

    def __init__(self, name: str, members: Mapping[str, str]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", dict(members))

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._members[name]
        except KeyError:
            raise AttributeError(f"{self._name} has no member '{name}'") from None

    def __getitem__(self, name: str) -> str:
        return self._members[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._members.values()))

    def __contains__(self, value: object) -> bool:
        return value in self._members.values()

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"<enum {self._name}>"

    __setattr__ = _read_only
    __delattr__ = _read_only


class RecordConstructor:
    """``CampaignStats(total=3, sent=2)`` → a plain ``dict`` with those keys.

    Keyword arguments only; an unknown key is a ``TypeError`` naming the allowed ones.
    Fields with a default (declared as ``{"field": default}``) are filled in when omitted;
    fields without one are left out, so the caller's validation applies its own defaults.
    """

    __slots__ = ("_defaults", "_fields", "_name")
    _defaults: dict[str, Any]
    _fields: tuple[str, ...]
    _name: str

    def __init__(self, name: str, fields: Sequence[str], defaults: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_fields", tuple(fields))
        object.__setattr__(self, "_defaults", dict(defaults))

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args:
            raise TypeError(f"{self._name}() takes keyword arguments only")
        unknown = [key for key in kwargs if key not in self._fields]
        if unknown:
            raise TypeError(
                f"{self._name}() got unexpected field(s) {', '.join(unknown)}; "
                f"fields are {', '.join(self._fields)}"
            )
        result = copy.deepcopy(self._defaults)
        result.update(kwargs)
        return result

    def __repr__(self) -> str:
        return f"<record type {self._name}>"

    __setattr__ = _read_only
    __delattr__ = _read_only


# Leaving the sandbox


ErrorFactory = Callable[[str], BaseException]


def to_plain(value: Any, *, what: str = "value", error: ErrorFactory = InvalidReturn) -> Any:
    """A deep copy of ``value`` made only of JSON types; ``error(message)`` for anything else.

    The message reads ``<what>: <path>: <reason>`` (``$`` is the value itself).

    Unwraps records, turns tuples into lists and ``str``/``int``/``float`` subclasses into the
    exact types (a subclass could carry script behaviour out). Refuses non-string keys,
    non-finite floats, strings with lone surrogates (they cannot be encoded as UTF-8, so
    they could not leave the worker), cycles and nesting deeper than :data:`MAX_DEPTH`,
    naming the path.

    The walk is recursive, and a script may have been given a small recursion budget: the
    stack is given room for :data:`MAX_DEPTH` levels here (no script code runs during the
    walk), so any value within the nesting limit converts whatever that budget was.
    """
    previous = sys.getrecursionlimit()
    needed = _stack_depth() + _FRAMES_PER_LEVEL * (MAX_DEPTH + 2) + 20
    if needed > previous:
        sys.setrecursionlimit(needed)
    try:
        return _plain(value, "$", 0, set(), what, error)
    finally:
        if needed > previous:
            sys.setrecursionlimit(previous)


def _stack_depth() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return depth


def shown_path(path: str) -> str:
    """``path`` as an error message shows it: whole when short, else its start and end."""
    if len(path) <= _MAX_PATH_CHARS:
        return path
    return f"{path[:80]}...{path[-30:]}"


def _text(value: str, path: str, what: str, error: ErrorFactory) -> str:
    if not value.isascii() and _LONE_SURROGATE.search(value):
        raise error(f"{what}: {shown_path(path)}: contains a lone surrogate (not valid Unicode)")
    return str.__str__(value)


def _plain(
    value: Any, path: str, depth: int, active: set[int], what: str, error: ErrorFactory
) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return _text(value, path, what, error)
    if isinstance(value, bool):  # a bool subclass cannot exist; kept for clarity
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise error(f"{what}: {shown_path(path)}: {value!r} is not a finite number")
        return float.__float__(value)
    if depth >= MAX_DEPTH:
        raise error(f"{what}: {shown_path(path)}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (dict, Record, list, tuple, RecordList)):
        marker = id(value)
        if marker in active:
            raise error(f"{what}: {shown_path(path)}: contains itself (a cycle)")
        active.add(marker)
        try:
            return _container(value, path, depth, active, what, error)
        finally:
            active.discard(marker)
    raise error(f"{what}: {shown_path(path)}: {_describe(value)} is not JSON-compatible data")


def _container(
    value: Any, path: str, depth: int, active: set[int], what: str, error: ErrorFactory
) -> Any:
    # dict.items / list iteration are called on the base types on purpose: a script
    # subclass may override items() or __iter__, and none of its code may run here.
    if isinstance(value, (dict, Record)):
        source = value._data if isinstance(value, Record) else value
        pairs = dict.items(source) if isinstance(source, dict) else source.items()
        return {
            _key(key, path, what, error): _plain(
                item, f"{path}.{key}", depth + 1, active, what, error
            )
            for key, item in pairs
        }
    sequence = value._items if isinstance(value, RecordList) else value
    iterate: Callable[[Any], Iterator[Any]] = (
        tuple.__iter__ if isinstance(sequence, tuple) else list.__iter__
    )
    return [
        _plain(item, f"{path}[{index}]", depth + 1, active, what, error)
        for index, item in enumerate(iterate(sequence))
    ]


def _key(key: Any, path: str, what: str, error: ErrorFactory) -> str:
    if not isinstance(key, str):
        raise error(f"{what}: {shown_path(path)}: key {_describe(key)} is not a string")
    return _text(key, f"{path} (a key)", what, error)


def _describe(value: Any) -> str:
    kind = type(value).__name__
    if callable(value):
        return f"a callable ({kind})"
    return f"a value of type {kind}"
