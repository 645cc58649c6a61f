"""Real attacks on the language layer: each must FAIL, and with the kind it is meant to.

Every case is a script defining ``f(r)``, called with a read-only record. ``outcome`` compiles
and runs it and returns the failure kind, or fails the test if the script succeeded. Kinds:
``policy_violation`` at compile time (``compile:policy_violation``) or at run time, or the
run-time kind (``script_error`` when the door simply does not exist, e.g. ``NameError``).

Sources: RestrictedPython advisories CVE-2023-37271, CVE-2023-41039, CVE-2024-47532,
CVE-2025-22153, CVE-2026-76825 and the 8.3 positional-only shadowing fix; the classic
introspection walks; and this sandbox's own surface (facades, records, capabilities).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from sandbox.capabilities import InMemoryCapabilities
from sandbox.compiler import compile_script
from sandbox.errors import SandboxError, ScriptCompileError
from sandbox.execution import execute
from sandbox.world import WorldSpec

RECORD = {"a": 1, "nested": {"b": [1, {"c": 2}]}}


def respond(request: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "statusText": "OK", "headers": {}, "url": request["url"], "body": "{}"}


def outcome(source: str) -> str:
    caps = InMemoryCapabilities(
        settings={"api_key": "secret"},
        fetch_handler=respond,
        handlers={"crm.contacts": lambda ids: [{"id": i} for i in ids]},
    )
    spec = WorldSpec(enums={"Status": {"Sent": "Sent"}}, namespaces={"crm": ["contacts"]})
    try:
        compiled = compile_script(textwrap.dedent(source))
    except ScriptCompileError as error:
        return f"compile:{error.kind}"
    try:
        value = execute(compiled, "f", [RECORD], {}, caps, spec)
    except SandboxError as error:
        return error.kind
    pytest.fail(f"attack succeeded and returned {value!r}")


PV = "policy_violation"
CPV = "compile:policy_violation"
SE = "script_error"

ATTACKS: list[tuple[str, str, str]] = [
    # CVE-2023-37271: generator/frame internals reach the caller's globals
    (
        "gen-gi_frame-f_back",
        CPV,
        """
        def f(r):
            g = (x for x in [1])
            return g.gi_frame.f_back.f_back.f_globals
        """,
    ),
    (
        "gen-getattr-gi_frame",
        PV,
        """
        def f(r):
            g = (x for x in [1])
            return getattr(g, "gi_" + "frame")
        """,
    ),
    (
        "genfunc-gi_code",
        CPV,
        """
        def gen():
            yield 1
        def f(r):
            return gen().gi_code
        """,
    ),
    (
        "genfunc-getattr-gi_code",
        PV,
        """
        def gen():
            yield 1
        def f(r):
            return getattr(gen(), "gi_code").co_consts
        """,
    ),
    (
        "gen-getattr-gi_yieldfrom",
        PV,
        """
        def f(r):
            return getattr((x for x in [1]), "gi_yieldfrom")
        """,
    ),
    (
        "getattr-cr_frame",
        PV,
        """
        def f(r):
            return getattr((x for x in [1]), "cr_frame")
        """,
    ),
    (
        "getattr-ag_frame",
        PV,
        """
        def f(r):
            return getattr((x for x in [1]), "ag_frame")
        """,
    ),
    (
        "getattr-f_back-on-anything",
        PV,
        """
        def f(r):
            return getattr(r, "f_back")
        """,
    ),
    # tracebacks and frames from exceptions
    (
        "exception-__traceback__",
        CPV,
        """
        def f(r):
            try:
                1 / 0
            except ZeroDivisionError as e:
                return e.__traceback__.tb_frame.f_globals
        """,
    ),
    (
        "exception-getattr-__traceback__",
        PV,
        """
        def f(r):
            try:
                1 / 0
            except ZeroDivisionError as e:
                return getattr(e, "__traceback__")
        """,
    ),
    (
        "exception-getattr-__context__",
        PV,
        """
        def f(r):
            try:
                try:
                    1 / 0
                except ZeroDivisionError:
                    raise ValueError("x")
            except ValueError as e:
                return getattr(e, "__con" + "text__")
        """,
    ),
    (
        "import-sys-exc_info",
        PV,
        """
        def f(r):
            import sys
            return sys.exc_info()
        """,
    ),
    (
        "tb_frame-via-with_traceback",
        PV,
        """
        def f(r):
            try:
                1 / 0
            except ZeroDivisionError as e:
                return getattr(e.with_traceback(None), "tb_frame")
        """,
    ),
    # CVE-2023-41039 and CVE-2026-76825: format traversal
    (
        "str-format-class",
        CPV,
        """
        def f(r):
            return "{0.__class__.__base__}".format(r)
        """,
    ),
    (
        "str-format_map",
        CPV,
        """
        def f(r):
            return "{a.__class__}".format_map({"a": 1})
        """,
    ),
    (
        "getattr-format",
        PV,
        """
        def f(r):
            return getattr("{0.__class__}", "for" + "mat")(1)
        """,
    ),
    (
        "str-type-format",
        CPV,
        """
        def f(r):
            return str.format("{0.__class__}", 1)
        """,
    ),
    (
        "string-Formatter-import",
        PV,
        """
        def f(r):
            from string import Formatter
            return Formatter().vformat("{0.__class__}", [1], {})
        """,
    ),
    (
        "string-Formatter-attribute",
        SE,
        """
        def f(r):
            import string
            return string.Formatter().vformat("{0.__class__}", [1], {})
        """,
    ),
    (
        "builtin-format-has-no-fields",
        SE,
        """
        def f(r):
            return format(1, "{0.__class__}")
        """,
    ),
    (
        "fstring-dunder",
        CPV,
        """
        def f(r):
            return f"{r.__class__}"
        """,
    ),
    # CVE-2024-47532: AttributeError.obj hands out the object a lookup failed on
    (
        "attributeerror-obj",
        PV,
        """
        def f(r):
            try:
                r.missing_field
            except AttributeError as e:
                return e.obj
        """,
    ),
    (
        "attributeerror-getattr-obj",
        PV,
        """
        def f(r):
            try:
                (1).nope
            except AttributeError as e:
                return getattr(e, "obj")
        """,
    ),
    # CVE-2025-22153: try/except* type confusion
    (
        "try-except-star",
        CPV,
        """
        def f(r):
            try:
                raise ValueError("x")
            except* ValueError as eg:
                return eg
        """,
    ),
    (
        "exceptiongroup-unavailable",
        SE,
        """
        def f(r):
            return ExceptionGroup("x", [ValueError()]).exceptions
        """,
    ),
    # RestrictedPython 8.3: positional-only parameters shadowing guards
    (
        "posonly-shadows-_getattr_",
        CPV,
        """
        def f(r, _getattr_=None, /):
            return r.a
        """,
    ),
    # shadowing the guards in every binding form
    (
        "assign-_getattr_",
        CPV,
        """
        _getattr_ = getattr
        def f(r):
            return r.a
        """,
    ),
    (
        "default-arg-_getattr_",
        CPV,
        """
        def f(r, _getattr_=getattr):
            return r.a
        """,
    ),
    (
        "lambda-arg-_getattr_",
        CPV,
        """
        def f(r):
            return (lambda _getattr_: r.a)(getattr)
        """,
    ),
    (
        "comprehension-_write_",
        CPV,
        """
        def f(r):
            return [r.a for _write_ in [1]]
        """,
    ),
    (
        "class-body-_getattr_",
        CPV,
        """
        class A:
            _getattr_ = getattr
        def f(r):
            return 1
        """,
    ),
    (
        "import-as-_print_",
        CPV,
        """
        from json import dumps as _print_
        def f(r):
            return 1
        """,
    ),
    (
        "except-as-_getitem_",
        CPV,
        """
        def f(r):
            try:
                pass
            except Exception as _getitem_:
                pass
        """,
    ),
    (
        "walrus-_getiter_",
        CPV,
        """
        def f(r):
            return (_getiter_ := iter)
        """,
    ),
    (
        "keyword-_getattr_",
        CPV,
        """
        def f(r):
            return dict(_getattr_=1)
        """,
    ),
    (
        "global-_write_",
        CPV,
        """
        def f(r):
            global _write_
            _write_ = 1
        """,
    ),
    (
        "metaclass-keyword",
        CPV,
        """
        class A(metaclass=type):
            pass
        def f(r):
            return 1
        """,
    ),
    # introspection walks
    (
        "tuple-class-bases-subclasses",
        CPV,
        """
        def f(r):
            return ().__class__.__bases__[0].__subclasses__()
        """,
    ),
    (
        "getattr-class-walk",
        PV,
        """
        def f(r):
            return getattr(getattr((), "__cla" + "ss__"), "__bases__")
        """,
    ),
    (
        "object-subclasses",
        CPV,
        """
        def f(r):
            return object.__subclasses__()
        """,
    ),
    (
        "getattr-object-subclasses",
        PV,
        """
        def f(r):
            return getattr(object, "__subclasses__")()
        """,
    ),
    (
        "type-builtin-absent",
        SE,
        """
        def f(r):
            return type(r)
        """,
    ),
    (
        "mro-attribute",
        CPV,
        """
        def f(r):
            return int.mro()
        """,
    ),
    (
        "getattr-mro",
        PV,
        """
        def f(r):
            return getattr(int, "mro")()
        """,
    ),
    (
        "vars-absent",
        SE,
        """
        def f(r):
            return vars(r)
        """,
    ),
    (
        "dir-absent",
        SE,
        """
        def f(r):
            return dir(r)
        """,
    ),
    (
        "globals-absent",
        SE,
        """
        def f(r):
            return globals()
        """,
    ),
    (
        "locals-absent",
        SE,
        """
        def f(r):
            return locals()
        """,
    ),
    (
        "builtins-name",
        CPV,
        """
        def f(r):
            return __builtins__
        """,
    ),
    (
        "function-globals",
        PV,
        """
        def f(r):
            return getattr(f, "__glo" + "bals__")
        """,
    ),
    (
        "builtin-__self__",
        PV,
        """
        def f(r):
            return getattr(len, "__self__")
        """,
    ),
    (
        "partial-getattr-dunder",
        PV,
        """
        import functools
        def f(r):
            return functools.partial(getattr, (), "__class__")()
        """,
    ),
    (
        "map-getattr-dunder",
        PV,
        """
        def f(r):
            return list(map(getattr, [()], ["__class__"]))
        """,
    ),
    (
        "super-dunder",
        CPV,
        """
        def f(r):
            return super(dict, {}).__init__
        """,
    ),
    (
        "namedtuple-dunder-field",
        SE,
        """
        import collections
        def f(r):
            return collections.namedtuple("P", ["__class__"])
        """,
    ),
    # code execution builtins
    (
        "exec",
        CPV,
        """
        def f(r):
            exec("import os")
        """,
    ),
    (
        "eval",
        CPV,
        """
        def f(r):
            return eval("1")
        """,
    ),
    (
        "compile-absent",
        SE,
        """
        def f(r):
            return compile("1", "x", "eval")
        """,
    ),
    (
        "open-absent",
        SE,
        """
        def f(r):
            return open("/etc/passwd").read()
        """,
    ),
    (
        "dunder-import",
        CPV,
        """
        def f(r):
            return __import__("os")
        """,
    ),
    (
        "setattr-builtin-type",
        SE,
        """
        def f(r):
            setattr(dict, "x", 1)
        """,
    ),
    (
        "setattr-dunder",
        PV,
        """
        def f(r):
            setattr(f, "__defaults__", (1,))
        """,
    ),
    (
        "systemexit-absent",
        SE,
        """
        def f(r):
            raise SystemExit(0)
        """,
    ),
    (
        "baseexception-subclass-is-contained",
        SE,
        """
        class Escape(BaseException):
            pass
        def f(r):
            raise Escape("out")
        """,
    ),
]

MODULES = [
    "os", "sys", "subprocess", "socket", "importlib", "ctypes", "pickle",
    "operator", "io", "posix", "inspect", "gc", "types", "threading", "signal", "shutil",
    "urllib", "urllib.request", "json.decoder", "collections.abc", "re._parser", "enum",
]  # fmt: skip

LEAKS: list[tuple[str, str, str]] = [
    ("from-os-import", PV, "from os import system\ndef f(r):\n    return system\n"),
    ("from-urllib-import-request", PV, "from urllib import request\ndef f(r):\n    return 1\n"),
    ("from-json-import-decoder", PV, "from json import decoder\ndef f(r):\n    return 1\n"),
    ("from-collections-import-abc", PV, "from collections import abc\ndef f(r):\n    return 1\n"),
    (
        "from-functools-singledispatch",
        PV,
        "from functools import singledispatch\ndef f(r):\n    return 1\n",
    ),
    ("relative-import", PV, "from . import x\ndef f(r):\n    return 1\n"),
    ("re-enum-sys-modules", SE, "import re\ndef f(r):\n    return re.enum.sys.modules\n"),
    ("getattr-re-enum", SE, "import re\ndef f(r):\n    return getattr(re, 'enum')\n"),
    ("json-decoder-attribute", SE, "import json\ndef f(r):\n    return json.decoder\n"),
    ("json-encoder-class", SE, "import json\ndef f(r):\n    return json.JSONEncoder\n"),
    ("json-dumps-cls", SE, "import json\ndef f(r):\n    return json.dumps(1, cls=dict)\n"),
    ("datetime-sys", SE, "import datetime\ndef f(r):\n    return datetime.sys\n"),
    ("random-_os", CPV, "import random\ndef f(r):\n    return random._os\n"),
    ("getattr-random-_inst", PV, "import random\ndef f(r):\n    return getattr(random, '_inst')\n"),
    (
        "collections-abc-attribute",
        SE,
        "import collections\ndef f(r):\n    return collections.abc\n",
    ),
    ("functools-wraps", SE, "import functools\ndef f(r):\n    return functools.wraps\n"),
    ("uuid1-mac-address", SE, "import uuid\ndef f(r):\n    return str(uuid.uuid1())\n"),
    ("decimal-getcontext", SE, "import decimal\ndef f(r):\n    return decimal.getcontext()\n"),
    ("time-sleep-over-budget", "limit_exceeded", "import time\ndef f(r):\n    time.sleep(3600)\n"),
    ("facade-mutation", SE, "import json\ndef f(r):\n    json.dumps = None\n"),
    ("facade-setattr", SE, "import json\ndef f(r):\n    setattr(json, 'loads', len)\n"),
    ("facade-private", PV, "import json\ndef f(r):\n    return getattr(json, '_members')\n"),
]

#: ``typing`` is an inert stub: whatever evaluates strings or inspects objects is absent, and
#: annotations (the strings an evaluator would run) are dropped by the compiler
TYPING: list[tuple[str, str, str]] = [
    ("typing-get_type_hints", PV, "from typing import get_type_hints\ndef f(r):\n    return 1\n"),
    ("typing-ForwardRef", PV, "from typing import ForwardRef\ndef f(r):\n    return 1\n"),
    (
        "typing-attribute-get_type_hints",
        SE,
        "import typing\ndef f(r):\n    return typing.get_type_hints(f)\n",
    ),
    (
        "typing-attribute-ForwardRef",
        SE,
        'import typing\ndef f(r):\n    return typing.ForwardRef("1")\n',
    ),
    ("typing-get_args", PV, "from typing import get_args\ndef f(r):\n    return 1\n"),
    ("typing-sys", SE, "import typing\ndef f(r):\n    return typing.sys.modules\n"),
    ("typing-private", PV, "import typing\ndef f(r):\n    return getattr(typing, '_members')\n"),
    (
        "typing-name-private",
        PV,
        "import typing\ndef f(r):\n    return getattr(typing.Any, '_name')\n",
    ),
    ("typing-name-mutation", SE, "import typing\ndef f(r):\n    typing.Any.x = 1\n"),
    (
        "annotations-dict-of-function",
        CPV,
        'def f(r: "__import__(\'os\')") -> "x":\n    return f.__annotations__\n',
    ),
    (
        "annotation-expression-never-runs",
        SE,
        """
        calls = []
        def f(r: calls.append(1) or int) -> calls.append(2):
            x: calls.append(3) = 1
            y: calls.append(4)
            if calls:
                return 1
            raise ValueError("no annotation ran")
        """,
    ),
    (
        "string-annotation-never-evaluated",
        SE,
        """
        from typing import cast
        def f(r: "__import__('os').system('id')") -> "open('/etc/passwd')":
            v: "__import__('os')" = cast("__import__('os')", None)
            raise ValueError(str(v))
        """,
    ),
    (
        "annotated-target-still-guarded",
        SE,
        "def f(r):\n    r.a: int = 2\n",
    ),
    ("annotated-private-name", CPV, "def f(r):\n    _x: int = 1\n"),
    ("annotated-dunder-target", CPV, "def f(r):\n    r.__class__: int = 1\n"),
    (
        "namedtuple-string-field-type",
        SE,
        """
        from typing import NamedTuple
        def f(r):
            P = NamedTuple("P", [("x", "__import__('os')")])
            return getattr(P, "annotations")
        """,
    ),
    (
        "namedtuple-class-form",
        SE,
        "from typing import NamedTuple\nclass P(NamedTuple):\n    x: 'os'\ndef f(r):\n    return 1\n",
    ),
    (
        "typeddict-string-field-evaluated",
        SE,
        """
        from typing import TypedDict
        class Row(TypedDict):
            x: "__import__('os')"
        def f(r):
            raise ValueError(str(Row(x=1)))
        """,
    ),
    (
        "typeddict-functional-hints",
        SE,
        """
        from typing import TypedDict
        Row = TypedDict("Row", {"x": "__import__('os')"})
        def f(r):
            return getattr(Row, "annotations")
        """,
    ),
    (
        "cast-returns-host-objects-unchanged",
        SE,
        "from typing import cast\ndef f(r):\n    cast(int, r).a = 1\n",
    ),
]

LENT_OBJECTS: list[tuple[str, str, str]] = [
    ("settings-item-assignment", SE, "def f(r):\n    settings['api_key'] = 'x'\n"),
    ("settings-attribute-assignment", SE, "def f(r):\n    settings.api_key = 'x'\n"),
    ("settings-delete", SE, "def f(r):\n    del settings['api_key']\n"),
    ("settings-setattr", SE, "def f(r):\n    setattr(settings, 'api_key', 'x')\n"),
    ("settings-private-data", PV, "def f(r):\n    return getattr(settings, '_data')\n"),
    ("settings-augmented", SE, "def f(r):\n    settings['api_key'] += 'x'\n"),
    ("enum-member-assignment", SE, "def f(r):\n    Status.Sent = 'Hacked'\n"),
    ("enum-private-members", PV, "def f(r):\n    return getattr(Status, '_members')\n"),
    ("record-item-assignment", SE, "def f(r):\n    r['a'] = 2\n"),
    ("record-nested-assignment", SE, "def f(r):\n    r.nested.b[1]['c'] = 3\n"),
    ("record-attribute-assignment", SE, "def f(r):\n    r.a = 2\n"),
    ("record-dict", CPV, "def f(r):\n    return r.__dict__\n"),
    ("record-private-data", PV, "def f(r):\n    return getattr(r, '_data')\n"),
    ("record-method-self", CPV, "def f(r):\n    return r.get.__self__\n"),
    ("record-list-private", PV, "def f(r):\n    return getattr(r.nested.b, '_items')\n"),
    (
        "fetch-response-private",
        PV,
        "def f(r):\n    return getattr(fetch('https://x.test'), '_body')\n",
    ),
    ("fetch-response-class", CPV, "def f(r):\n    return fetch('https://x.test').__class__\n"),
    ("fetch-response-mutation", SE, "def f(r):\n    fetch('https://x.test').status = 1\n"),
    (
        "fetch-response-method-func",
        PV,
        "def f(r):\n    return getattr(fetch('https://x.test').json, '__func__')\n",
    ),
    ("fetch-closure", PV, "def f(r):\n    return getattr(fetch, '__closure__')\n"),
    ("storage-private", PV, "def f(r):\n    return getattr(storage, '_capabilities')\n"),
    ("host-function-private", PV, "def f(r):\n    return getattr(crm.contacts, '_call')\n"),
    (
        "capability-error-private",
        PV,
        """
        def f(r):
            try:
                raise FetchError("x")
            except FetchError as e:
                return getattr(e, "_error_class")
        """,
    ),
    ("print-to-file", SE, "def f(r):\n    print('x', file=r)\n"),
]

RESULTS: list[tuple[str, str, str]] = [
    ("return-function", "invalid_return", "def f(r):\n    return f\n"),
    ("return-class", "invalid_return", "class A:\n    pass\ndef f(r):\n    return A\n"),
    ("return-instance", "invalid_return", "def f(r):\n    return object()\n"),
    ("return-facade", "invalid_return", "import json\ndef f(r):\n    return json\n"),
    ("return-cycle", "invalid_return", "def f(r):\n    a = []\n    a.append(a)\n    return a\n"),
    ("return-nan", "invalid_return", "def f(r):\n    return {'x': float('nan')}\n"),
    ("return-non-string-key", "invalid_return", "def f(r):\n    return {1: 'a'}\n"),
    ("return-fetch-response", "invalid_return", "def f(r):\n    return fetch('https://x.test')\n"),
    ("recursion", "limit_exceeded", "def f(r):\n    return f(r)\n"),
    ("huge-range", "limit_exceeded", "def f(r):\n    return len(range(10**12))\n"),
]

ALL = (
    ATTACKS
    + [(f"import-{m}", PV, f"import {m}\ndef f(r):\n    return 1\n") for m in MODULES]
    + [("import-builtins", CPV, "import builtins\ndef f(r):\n    return 1\n")]
    + LEAKS
    + TYPING
    + LENT_OBJECTS
    + RESULTS
)


@pytest.mark.parametrize(("expected", "source"), [(k, s) for _, k, s in ALL],
                         ids=[name for name, _, _ in ALL])  # fmt: skip
def test_attack_fails_with_expected_kind(expected: str, source: str) -> None:
    assert outcome(source) == expected


def test_there_are_enough_attacks() -> None:
    assert len(ALL) >= 45


def test_refused_import_is_catchable_and_names_the_module() -> None:
    caps = InMemoryCapabilities()
    source = """
        def f():
            try:
                import os
            except ImportError as e:
                return str(e)
        """
    message = execute(compile_script(textwrap.dedent(source)), "f", [], {}, caps, None)
    assert "'os'" in message


def test_hasattr_on_dunder_answers_false() -> None:
    source = "def f():\n    return [hasattr((), '__class__'), hasattr((), 'count')]\n"
    assert execute(compile_script(source), "f", [], {}, InMemoryCapabilities(), None) == [
        False,
        True,
    ]


def test_script_exception_message_does_not_carry_host_objects() -> None:
    """A host callback failing with an object in its args reaches the script as a message."""

    class HostThing:
        pass

    def failing(*args: Any) -> Any:
        raise RuntimeError(HostThing())

    caps = InMemoryCapabilities(handlers={"crm.contacts": failing})
    spec = WorldSpec(namespaces={"crm": ["contacts"]})
    source = """
        def f():
            try:
                crm.contacts([1])
            except HostCallError as e:
                return [type_name for type_name in [e.kind, str(e.args[0])]]
        """
    kind, text = execute(compile_script(textwrap.dedent(source)), "f", [], {}, caps, spec)
    assert kind == "host_call_error"
    assert "RuntimeError" in text


def test_world_state_does_not_leak_between_invocations() -> None:
    """Module globals, random seeds and sleep budgets are per invocation."""
    source = textwrap.dedent(
        """
        import random
        seen = []
        def f(x):
            seen.append(x)
            if x == 1:
                random.seed(42)
            return [len(seen), random.random()]
        """
    )
    compiled = compile_script(source)
    caps = InMemoryCapabilities()
    first = execute(compiled, "f", [1], {}, caps, None)
    second = execute(compiled, "f", [2], {}, caps, None)
    third = execute(compiled, "f", [1], {}, caps, None)
    assert first[0] == second[0] == 1
    assert first[1] == third[1]  # seeded identically, own generator
    assert second[1] != first[1]  # not influenced by the earlier seed
