"""The modules a script may import, as facades with an explicit attribute allow-list.

A script never receives a real module object. Real modules are doors: ``re.enum.sys.modules``,
``json.decoder``, ``random._os``, ``functools``' C internals, ``collections.abc``. A
:class:`ModuleFacade` holds only the names listed here, each chosen on purpose:

- ``random`` is a fresh ``random.Random`` per invocation (seeding it cannot influence
  another tenant's numbers); ``time.sleep`` is capped per invocation; ``decimal`` has no
  ``getcontext``/``setcontext``/``localcontext`` (the context is process-global state);
- ``uuid.uuid1`` (leaks the host's MAC address), ``string.Formatter`` (CVE-2023-41039),
  ``functools.singledispatch`` (evaluates annotations), ``functools.wraps`` /
  ``update_wrapper`` (copy ``__dict__``/``__wrapped__`` around), ``json.JSONEncoder`` /
  ``JSONDecoder`` and every submodule are absent;
- ``typing`` is an inert stub of its names (:mod:`sandbox.typing_stub`): the real module's
  ``get_type_hints``/``ForwardRef`` evaluate strings with an unrestricted ``eval``.

``from X import y`` reads attributes with the real ``getattr`` (no guard runs), which is why a
facade has no public methods of its own and why :func:`make_import` checks ``fromlist``
against the allow-list itself.

Nothing a script reaches is shared mutable state. One worker serves many tenants one after
the other, so whatever invocation 1 can change, invocation 2 could read. The write guard
already refuses attribute and item writes on everything the script did not create; what
remains are *mutating methods* of shared objects and state hidden behind functions. Per case
(``tests/sandbox/test_shared_state.py`` walks everything reachable and proves it):

=========================================  ==================================================
shared state                               decision
=========================================  ==================================================
``hashlib.algorithms_available`` /         frozen: a ``frozenset`` (they were plain sets one
``algorithms_guaranteed``                  tenant could ``add`` to and another read back)
``random``'s generator (``seed``,          per-invocation copy: a fresh ``random.Random``
``getstate``)                              each time, ``random.seed`` seeds only that one
``time.sleep`` budget                      per-invocation copy (:class:`SleepBudget`)
``decimal`` current context (precision,    removed: no ``getcontext``/``setcontext``/
rounding, traps, flags)                    ``localcontext``/``DefaultContext``; a script
                                           computes with its own ``decimal.Context()``
``re``'s pattern cache, ``re.purge``       removed: ``purge`` is absent; the cache itself
                                           holds only immutable compiled patterns
``urllib.parse.urlsplit``'s LRU cache      frozen facade: a plain function in front of it, so
(``cache_info``, ``cache_clear``)          no tenant can see another's hit count or clear it
``json``'s default encoder/decoder         removed: only ``dumps``/``loads`` (no ``cls``),
objects                                    never the module's encoder instances
``datetime``/``uuid`` internals            removed: only immutable classes and values
(``uuid._last_timestamp``, ``uuid1``)      (``UTC``, ``NAMESPACE_*``, ``MINYEAR``)
``collections.abc`` registries             removed: ``collections.abc`` is not reachable and
(``register``)                             no reachable class is an ABC
``functools`` caches                       per-invocation copy: ``lru_cache``/``cache`` wrap
                                           the script's own, per-invocation functions
``string.Formatter``                       removed (CVE-2023-41039); ``string.Template``'s
                                           class attributes are immutable strings/patterns
module facades themselves                  frozen: members in a read-only mapping; set and
                                           list members are frozen, cached functions wrapped
=========================================  ==================================================
"""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import functools
import hashlib
import hmac
import itertools
import json
import math
import random
import re
import string
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from sandbox.records import Record, RecordList, to_plain
from sandbox.signatures import equals, verify_ecdsa_p256
from sandbox.typing_stub import typing_members


class ImportDenied(ImportError):
    """An import outside the allow-list; uncaught, the executor reports a policy violation."""


