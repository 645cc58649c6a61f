"""The run-time guards RestrictedPython's rewritten code calls, as small named functions.

The policy (:mod:`sandbox.policy`) rewrites ``a.b`` into ``_getattr_(a, "b")``, ``a[k]`` into
``_getitem_(a, k)``, ``a.b = v`` / ``a[k] = v`` into ``_write_(a).b = v`` and so on. The
compile-time rules only see names written in the source; these guards see the names that
arrive at run time (``getattr(x, "__cl" + "ass__")``) and the objects involved.

Every refusal raises :class:`AccessDenied`, an ``AttributeError``/``TypeError`` the script may
catch (it obtains nothing by doing so) and that the executor reports, when uncaught, as a
``policy_violation``.
"""

from __future__ import annotations

import operator
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from sandbox.policy import attribute_problem

_MISSING: Any = object()


class AccessDenied(AttributeError):
    """A guard refused an attribute, item or write; uncaught it is a policy violation."""


class WriteDenied(TypeError):
    """A guard refused to mutate an object the script does not own."""


# Reading


def guarded_getattr(obj: Any, name: Any, default: Any = _MISSING) -> Any:
    """``_getattr_`` and the script's ``getattr``: attribute reads by name.

    Refuses ``_``/``__`` names, ``format``/``format_map``, ``mro`` and everything that reaches
    frames, code, tracebacks or generator internals (see :func:`attribute_problem`), any
    attribute of a real module object (none is ever lent; this is a second wall), and
    ``AttributeError.obj`` (CVE-2024-47532: it hands out the object a lookup failed on).
    """
    if type(name) is not str:
        raise TypeError("attribute name must be a str")
    problem = attribute_problem(name)
    if problem is not None:
        raise AccessDenied(problem)
    if isinstance(obj, ModuleType):
        raise AccessDenied("modules cannot be accessed directly")
    if name == "obj" and isinstance(obj, BaseException):
        raise AccessDenied('"obj" of an exception is not available')
    if default is _MISSING:
        return getattr(obj, name)
    return getattr(obj, name, default)


def guarded_hasattr(obj: Any, name: Any) -> bool:
    """``hasattr`` that answers ``False`` for everything :func:`guarded_getattr` refuses."""
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    """``_getitem_``: item reads. Refuses modules; everything else is the object's own rule."""
    if isinstance(obj, ModuleType):
        raise AccessDenied("modules cannot be accessed directly")
    return obj[key]


def guarded_iter(obj: Any) -> Iterator[Any]:
    """``_getiter_``: plain ``iter``. This sandbox has no per-item security proxies, so C-level
    iteration (``sorted``, ``zip`` ...) is no bypass and those builtins are lent as they are."""
    return iter(obj)


def guarded_apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``_apply_``: calls written with ``*args``/``**kwargs``."""
    return function(*args, **kwargs)


iter_unpack_sequence = guarded_iter_unpack_sequence
unpack_sequence = guarded_unpack_sequence


# Writing

#: Containers a script may mutate: the plain data types it builds itself.
WRITABLE_TYPES: frozenset[type] = frozenset(
    {dict, list, set, bytearray, Counter, OrderedDict, defaultdict, deque}
)


class _ReadOnlyProxy:
    """What ``_write_`` returns for an object the script may not mutate: every write fails."""

    __slots__ = ("_type_name",)
    _type_name: str

    def __init__(self, obj: Any) -> None:
        object.__setattr__(self, "_type_name", type(obj).__name__)

    def _deny(self, *args: Any) -> None:
        raise WriteDenied(f"'{self._type_name}' object is read-only in scripts")

    __setitem__ = _deny
    __delitem__ = _deny
    __setattr__ = _deny
    __delattr__ = _deny


class WriteGuard:
    """``_write_``: lets writes through to plain containers and to instances of classes the
    script defined itself (registered by :meth:`register_class`), and to nothing else.

    One instance per invocation, so the registry of script classes dies with it.
    """

    def __init__(self) -> None:
        self._script_classes: set[type] = set()

    def register_class(self, cls: type) -> None:
        self._script_classes.add(cls)

    def is_script_class(self, cls: type) -> bool:
        """Whether ``cls`` or one of its bases was defined by the script."""
        return any(base in self._script_classes for base in cls.__mro__)

    def may_write(self, obj: Any) -> bool:
        cls = type(obj)
        if cls in WRITABLE_TYPES:
            return True
        return self.is_script_class(cls)

    def __call__(self, obj: Any) -> Any:
        if self.may_write(obj):
            return obj
        return _ReadOnlyProxy(obj)

    def setattr(self, obj: Any, name: Any, value: Any) -> None:
        """The script's ``setattr``: name rules of reading, object rules of ``_write_``."""
        if type(name) is not str:
            raise TypeError("attribute name must be a str")
        problem = attribute_problem(name)
        if problem is not None:
            raise AccessDenied(problem)
        setattr(self(obj), name, value)

    def delattr(self, obj: Any, name: Any) -> None:
        """The script's ``delattr``."""
        if type(name) is not str:
            raise TypeError("attribute name must be a str")
        problem = attribute_problem(name)
        if problem is not None:
            raise AccessDenied(problem)
        delattr(self(obj), name)

    def make_class(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        """``__metaclass__``: every ``class`` statement of the script ends here."""
        cls = type(name, bases, namespace)
        self.register_class(cls)
        return cls

    def inplacevar(self, op: str, target: Any, value: Any) -> Any:
        """``_inplacevar_``: ``x op= y``. In place only on objects the script may mutate;
        otherwise the plain binary operator (identical for immutable values), so ``+=`` can
        never mutate something lent to the script."""
        try:
            inplace, binary = _INPLACE_OPERATORS[op]
        except KeyError:
            raise AccessDenied(f"operator {op} is not allowed") from None
        if self.may_write(target):
            return inplace(target, value)
        return binary(target, value)


_INPLACE_OPERATORS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]]] = {
    "+=": (operator.iadd, operator.add),
    "-=": (operator.isub, operator.sub),
    "*=": (operator.imul, operator.mul),
    "/=": (operator.itruediv, operator.truediv),
    "//=": (operator.ifloordiv, operator.floordiv),
    "%=": (operator.imod, operator.mod),
    "**=": (operator.ipow, operator.pow),
    "<<=": (operator.ilshift, operator.lshift),
    ">>=": (operator.irshift, operator.rshift),
    "&=": (operator.iand, operator.and_),
    "|=": (operator.ior, operator.or_),
    "^=": (operator.ixor, operator.xor),
    "@=": (operator.imatmul, operator.matmul),
}


# Ranges

MAX_RANGE_LENGTH = 10_000_000


def make_limited_range(limit_error: Callable[[str], BaseException]) -> Callable[..., range]:
    """``range`` refusing more than :data:`MAX_RANGE_LENGTH` items (``limit_error`` builds
    the exception, so the world decides how a limit looks to the script)."""

    def limited_range(*args: int) -> range:
        result = range(*args)
        if len(result) > MAX_RANGE_LENGTH:
            raise limit_error(
                f"range() of {len(result)} items exceeds the limit of {MAX_RANGE_LENGTH}"
            )
        return result

    return limited_range
