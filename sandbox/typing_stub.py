"""``typing`` for scripts: an inert stub of its names, never the real module.

Scripts are written against typed stubs and checked with mypy, so they import ``typing``. The
real module cannot be lent: ``get_type_hints``, ``ForwardRef._evaluate`` and the class
machinery of ``NamedTuple``/``TypedDict`` evaluate strings with an unrestricted ``eval`` —
``get_type_hints(f)`` on ``def f(x: "__import__('os')")`` is a full escape. The compiler drops
every annotation (:mod:`sandbox.policy`), so at run time a typing name only has to *exist*:

- special forms and generic aliases (``Any``, ``Optional``, ``List`` ...) are
  :class:`TypingName` placeholders; subscripting one or combining it with ``|`` gives it back,
  so ``Rows = List[Dict[str, Any]]`` works; nothing is ever evaluated;
- ``cast(T, value)`` returns ``value``; ``TypeVar``/``NewType`` give a placeholder
  (``NewType``'s is the identity, as in ``typing``); ``TYPE_CHECKING`` is ``False``;
  ``overload``/``final``/``runtime_checkable`` return what they decorate;
- ``Generic[T]``/``Protocol`` as bases are dropped from the class's bases;
- a ``TypedDict`` class (or ``TypedDict("Name", {...})``) builds a plain ``dict`` when called,
  as in ``typing``; ``NamedTuple("Name", [("x", int)])`` is ``collections.namedtuple``. The
  class form of ``NamedTuple`` takes its fields from annotations, which the compiler dropped,
  so it is refused with a message saying what to write instead.

``get_type_hints``, ``ForwardRef``, ``get_origin``/``get_args``, ``dataclass_transform`` and
everything else that inspects or evaluates are simply absent: importing them is refused.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

#: names that mean something only to a type checker
PLACEHOLDERS = (
    "AbstractSet",
    "Annotated",
    "Any",
    "Callable",
    "ClassVar",
    "Collection",
    "Container",
    "Counter",
    "DefaultDict",
    "Deque",
    "Dict",
    "Final",
    "FrozenSet",
    "Generator",
    "Hashable",
    "ItemsView",
    "Iterable",
    "Iterator",
    "KeysView",
    "List",
    "Literal",
    "LiteralString",
    "Mapping",
    "MappingView",
    "MutableMapping",
    "MutableSequence",
    "MutableSet",
    "Never",
    "NoReturn",
    "NotRequired",
    "Optional",
    "OrderedDict",
    "Pattern",
    "Match",
    "Required",
    "Reversible",
    "Self",
    "Sequence",
    "Set",
    "Sized",
    "SupportsFloat",
    "SupportsIndex",
    "SupportsInt",
    "Tuple",
    "Type",
    "TypeAlias",
    "TypeGuard",
    "Union",
    "ValuesView",
)


class TypingName:
    """A typing name at run time: subscriptable and ``|``-able, and nothing else."""

    __slots__ = ("_name",)
    _name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getitem__(self, parameters: Any) -> TypingName:
        return self

    def __or__(self, other: Any) -> TypingName:
        return self

    def __ror__(self, other: Any) -> TypingName:
        return self

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        """As a base class (``Generic[T]``, ``Protocol``) it contributes nothing."""
        return ()

    def __setattr__(self, attribute: str, value: Any) -> NoReturn:
        raise TypeError("typing names are read-only")

    def __repr__(self) -> str:
        return f"typing.{self._name} (sandbox stub)"


class _PlainDictMaker(type):
    """Metaclass of :class:`_TypedDictBase`: calling a TypedDict class builds a plain dict."""

    def __call__(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(*args, **kwargs)


class _TypedDictBase(metaclass=_PlainDictMaker):
    """What a script's ``class X(TypedDict)`` really derives from."""


class _TypedDictName(TypingName):
    """``TypedDict``: a base class whose classes build dicts, or called, such a class."""

    __slots__ = ()

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (_TypedDictBase,)

    def __call__(self, name: str, fields: Any = None, /, **options: Any) -> type:
        return _PlainDictMaker(str(name), (_TypedDictBase,), {})


class _NamedTupleName(TypingName):
    """``NamedTuple``: the functional form only (the class form needs annotations)."""

    __slots__ = ()

    def __mro_entries__(self, bases: tuple[Any, ...]) -> NoReturn:
        raise TypeError(
            "class-based NamedTuple is not supported in scripts (annotations are dropped): "
            'write NamedTuple("Point", [("x", int), ("y", int)]) or collections.namedtuple'
        )

    def __call__(self, name: str, fields: Iterable[tuple[str, Any]] = (), /) -> type:
        return collections.namedtuple(str(name), [field for field, _ in fields])  # type: ignore[misc]


def _cast(typ: Any, value: Any) -> Any:
    """``typing.cast``: the value, unchanged and unchecked."""
    return value


def _type_var(name: str, *constraints: Any, **options: Any) -> TypingName:
    return TypingName(str(name))


def _new_type(name: str, base: Any) -> Callable[[Any], Any]:
    def new_type(value: Any) -> Any:
        return value

    return new_type


def _returned_as_is(decorated: Any) -> Any:
    return decorated


def typing_members() -> Mapping[str, Any]:
    """The names of the stub (the facade of ``typing`` in :mod:`sandbox.facades`)."""
    members: dict[str, Any] = {name: TypingName(name) for name in PLACEHOLDERS}
    members.update(
        {
            "TYPE_CHECKING": False,
            "Generic": TypingName("Generic"),
            "Protocol": TypingName("Protocol"),
            "TypedDict": _TypedDictName("TypedDict"),
            "NamedTuple": _NamedTupleName("NamedTuple"),
            "cast": _cast,
            "TypeVar": _type_var,
            "NewType": _new_type,
            "overload": _returned_as_is,
            "final": _returned_as_is,
            "runtime_checkable": _returned_as_is,
            "no_type_check": _returned_as_is,
        }
    )
    return members