class ModuleFacade:
    """A read-only namespace standing in for a module: only its listed names exist."""

    __slots__ = ("_members", "_name")
    _members: Mapping[str, Any]
    _name: str

    def __init__(self, name: str, members: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", MappingProxyType(dict(members)))

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        try:
            return self._members[attribute]
        except KeyError:
            raise AttributeError(
                f"module '{self._name}' has no attribute '{attribute}' in the sandbox"
            ) from None

    def __setattr__(self, attribute: str, value: Any) -> NoReturn:
        raise TypeError(f"module '{self._name}' is read-only")

    def __delattr__(self, attribute: str) -> NoReturn:
        raise TypeError(f"module '{self._name}' is read-only")

    def __repr__(self) -> str:
        return f"<module '{self._name}' (sandboxed)>"

    def __dir__(self) -> Iterable[str]:
        return sorted(self._members)


def _shareable(value: Any) -> Any:
    """``value`` made safe to share between invocations: mutable containers frozen, and
    functions with a cache (``functools.lru_cache``: ``cache_info``/``cache_clear``) hidden
    behind a plain function."""
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    if callable(value) and hasattr(value, "cache_clear") and not isinstance(value, type):
        return _uncached_view(value)
    return value


def _uncached_view(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function without its cache: the undecorated function itself when there is one
    (nothing is kept between calls), else a plain function in front of the cached one."""
    uncached: Callable[..., Any] | None = getattr(function, "__wrapped__", None)
    if uncached is not None:
        return uncached

    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    call.__name__ = call.__qualname__ = getattr(function, "__name__", "function")
    call.__doc__ = function.__doc__
    return call


def _pick(module: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: _shareable(getattr(module, name)) for name in names if hasattr(module, name)}


def _public(module: Any, exclude: Iterable[str] = ()) -> dict[str, Any]:
    excluded = set(exclude)
    return {
        name: _shareable(getattr(module, name))
        for name in dir(module)
        if not name.startswith("_") and name not in excluded
    }


# json: plain functions that also accept the read-only records the script was given


def _json_default(value: Any) -> Any:
    if isinstance(value, (Record, RecordList)):
        return to_plain(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_JSON_DUMP_OPTIONS = frozenset(
    {"skipkeys", "ensure_ascii", "allow_nan", "indent", "separators", "sort_keys", "default"}
)
_JSON_LOAD_OPTIONS = frozenset(
    {"parse_float", "parse_int", "parse_constant", "object_hook", "object_pairs_hook"}
)


def _json_dumps(obj: Any, **options: Any) -> str:
    """``json.dumps`` without ``cls`` (no encoder classes), understanding records."""
    unknown = set(options) - _JSON_DUMP_OPTIONS
    if unknown:
        raise TypeError(f"json.dumps() got unsupported argument(s): {', '.join(sorted(unknown))}")
    script_default = options.pop("default", None)

    def default(value: Any) -> Any:
        if isinstance(value, (Record, RecordList)):
            return to_plain(value)
        if script_default is not None:
            return script_default(value)
        return _json_default(value)

    return json.dumps(obj, default=default, **options)


def _json_loads(text: str | bytes, **options: Any) -> Any:
    """``json.loads`` without ``cls``."""
    unknown = set(options) - _JSON_LOAD_OPTIONS
    if unknown:
        raise TypeError(f"json.loads() got unsupported argument(s): {', '.join(sorted(unknown))}")
    return json.loads(text, **options)


# time: sleep is capped per invocation

MAX_SLEEP_SECONDS = 5.0


class SleepBudget:
    """Per-invocation ``time.sleep``: at most :data:`MAX_SLEEP_SECONDS` in total.

    Exceeding it raises at once (without sleeping) through ``limit_error``; the wall-clock
    limit of the worker still applies on top.
    """

    def __init__(
        self, limit_error: Callable[[str], BaseException], total: float = MAX_SLEEP_SECONDS
    ) -> None:
        self._limit_error = limit_error
        self._left = total
        self._total = total

    def sleep(self, seconds: float) -> None:
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise TypeError("time.sleep() needs a number of seconds")
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("sleep length must be a finite non-negative number")
        if seconds > self._left:
            raise self._limit_error(
                f"time.sleep() would exceed the sleep budget of {self._total:g} s per invocation"
            )
        self._left -= seconds
        time.sleep(seconds)


_STATIC_FACADES: dict[str, ModuleFacade] = {
    "json": ModuleFacade(
        "json",
        {"dumps": _json_dumps, "loads": _json_loads, "JSONDecodeError": json.JSONDecodeError},
    ),
    "re": ModuleFacade(
        "re",
        _pick(
            re,
            [
                "compile",
                "search",
                "match",
                "fullmatch",
                "split",
                "findall",
                "finditer",
                "sub",
                "subn",
                "escape",
                "error",
                "A",
                "ASCII",
                "I",
                "IGNORECASE",
                "M",
                "MULTILINE",
                "S",
                "DOTALL",
                "X",
                "VERBOSE",
                "U",
                "UNICODE",
            ],
        ),
    ),
    "datetime": ModuleFacade(
        "datetime",
        _pick(
            datetime,
            [
                "date",
                "datetime",
                "time",
                "timedelta",
                "timezone",
                "tzinfo",
                "MINYEAR",
                "MAXYEAR",
                "UTC",
            ],
        ),
    ),
    "math": ModuleFacade("math", _public(math)),
    "hashlib": ModuleFacade(
        "hashlib",
        _pick(
            hashlib,
            [
                "md5",
                "sha1",
                "sha224",
                "sha256",
                "sha384",
                "sha512",
                "sha3_224",
                "sha3_256",
                "sha3_384",
                "sha3_512",
                "blake2b",
                "blake2s",
                "new",
                "pbkdf2_hmac",
                "algorithms_available",
                "algorithms_guaranteed",
            ],
        ),
    ),
    "hmac": ModuleFacade("hmac", _pick(hmac, ["new", "compare_digest", "digest", "HMAC"])),
    "base64": ModuleFacade(
        "base64",
        _pick(
            base64,
            [
                "b64encode",
                "b64decode",
                "standard_b64encode",
                "standard_b64decode",
                "urlsafe_b64encode",
                "urlsafe_b64decode",
                "b32encode",
                "b32decode",
                "b16encode",
                "b16decode",
                "b85encode",
                "b85decode",
                "a85encode",
                "a85decode",
                "encodebytes",
                "decodebytes",
            ],
        ),
    ),
    "urllib.parse": ModuleFacade(
        "urllib.parse",
        _pick(
            urllib.parse,
            [
                "urlencode",
                "quote",
                "quote_plus",
                "quote_from_bytes",
                "unquote",
                "unquote_plus",
                "unquote_to_bytes",
                "urlparse",
                "urlsplit",
                "urlunparse",
                "urlunsplit",
                "urljoin",
                "urldefrag",
                "parse_qs",
                "parse_qsl",
            ],
        ),
    ),
    "uuid": ModuleFacade(
        "uuid",
        _pick(
            uuid,
            [
                "UUID",
                "uuid3",
                "uuid4",
                "uuid5",
                "NAMESPACE_DNS",
                "NAMESPACE_URL",
                "NAMESPACE_OID",
                "NAMESPACE_X500",
            ],
        ),
    ),
    "decimal": ModuleFacade(
        "decimal",
        {
            **_pick(
                decimal,
                [
                    "Decimal",
                    "Context",
                    "DecimalException",
                    "InvalidOperation",
                    "DivisionByZero",
                    "Inexact",
                    "Rounded",
                    "Overflow",
                    "Underflow",
                    "FloatOperation",
                ],
            ),
            **{name: getattr(decimal, name) for name in dir(decimal) if name.startswith("ROUND_")},
        },
    ),
    "string": ModuleFacade(
        "string",
        _pick(
            string,
            [
                "ascii_letters",
                "ascii_lowercase",
                "ascii_uppercase",
                "digits",
                "hexdigits",
                "octdigits",
                "punctuation",
                "printable",
                "whitespace",
                "capwords",
                "Template",
            ],
        ),
    ),
    "itertools": ModuleFacade("itertools", _public(itertools)),
    "functools": ModuleFacade(
        "functools", _pick(functools, ["reduce", "partial", "cmp_to_key", "lru_cache", "cache"])
    ),
    "collections": ModuleFacade(
        "collections",
        _pick(
            collections,
            ["Counter", "defaultdict", "OrderedDict", "deque", "namedtuple"],
        ),
    ),
}

_STATIC_FACADES["signatures"] = ModuleFacade(
    "signatures", {"verify_ecdsa_p256": verify_ecdsa_p256, "equals": equals}
)
#: an inert stub, never the real module (see :mod:`sandbox.typing_stub`)
_STATIC_FACADES["typing"] = ModuleFacade("typing", typing_members())

#: Every importable module name (``urllib.parse`` is importable; ``urllib`` alone is not).
ALLOWED_MODULES: tuple[str, ...] = (*sorted(_STATIC_FACADES), "random", "time")


def build_facades(limit_error: Callable[[str], BaseException]) -> dict[str, ModuleFacade]:
    """The facades of one invocation: the shared immutable ones plus fresh ``random`` and
    ``time`` (their state — seed, sleep budget — must not outlive the invocation)."""
    generator = random.Random()
    facades = dict(_STATIC_FACADES)
    facades["random"] = ModuleFacade(
        "random",
        {
            name: getattr(generator, name)
            for name in [
                "random",
                "randint",
                "randrange",
                "choice",
                "choices",
                "shuffle",
                "sample",
                "uniform",
                "gauss",
                "normalvariate",
                "getrandbits",
                "seed",
                "randbytes",
                "triangular",
                "expovariate",
            ]
        },
    )
    budget = SleepBudget(limit_error)
    facades["time"] = ModuleFacade(
        "time",
        {
            **_pick(
                time,
                [
                    "time",
                    "time_ns",
                    "monotonic",
                    "monotonic_ns",
                    "perf_counter",
                    "perf_counter_ns",
                    "gmtime",
                    "localtime",
                    "mktime",
                    "strftime",
                    "strptime",
                    "struct_time",
                    "timezone",
                ],
            ),
            "sleep": budget.sleep,
        },
    )
    return facades


@functools.cache
def importable_names() -> Mapping[str, frozenset[str]]:
    """Module → the names ``from module import ...`` can take: the facades' members, so the
    compiler refuses ``from typing import get_type_hints`` with its line, before any run."""
    facades = build_facades(RuntimeError)
    return MappingProxyType({name: frozenset(f._members) for name, f in facades.items()})


#: modules the standard library's C code imports by name while a script runs (``time`` and
#: ``datetime``'s ``strptime`` import ``_strptime``); preloaded by :mod:`sandbox.preload`
C_LEVEL_IMPORTS = frozenset({"_strptime"})
#: the ``fromlist`` CPython's ``PyImport_Import`` passes (an empty *list*; ``["__doc__"]``
#: in older versions). It looks ``__import__`` up in the calling frame's builtins, the
#: script's; a script's own ``import`` passes ``None`` or a tuple, and cannot name
#: ``__import__`` to call it directly.
_C_IMPORT_FROMLISTS: tuple[list[str], ...] = ([], ["__doc__"])


def make_import(facades: Mapping[str, ModuleFacade]) -> Callable[..., Any]:
    """The script's ``__import__``: facades only, absolute imports only.

    ``import urllib.parse`` binds ``urllib`` to a facade holding only ``parse``; ``from
    urllib.parse import urlencode`` gets the ``urllib.parse`` facade. Every refusal is an
    :class:`ImportDenied` naming the module (and the name, for ``from`` imports).

    The one exception is C code of the standard library importing one of
    :data:`C_LEVEL_IMPORTS` for itself: it gets the already loaded module (never a file
    load), and the script never sees it.
    """
    parents: dict[str, ModuleFacade] = {}
    for dotted, facade in facades.items():
        if "." in dotted:
            head, _, tail = dotted.partition(".")
            parents[head] = ModuleFacade(head, {tail: facade})

    def sandbox_import(
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if (
            type(fromlist) is list
            and fromlist in _C_IMPORT_FROMLISTS
            and name in C_LEVEL_IMPORTS
            and name in sys.modules
        ):
            return sys.modules[name]
        if level != 0:
            raise ImportDenied("relative imports are not allowed", name=str(name))
        if not isinstance(name, str) or name not in facades:
            allowed = ", ".join(sorted(facades))
            raise ImportDenied(
                f"import of module '{name}' is not allowed in scripts (allowed: {allowed})",
                name=str(name),
            )
        facade = facades[name]
        if fromlist:
            for member in fromlist:
                if (
                    not isinstance(member, str)
                    or member.startswith("_")
                    or (member not in facade._members)
                ):
                    raise ImportDenied(
                        f"cannot import '{member}' from module '{name}': not available in scripts",
                        name=name,
                    )
            return facade
        if "." in name:
            return parents[name.partition(".")[0]]
        return facade

    return sandbox_import
