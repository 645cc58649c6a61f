"""Nothing a script can reach is shared mutable state (see the table in sandbox.facades).

Two ways: a walk over everything reachable from two invocations' worlds (every allow-listed
module, every lent object, every builtin), which fails on any object both share unless it is
of an immutable kind; and real cross-invocation attempts in one warm worker — invocation 1
mutates, invocation 2 (same process) must not see it.
"""

from __future__ import annotations

import abc
import datetime
import decimal
import enum
import random
import re
import string
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.capabilities import InMemoryCapabilities
from sandbox.facades import ALLOWED_MODULES, ModuleFacade
from sandbox.invocation import Invocation
from sandbox.policy import attribute_problem
from sandbox.pool import SandboxPool
from sandbox.typing_stub import TypingName
from sandbox.world import WorldSpec, build_globals

SPEC = WorldSpec(
    enums={"Status": {"Sent": "Sent"}},
    record_types={"Stats": {"total": 0, "tags": []}},
    constants={"LIMITS": {"max": [3]}},
    namespaces={"crm": ["contacts"]},
    sdk_module="crm_sdk",
)

#: values nothing can change
IMMUTABLE_VALUES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    type(NotImplemented),
    type(Ellipsis),
    re.Pattern,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.tzinfo,
    decimal.Decimal,
    uuid.UUID,
    enum.Enum,
    TypingName,  # a name in __slots__, writes refused (test_policy_attacks: typing-name-mutation)
)
#: C-level callables and descriptors without state of their own
STATELESS_C_OBJECTS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
)

Path = str


def script_roots(world: dict[str, Any]) -> dict[Path, Any]:
    """What a script starts from: its globals, its builtins, every module it may import."""
    script_import = world["__builtins__"]["__import__"]
    roots: dict[Path, Any] = {k: v for k, v in world.items() if not k.startswith("_")}
    roots |= {k: v for k, v in world["__builtins__"].items() if not k.startswith("_")}
    for name in [*ALLOWED_MODULES, "crm_sdk"]:
        roots[f"import {name}"] = script_import(name)
        if "." in name:
            roots[f"from {name}"] = script_import(name, fromlist=[])
    return roots


def script_attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    """The attributes a script can read (the guards' rules) and the items of containers."""
    if isinstance(obj, (tuple, frozenset, list, set)):
        for index, item in enumerate(obj):
            yield f"[{index}]", item
    if isinstance(obj, (dict, types.MappingProxyType)):
        for key, item in obj.items():
            yield f"[{key!r}]", item
    names = list(obj._members) if isinstance(obj, ModuleFacade) else dir(obj)
    for name in names:
        if attribute_problem(name) is None:
            try:
                yield f".{name}", getattr(obj, name)
            except Exception:  # a property that fails gives the script nothing
                continue


def hidden_state(obj: Any) -> Iterator[tuple[str, Any]]:
    """State a shared callable keeps out of the script's sight but acts on when called."""
    if isinstance(obj, (types.BuiltinMethodType, types.MethodType, types.MethodWrapperType)):
        owner = obj.__self__
        if not isinstance(owner, (types.ModuleType, type)) and owner is not None:
            yield ".__self__", owner
    if isinstance(obj, types.FunctionType):
        for index, cell in enumerate(obj.__closure__ or ()):
            yield f".__closure__[{index}]", cell.cell_contents
        yield ".__defaults__", obj.__defaults__ or ()
        yield ".__kwdefaults__", types.MappingProxyType(obj.__kwdefaults__ or {})
    if isinstance(obj, property):
        yield from ((f".{n}", getattr(obj, n)) for n in ("fget", "fset", "fdel"))


def reachable(world: dict[str, Any]) -> dict[int, tuple[Any, Path]]:
    seen: dict[int, tuple[Any, Path]] = {}
    todo = list(script_roots(world).items())
    while todo:
        path, obj = todo.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = (obj, path)
        if isinstance(obj, IMMUTABLE_VALUES):
            continue  # their attributes are computed values (0.0.imag.imag ... never ends)
        for step, value in [*script_attributes(obj), *hidden_state(obj)]:
            todo.append((path + step, value))
    return seen


#: hidden defaults the standard library compares by identity only, never reads or writes
IDENTITY_SENTINELS = {
    id(string._sentinel_dict): "string.Template.substitute's 'no mapping given' marker",
}


def shared_mutable_problem(obj: Any) -> str | None:
    """Why ``obj``, reached from two invocations, is shared mutable state (None if it is not)."""
    if type(obj) is object or id(obj) in IDENTITY_SENTINELS:
        return None  # a bare marker: no attributes, no items
    if isinstance(obj, type):
        if isinstance(obj, abc.ABCMeta):
            return "an ABC: register() writes into a registry every invocation sees"
        return None
    if isinstance(obj, (tuple, frozenset, types.MappingProxyType, ModuleFacade)):
        return None  # contents are checked one by one
    if isinstance(obj, (*IMMUTABLE_VALUES, *STATELESS_C_OBJECTS)):
        return None
    if isinstance(obj, (types.FunctionType, property, types.BuiltinFunctionType)):
        return None  # their hidden state is walked by hidden_state()
    if isinstance(obj, types.MethodType) and isinstance(obj.__self__, type):
        return None
    return f"a shared {type(obj).__module__}.{type(obj).__qualname__}"


