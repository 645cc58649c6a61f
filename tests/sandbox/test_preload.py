"""Every public function of every allow-listed module works in a real worker, including
those that import another module lazily (the worker has dropped its privileges by then and
may not read the interpreter's files): everything they import is preloaded at start-up."""

from __future__ import annotations

import base64
import dis
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.capabilities import InMemoryCapabilities
from sandbox.facades import ALLOWED_MODULES, ModuleFacade
from sandbox.invocation import Invocation
from sandbox.pool import SandboxPool
from sandbox.preload import ALLOWED_STDLIB, NOT_PRELOADED, PRELOAD
from sandbox.world import build_globals


@pytest.fixture(scope="module")
def single() -> Iterator[SandboxPool]:
    with SandboxPool(size=1) as pool:
        yield pool


#: module → (a script body using representative functions, the value it must return)
REPRESENTATIVE: dict[str, tuple[str, Any]] = {
    "collections": (
        "c = collections.Counter('abracadabra')\n"
        "P = collections.namedtuple('P', 'x y')\n"
        "d = collections.deque([1, 2], maxlen=2)\n"
        "d.append(3)\n"
        "return [c.most_common(2), list(P(1, 2)), list(d), "
        "collections.OrderedDict(a=1).popitem(), collections.defaultdict(int)['k']]",
        [[["a", 5], ["b", 2]], [1, 2], [2, 3], ["a", 1], 0],
    ),
    "time": (
        "return [time.strptime('2024-03-01', '%Y-%m-%d').tm_yday, "
        "time.strftime('%Y', time.gmtime(0)), time.monotonic() > 0]",
        [61, "1970", True],
    ),
    "datetime": (
        "d = datetime.datetime.strptime('2024-03-01 10:00', '%Y-%m-%d %H:%M')\n"
        "u = d.replace(tzinfo=datetime.timezone.utc)\n"
        "return [d.isoformat(), u.astimezone(datetime.timezone(datetime.timedelta(hours=3)))"
        ".isoformat(), datetime.date(2024, 1, 1).strftime('%A')]",
        ["2024-03-01T10:00:00", "2024-03-01T13:00:00+03:00", "Monday"],
    ),
    "urllib.parse": (
        "parts = urllib.parse.urlsplit('https://пример.рф/путь?q=1')\n"
        "return [parts.netloc, urllib.parse.parse_qs(parts.query), "
        "urllib.parse.quote('a b/ж'), urllib.parse.urljoin('https://a.test/x/', 'y')]",
        ["пример.рф", {"q": ["1"]}, "a%20b/%D0%B6", "https://a.test/x/y"],
    ),
    "json": ("return json.loads(json.dumps({'a': [1, 2.5]}, indent=1))", {"a": [1, 2.5]}),
    "re": ("return re.sub(r'(\\w+)@', r'\\1 at ', 'ann@x.test', flags=re.I)", "ann at x.test"),
    "math": ("return [math.isclose(math.sqrt(2) ** 2, 2), math.comb(5, 2)]", [True, 10]),
    "hashlib": (
        "return [hashlib.new('sha3_256', b'x').hexdigest()[:8], hashlib.md5(b'x').hexdigest()"
        "[:8], hashlib.pbkdf2_hmac('sha256', b'p', b's', 2).hex()[:8], "
        "hashlib.blake2s(b'x').hexdigest()[:8]]",
        None,
    ),
    "hmac": ("return hmac.new(b'k', b'm', 'sha256').hexdigest()[:12]", None),
    "base64": (
        "return [base64.b85encode(b'hi').decode(), base64.a85decode(b'BOu!rDZ').decode(), "
        "base64.b32encode(b'x').decode()]",
        [base64.b85encode(b"hi").decode(), "hello", "PA======"],
    ),
    "uuid": ("return str(uuid.uuid5(uuid.NAMESPACE_URL, 'x'))[:8]", None),
    "decimal": (
        "q = decimal.Decimal('1.005').quantize(decimal.Decimal('0.01'), decimal.ROUND_HALF_UP)\n"
        "return [str(q), f'{decimal.Decimal(1234.5):,.2f}', "
        "str(decimal.Context(prec=3).divide(1, 3))]",
        ["1.01", "1,234.50", "0.333"],
    ),
    "random": ("return len(random.sample(range(10), 3)) + random.randint(0, 0)", 3),
    "string": (
        "return string.Template('$a-${b}').safe_substitute(a=1) + string.capwords('x y')",
        "1-${b}X Y",
    ),
    "itertools": (
        "return [list(p) for p in itertools.permutations('ab')]",
        [["a", "b"], ["b", "a"]],
    ),
    "functools": (
        "@functools.lru_cache(maxsize=None)\n"
        "def fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "return [fib(30), functools.reduce(lambda a, b: a * b, [1, 2, 3]), "
        "sorted([3, 1], key=functools.cmp_to_key(lambda a, b: a - b))]",
        [832040, 6, [1, 3]],
    ),
    "signatures": ("return signatures.equals('a', 'a')", True),
    "typing": (
        "Row = typing.TypedDict('Row', {'id': int})\n"
        "Point = typing.NamedTuple('Point', [('x', int)])\n"
        "return [typing.cast(typing.List[int], [1]), Row(id=2), Point(3).x, typing.TYPE_CHECKING]",
        [[1], {"id": 2}, 3, False],
    ),
}


def script(module: str, body: str) -> str:
    indented = "\n".join("    " + line for line in body.splitlines())
    return f"import {module}\ndef f():\n{indented}\n"


def test_every_allow_listed_module_has_a_representative_call() -> None:
    assert set(REPRESENTATIVE) == set(ALLOWED_MODULES)
    assert set(ALLOWED_STDLIB) == set(ALLOWED_MODULES) - {"signatures", "typing"}


@pytest.mark.parametrize("module", sorted(REPRESENTATIVE))
def test_representative_functions_work_in_a_worker(single: SandboxPool, module: str) -> None:
    body, expected = REPRESENTATIVE[module]
    result = single.run(Invocation(source=script(module, body), function="f"))
    assert result.error is None, result.error
    if expected is not None:
        assert result.value == expected
    else:
        assert result.value  # a digest: its value is the library's, not ours to pin


@pytest.mark.parametrize(
    ("codec", "text"),
    [
        ("cp1251", "Привет"),
        ("koi8_r", "Привет"),
        ("mac_cyrillic", "Привет"),
        ("shift_jis", "テスト"),
        ("utf_16", "テスト"),
        ("iso8859_15", "Grüße €"),
    ],
)
def test_text_codecs_work_in_a_worker(single: SandboxPool, codec: str, text: str) -> None:
    """Vendors answer in legacy encodings; ``decode`` imports the codec module on first use."""
    source = f"def f():\n    return {text!r}.encode({codec!r}).decode({codec!r})\n"
    result = single.run(Invocation(source=source, function="f"))
    assert (result.error, result.value) == (None, text)


def test_idna_round_trip_in_a_worker(single: SandboxPool) -> None:
    source = "def f():\n    return 'пример.рф'.encode('idna').decode('idna')\n"
    result = single.run(Invocation(source=source, function="f"))
    assert (result.error, result.value) == (None, "пример.рф")


# --- the preload list covers what the facades can import lazily ----------------------------


def _imports_and_callees(function: types.FunctionType, found: set[str], todo: list[Any]) -> None:
    """Add the modules ``function``'s code imports (absolute names; relative ones resolved
    against its package) to ``found``, and what it calls through its globals to ``todo``."""

    def scan(code: types.CodeType) -> None:
        constants: list[Any] = []
        for instruction in dis.get_instructions(code):
            if instruction.opname == "IMPORT_NAME":
                level = constants[-2] if len(constants) >= 2 else 0
                name = str(instruction.argval)
                if level:
                    package = function.__module__.rsplit(".", level)[0]
                    name = f"{package}.{name}" if name else package
                found.add(name)
            elif instruction.opname == "LOAD_GLOBAL":
                value = function.__globals__.get(instruction.argval)
                if isinstance(value, types.ModuleType):
                    todo.extend(
                        v
                        for v in vars(value).values()
                        if getattr(v, "__module__", None) == value.__name__
                    )
                elif value is not None:
                    todo.append(value)
            constants.append(instruction.argval if instruction.opname == "LOAD_CONST" else None)
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                scan(constant)

    scan(function.__code__)


def lazy_imports_of_facades() -> set[str]:
    """Every module named by an ``import`` in the code the facades can run, following the
    globals it calls and whole modules it uses (an over-approximation, by design)."""
    world = build_globals(InMemoryCapabilities())
    todo: list[Any] = []
    for name in ALLOWED_MODULES:
        facade = world["__builtins__"]["__import__"](name, fromlist=None)
        assert isinstance(facade, ModuleFacade)
        todo.extend(facade._members.values())
    found: set[str] = set()
    seen: set[int] = set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, ModuleFacade):  # urllib → urllib.parse
            todo.extend(obj._members.values())
            continue
        obj = getattr(obj, "__wrapped__", obj)
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, type):
            for value in vars(obj).values():
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    todo.extend(f for f in (value.fget, value.fset) if f is not None)
                elif isinstance(value, types.FunctionType):
                    todo.append(value)
        elif isinstance(obj, types.FunctionType):
            _imports_and_callees(obj, found, todo)
    return found


def test_preload_covers_every_lazy_import_of_the_facades() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys\n"
            "from sandbox.preload import preload\n"
            "preload()\n"
            "import sandbox.compiler, sandbox.world\n"
            "print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    preloaded = set(json.loads(loaded.stdout))
    lazy = lazy_imports_of_facades()
    assert {"heapq", "unicodedata"} <= lazy  # most_common, urlsplit: the scan sees them
    missing = sorted(lazy - preloaded - set(NOT_PRELOADED))
    assert missing == []
    assert set(PRELOAD) <= preloaded