def test_nothing_reachable_is_shared_mutable_state() -> None:
    first = reachable(build_globals(InMemoryCapabilities(), SPEC))
    second = reachable(build_globals(InMemoryCapabilities(), SPEC))
    shared = first.keys() & second.keys()
    assert len(shared) > 500  # the walk did reach the facades' contents
    problems = sorted(
        f"{first[key][1]}: {problem}"
        for key in shared
        if (problem := shared_mutable_problem(first[key][0])) is not None
    )
    assert problems == []


def test_the_walk_finds_shared_state_where_there_is_some() -> None:
    """The detector itself: the containers this issue found (and a seeded generator) are
    reported, so an empty report above means something."""
    assert shared_mutable_problem({"algorithms"}) == "a shared builtins.set"
    assert shared_mutable_problem(random.Random()) == "a shared random.Random"
    assert "register()" in (shared_mutable_problem(abc.ABC) or "")
    holder: list[str] = []

    def remembers(item: str) -> None:
        holder.append(item)

    closure = dict(hidden_state(remembers))[".__closure__[0]"]
    assert closure is holder and shared_mutable_problem(closure) == "a shared builtins.list"


# --- for real: invocation 1 mutates, invocation 2 in the same warm worker must not see it --


@pytest.fixture(scope="module")
def single() -> Iterator[SandboxPool]:
    with SandboxPool(size=1) as pool:
        yield pool


def attempt(body: str) -> str:
    """A script function trying ``body`` and answering 'done' or 'refused'."""
    indented = "\n".join("        " + line for line in body.splitlines())
    return (
        "import hashlib, random, string, decimal, uuid, datetime, collections, json, re\n"
        "import urllib.parse\n"
        "def f():\n"
        "    try:\n"
        f"{indented}\n"
        "    except (AttributeError, TypeError):\n"
        "        return 'refused'\n"
        "    return 'done'\n"
    )


def probe(expression: str) -> str:
    return (
        "import hashlib, random, string, decimal, uuid, datetime, collections, json, re\n"
        "import urllib.parse\n"
        f"def f():\n    return {expression}\n"
    )


LEAKS = [
    pytest.param(
        "hashlib.algorithms_available.add('tenant-a-was-here')",
        "'tenant-a-was-here' in hashlib.algorithms_available",
        False,
        id="hashlib.algorithms_available",
    ),
    pytest.param(
        "hashlib.algorithms_guaranteed.add('tenant-a-was-here')",
        "'tenant-a-was-here' in hashlib.algorithms_guaranteed",
        False,
        id="hashlib.algorithms_guaranteed",
    ),
    pytest.param(
        "random.seed(7)",
        f"random.random() == {random.Random(7).random()!r}",
        False,
        id="random.seed",
    ),
    pytest.param(
        "string.Template.delimiter = '#'",
        "string.Template('$a #a').substitute(a=1)",
        "1 #a",
        id="string.Template",
    ),
    pytest.param(
        "decimal.Decimal.x = 1\ncontext = decimal.Context(prec=3)\ncontext.prec = 2",
        "str(decimal.Decimal(1) / decimal.Decimal(3))",
        "0.3333333333333333333333333333",
        id="decimal context",
    ),
    pytest.param(
        "urllib.parse.urlsplit('https://tenant-a.example/secret')\n"
        "urllib.parse.urlsplit.cache_clear()",
        "hasattr(urllib.parse.urlsplit, 'cache_info')",
        False,
        id="urlsplit cache",
    ),
    pytest.param(
        "collections.Counter.most_common = None",
        "collections.Counter('aab').most_common(1)",
        [["a", 2]],
        id="collections class",
    ),
    pytest.param(
        "uuid.NAMESPACE_DNS.int = 0",
        "str(uuid.uuid5(uuid.NAMESPACE_DNS, 'x'))",
        str(uuid.uuid5(uuid.NAMESPACE_DNS, "x")),
        id="uuid namespace",
    ),
    pytest.param(
        "json.dumps.cache = {}\nre.compile('tenant-a')",
        "hasattr(json.dumps, 'cache') or hasattr(re, 'purge')",
        False,
        id="json/re",
    ),
]


#: the one mutation that is allowed: it changes the invocation's own generator
ALLOWED_MUTATIONS = {"random.seed(7)"}


@pytest.mark.parametrize(("mutate", "observe", "fresh"), LEAKS)
def test_a_mutation_never_reaches_the_next_invocation(
    single: SandboxPool, mutate: str, observe: str, fresh: Any
) -> None:
    first = single.run(Invocation(source=attempt(mutate), function="f"))
    assert first.error is None, first.error
    assert first.value == ("done" if mutate in ALLOWED_MUTATIONS else "refused")
    second = single.run(Invocation(source=probe(observe), function="f"))
    assert second.error is None, second.error
    assert second.value == fresh
    assert first.worker_pid == second.worker_pid
