"""Benign controls: ordinary integration-script Python that MUST work in the sandbox, and
the failure kinds a well-meaning script meets (not implemented, script error with line)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from sandbox import errors
from sandbox.capabilities import InMemoryCapabilities
from sandbox.compiler import compile_script
from sandbox.errors import InvalidReturn
from sandbox.execution import execute
from sandbox.world import WorldSpec

Run = Callable[..., Any]


def kind_of(run: Run, source: str, *args: Any) -> errors.SandboxError:
    with pytest.raises(errors.SandboxError) as info:
        run(source, *args)
    return info.value


# Standard library facades


def test_json_round_trip_and_records(run: Run) -> None:
    source = """
        import json
        def f(r):
            text = json.dumps({"r": r, "n": [1, 2]}, sort_keys=True)
            return [text, json.loads('{"a": [1, 2.5, null]}')]
        """
    text, loaded = run(source, {"x": {"y": [1]}})
    assert json.loads(text) == {"n": [1, 2], "r": {"x": {"y": [1]}}}
    assert loaded == {"a": [1, 2.5, None]}


def test_json_decode_error_is_catchable(run: Run) -> None:
    source = """
        import json
        def f():
            try:
                json.loads("{nope")
            except json.JSONDecodeError as e:
                return e.pos
        """
    assert run(source) == 1


def test_re(run: Run) -> None:
    source = """
        import re
        def f():
            m = re.match(r"(?P<user>[a-z]+)@(?P<host>[a-z.]+)", "bob@example.com")
            return [m.group("user"), m["host"], re.sub(r"\\d", "#", "a1b22"),
                    re.findall(r"\\w+", "a b", flags=re.IGNORECASE)]
        """
    assert run(source) == ["bob", "example.com", "a#b##", ["a", "b"]]


def test_hashlib_hmac_base64(run: Run) -> None:
    source = """
        import hashlib, hmac, base64
        def f():
            digest = hmac.new(b"key", b"body", hashlib.sha256).hexdigest()
            same = hmac.compare_digest(digest, hmac.new(b"key", b"body", "sha256").hexdigest())
            return [hashlib.md5(b"x").hexdigest(), same,
                    base64.b64encode(b"user:pass").decode(), base64.b64decode("eA==").decode()]
        """
    md5, same, encoded, decoded = run(source)
    assert md5 == "9dd4e461268c8034f5c8564e155c67a6"
    assert same is True
    assert encoded == "dXNlcjpwYXNz"
    assert decoded == "x"


def test_datetime_and_time(run: Run) -> None:
    source = """
        import datetime, time
        def f():
            start = time.time()
            moment = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
            later = moment + datetime.timedelta(days=1)
            time.sleep(0.001)
            return [later.isoformat(), moment.strftime("%Y/%m/%d"), time.time() >= start,
                    datetime.datetime.fromisoformat("2024-05-06T07:08:09").hour]
        """
    assert run(source) == ["2024-01-03T03:04:05+00:00", "2024/01/02", True, 7]


def test_math_uuid_decimal_random_string(run: Run) -> None:
    source = """
        import math, uuid, decimal, random, string
        def f():
            u = uuid.uuid4()
            d = decimal.Decimal("0.1") + decimal.Decimal("0.2")
            q = decimal.Decimal("2.675").quantize(decimal.Decimal("0.01"),
                                                  rounding=decimal.ROUND_HALF_UP)
            return [math.sqrt(16), math.floor(2.7), len(str(u)), u.version, str(d), str(q),
                    1 <= random.randint(1, 6) <= 6, random.choice(["a"]),
                    string.ascii_lowercase[:3],
                    str(uuid.uuid5(uuid.NAMESPACE_URL, "https://x.test"))[:8]]
        """
    result = run(source)
    assert result[:8] == [4.0, 2, 36, 4, "0.3", "2.68", True, "a"]
    assert result[8] == "abc"
    assert len(result[9]) == 8


def test_urllib_parse_both_import_forms(run: Run) -> None:
    source = """
        import urllib.parse
        from urllib.parse import urlencode, quote
        def f():
            parts = urllib.parse.urlparse("https://api.x.test/v1/items?page=2")
            return [urlencode({"a": 1, "b": "x y"}), quote("a/b c", safe=""),
                    parts.netloc, urllib.parse.parse_qs(parts.query)]
        """
    assert run(source) == ["a=1&b=x+y", "a%2Fb%20c", "api.x.test", {"page": ["2"]}]


def test_collections_itertools_functools(run: Run) -> None:
    source = """
        from collections import Counter, defaultdict, OrderedDict, deque, namedtuple
        import itertools, functools
        def f(items):
            counts = Counter(items)
            groups = defaultdict(list)
            for item in items:
                groups[item].append(1)
            pairs = list(itertools.islice(itertools.count(), 3))
            chunks = [list(c) for _, c in itertools.groupby(sorted(items))]
            total = functools.reduce(lambda a, b: a + b, [1, 2, 3], 0)
            Point = namedtuple("Point", ["x", "y"])
            q = deque([1, 2])
            q.append(3)
            return [counts.most_common(1), dict(groups), pairs, chunks, total,
                    Point(1, 2).x, list(q), list(OrderedDict(a=1))]
        """
    assert run(source, ["b", "a", "b"]) == [
        [["b", 2]],
        {"b": [1, 1], "a": [1]},
        [0, 1, 2],
        [["a"], ["b", "b"]],
        6,
        1,
        [1, 2, 3],
        ["a"],
    ]


# Language features


def test_comprehensions_generators_and_unpacking(run: Run) -> None:
    source = """
        def pages(n):
            for i in range(n):
                yield i * 10
        def f():
            squares = [x * x for x in range(4)]
            evens = {x for x in range(6) if x % 2 == 0}
            index = {k: v for k, v in zip("ab", [1, 2])}
            a, (b, c), *rest = [1, (2, 3), 4, 5]
            return [squares, sorted(evens), index, sum(x for x in range(5)),
                    list(pages(3)), [a, b, c, rest], list(reversed([1, 2])),
                    list(enumerate("xy")), max([3, 1]), any([0, 1]), all([])]
        """
    assert run(source) == [
        [0, 1, 4, 9],
        [0, 2, 4],
        {"a": 1, "b": 2},
        10,
        [0, 10, 20],
        [1, 2, 3, [4, 5]],
        [2, 1],
        [[0, "x"], [1, "y"]],
        3,
        True,
        True,
    ]


def test_augmented_assignment_on_items_and_attributes(run: Run) -> None:
    source = """
        class Tally:
            def __init__(self):
                self.count = 0
        def f(events):
            stats = {"sent": 0, "opened": 0}
            tally = Tally()
            for event in events:
                stats[event.kind] += 1
                tally.count += 1
            names = ["a"]
            names += ["b"]
            return [stats, tally.count, names]
        """
    events = [{"kind": "sent"}, {"kind": "sent"}, {"kind": "opened"}]
    assert run(source, events) == [{"sent": 2, "opened": 1}, 3, ["a", "b"]]


def test_try_except_finally_and_raise(run: Run) -> None:
    source = """
        class ServiceError(Exception):
            def __init__(self, message, code):
                self.code = code
        def f():
            trail = []
            try:
                try:
                    raise ServiceError("bad", 42)
                finally:
                    trail.append("finally")
            except ServiceError as e:
                trail.append(e.code)
            return trail
        """
    assert run(source) == ["finally", 42]


def test_classes_fstrings_string_methods(run: Run) -> None:
    source = """
        class Client:
            base = "https://api.x.test"
            def __init__(self, key):
                self.key = key
            def url(self, path):
                return f"{self.base}/{path.strip('/')}"
        def f():
            c = Client("k")
            c.key = "k2"
            name = "  Mixed Case  "
            return [c.url("/v1/x/"), c.key, name.strip().lower(), ",".join(["a", "b"]),
                    "a-b".split("-"), f"{3.14159:.2f}", "%s=%d" % ("n", 5),
                    isinstance(c, Client), getattr(c, "missing", "default")]
        """
    assert run(source) == [
        "https://api.x.test/v1/x",
        "k2",
        "mixed case",
        "a,b",
        ["a", "b"],
        "3.14",
        "n=5",
        True,
        "default",
    ]


def test_module_level_state_and_global(run: Run) -> None:
    source = """
        calls = 0
        def bump():
            global calls
            calls += 1
        def f():
            bump()
            bump()
            return calls
        """
    assert run(source) == 2


# Records, enums, record types, constants


def test_records_attribute_and_item_access(run: Run) -> None:
    source = """
        def f(request):
            first = request.contacts[0]
            return [request.campaignId, request["campaignId"], first.email,
                    first["tags"][1], request.get("missing", "dflt"), "campaignId" in request,
                    sorted(request.keys()), len(request.contacts), request.meta.to_dict(),
                    [c.email for c in request.contacts]]
        """
    request = {
        "campaignId": "c1",
        "meta": {"a": 1},
        "contacts": [{"email": "a@x.test", "tags": ["t1", "t2"]}, {"email": "b@x.test"}],
    }
    assert run(source, request) == [
        "c1",
        "c1",
        "a@x.test",
        "t2",
        "dflt",
        True,
        ["campaignId", "contacts", "meta"],
        2,
        {"a": 1},
        ["a@x.test", "b@x.test"],
    ]


def test_records_come_back_as_plain_data(run: Run) -> None:
    source = """
        def f(request):
            return {"echo": request, "tuple": (1, 2), "items": request.contacts}
        """
    request = {"contacts": [{"id": 1}]}
    assert run(source, request) == {"echo": request, "tuple": [1, 2], "items": [{"id": 1}]}


def test_record_missing_field_is_attribute_error(run: Run) -> None:
    error = kind_of(run, "def f(r):\n    return r.nope\n", {"a": 1})
    assert error.kind == "script_error"
    assert "AttributeError" in error.message
    assert "nope" in error.message


def test_enums_record_types_constants(run: Run) -> None:
    source = """
        def f():
            stats = Stats(sent=3)
            stats["total"] = 5
            return [Status.Sent, Status.Sent == "Sent", "Draft" in Status, list(Status),
                    stats, Template(externalId="t1", name="T"), PAGE_SIZE, LIMITS["max"]]
        """
    assert run(source) == [
        "Sent",
        True,
        True,
        ["Sent", "Draft"],
        {"total": 5, "sent": 3},
        {"externalId": "t1", "name": "T"},
        50,
        3,
    ]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [("Stats(bogus=1)", "bogus"), ("Stats(1)", "keyword arguments only")],
)
def test_record_type_rejects_unknown_fields_and_positionals(
    run: Run, call: str, fragment: str
) -> None:
    error = kind_of(run, f"def f():\n    return {call}\n")
    assert error.kind == "script_error"
    assert "TypeError" in error.message
    assert fragment in error.message


def test_constants_are_fresh_per_invocation(caps: InMemoryCapabilities, spec: WorldSpec) -> None:
    compiled = compile_script("def f():\n    LIMITS['max'] += 1\n    return LIMITS['max']\n")
    assert execute(compiled, "f", [], {}, caps, spec) == 4
    assert execute(compiled, "f", [], {}, caps, spec) == 4
    assert spec.constants["LIMITS"] == {"max": 3}


def test_world_spec_round_trips_through_json() -> None:
    spec = WorldSpec(
        enums={"S": {"A": "a"}},
        record_types={"R": ["x"], "D": {"y": 0}},
        constants={"C": [1, {"k": None}]},
        namespaces={"crm": ["contacts"]},
    )
    again = WorldSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize(
    "data",
    [
        {"constants": {"_hidden": 1}},
        {"constants": {"a__b": 1}},
        {"enums": {"S": {"A": 1}}},
        {"constants": {"x": 1}, "enums": {"x": {}}},
        {"unknown": {}},
        {"constants": {"x": object()}},
    ],
)
def test_world_spec_rejects_bad_data(data: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        WorldSpec.from_dict(data)


def test_world_spec_cannot_redefine_builtins(caps: InMemoryCapabilities) -> None:
    with pytest.raises(ValueError, match="fetch"):
        execute(
            compile_script("def f():\n    pass\n"),
            "f",
            [],
            {},
            caps,
            WorldSpec(constants={"fetch": 1}),
        )


# Capabilities


def test_settings_read(run: Run) -> None:
    source = """
        def f():
            return [settings["api_key"], settings.get("region"), settings.get("x", 1),
                    settings.api_key, "api_key" in settings]
        """
    assert run(source) == ["secret-key", "eu", 1, "secret-key", True]


def test_storage_get_set_delete(run: Run, caps: InMemoryCapabilities) -> None:
    source = """
        def f():
            before = storage.get("cursor", "none")
            storage.set("cursor", {"page": 2, "ids": (1, 2)})
            value = storage.get("cursor")
            value["page"] = 3
            storage.set("gone", 1)
            storage.delete("gone")
            return [before, storage.get("cursor"), storage.get("gone")]
        """
    assert run(source) == ["none", {"page": 2, "ids": [1, 2]}, None]
    assert caps.stored == {"cursor": {"page": 2, "ids": [1, 2]}}


def test_storage_refuses_non_json_values(run: Run) -> None:
    error = kind_of(run, "def f():\n    storage.set('k', f)\n")
    assert error.kind == "script_error"
    assert "storage value" in error.message


def test_storage_quota_failure_keeps_its_kind(caps: InMemoryCapabilities) -> None:
    def full(key: str, value: Any) -> None:
        raise errors.LimitExceeded("storage quota of 10 bytes exceeded")

    caps.storage_set = full  # type: ignore[method-assign]
    compiled = compile_script("def f():\n    storage.set('k', 'x' * 100)\n")
    with pytest.raises(errors.LimitExceeded, match="quota"):
        execute(compiled, "f", [], {}, caps, None)


def test_fetch_through_fake_capability(caps: InMemoryCapabilities, run: Run) -> None:
    def handler(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": 201,
            "statusText": "Created",
            "headers": {"Content-Type": "application/json"},
            "url": request["url"],
            "body": json.dumps({"echo": json.loads(request["body"])}),
        }

    caps.fetch_handler = handler
    source = """
        def f():
            r = fetch("https://api.x.test/items", method="post",
                      headers={"Authorization": "Bearer " + settings.api_key},
                      json={"name": "n"}, timeout=5)
            return [r.ok, r.status, r.statusText, r.headers["content-type"], r.url,
                    r.json()["echo"], r.text()[:8]]
        """
    assert run(source) == [
        True,
        201,
        "Created",
        "application/json",
        "https://api.x.test/items",
        {"name": "n"},
        '{"echo":',
    ]
    assert caps.requests == [
        {
            "method": "POST",
            "url": "https://api.x.test/items",
            "headers": {"Authorization": "Bearer secret-key", "Content-Type": "application/json"},
            "body": '{"name": "n"}',
            "timeout": 5.0,
        }
    ]


def test_denied_fetch_is_catchable_in_the_script(run: Run) -> None:
    source = """
        def f():
            try:
                fetch("http://169.254.169.254/latest")
            except EgressDenied as e:
                return ["denied", e.kind, isinstance(e, FetchError)]
        """
    assert run(source) == ["denied", "egress_denied", True]


def test_uncaught_denied_fetch_keeps_kind_and_line(run: Run) -> None:
    source = """
        def f():
            x = 1
            return fetch("http://10.0.0.1/")
        """
    with pytest.raises(errors.EgressDenied) as info:
        run(source)
    assert info.value.line == 4


def test_fetch_limit_is_catchable_as_limit_and_fetch_error(caps: InMemoryCapabilities) -> None:
    def too_many(request: dict[str, Any]) -> dict[str, Any]:
        raise errors.LimitExceeded("more than 50 fetch calls")

    caps.fetch_handler = too_many
    source = """
        def f():
            try:
                fetch("https://x.test")
            except LimitExceeded as e:
                return [isinstance(e, FetchError), e.kind]
        """
    assert execute(compile_script(textwrap.dedent(source)), "f", [], {}, caps, None) == [
        True,
        "limit_exceeded",
    ]


def test_network_failure_is_fetch_error_script_error(caps: InMemoryCapabilities) -> None:
    def broken(request: dict[str, Any]) -> dict[str, Any]:
        raise ConnectionResetError("peer reset")

    caps.fetch_handler = broken
    with pytest.raises(errors.ScriptError, match="FetchError: fetch failed: ConnectionResetError"):
        execute(compile_script("def f():\n    fetch('https://x.test')\n"), "f", [], {}, caps, None)


def test_host_callback_namespace(caps: InMemoryCapabilities, run: Run) -> None:
    caps.handlers["crm.contacts"] = lambda ids: [{"id": i, "email": f"{i}@x.test"} for i in ids]
    source = """
        def f(ids):
            contacts = crm.contacts(ids)
            contacts[0]["seen"] = True
            return contacts
        """
    assert run(source, [1, 2]) == [
        {"id": 1, "email": "1@x.test", "seen": True},
        {"id": 2, "email": "2@x.test"},
    ]


def test_log_and_print_are_captured(run: Run, caps: InMemoryCapabilities) -> None:
    source = """
        def f(r):
            log("starting", 1, r)
            print("a", "b", sep="-")
            print("done")
            return printed
        """
    assert run(source, {"k": "v"}) == "a-b\ndone\n"
    assert caps.logs == ["starting 1 {'k': 'v'}", "a-b", "done"]


# Failure kinds of a well-meaning script


def test_not_implemented_error_is_not_implemented(run: Run) -> None:
    error = kind_of(run, "def f():\n    raise NotImplementedError\n")
    assert isinstance(error, errors.NotImplementedFunction)
    assert "f" in error.message


def test_missing_function_is_not_implemented(run: Run) -> None:
    with pytest.raises(errors.NotImplementedFunction, match="does not implement g"):
        run("def f():\n    pass\n", function="g")


def test_name_bound_to_non_function_is_not_implemented(run: Run) -> None:
    with pytest.raises(errors.NotImplementedFunction):
        run("g = 5\n", function="g")


def test_script_exception_has_type_message_and_script_line(run: Run) -> None:
    source = """
        def helper(d):
            return d["missing"]

        def f():
            return helper({})
        """
    error = kind_of(run, source)
    assert type(error) is errors.ScriptError
    assert error.message == "KeyError: 'missing'"
    assert error.line == 3


def test_module_body_failure_is_script_error_with_line(run: Run) -> None:
    error = kind_of(run, "x = 1\ny = x / 0\ndef f():\n    pass\n")
    assert type(error) is errors.ScriptError
    assert error.line == 2
    assert error.message.startswith("ZeroDivisionError")


def test_wrong_arguments_point_at_the_function(run: Run) -> None:
    error = kind_of(run, "\n\ndef f(a, b):\n    pass\n", 1)
    assert type(error) is errors.ScriptError
    assert "TypeError" in error.message
    assert error.line == 3  # no frame of the script ran: the def line


def test_invalid_return_names_the_path(run: Run) -> None:
    with pytest.raises(InvalidReturn) as info:
        run("import datetime\ndef f():\n    return {'a': [1, datetime.date(2024, 1, 1)]}\n")
    assert info.value.kind == "invalid_return"
    assert "$.a[1]" in info.value.message
    assert "date" in info.value.message


def test_non_json_argument_is_the_callers_error(run: Run) -> None:
    with pytest.raises(TypeError):
        run("def f(x):\n    return x\n", object())


def test_worker_interruptions_pass_through_untouched(caps: InMemoryCapabilities) -> None:
    """A BaseException the script cannot name (the worker's CPU-time signal) must leave
    execute() as itself, even through ``except Exception`` in the script."""

    class WorkerInterrupt(BaseException):
        pass

    def interrupt(request: dict[str, Any]) -> dict[str, Any]:
        raise WorkerInterrupt()

    caps.fetch_handler = interrupt
    source = """
        def f():
            try:
                fetch("https://x.test")
            except Exception:
                return "swallowed"
        """
    with pytest.raises(WorkerInterrupt):
        execute(compile_script(textwrap.dedent(source)), "f", [], {}, caps, None)


def test_sleep_budget_is_per_invocation(caps: InMemoryCapabilities) -> None:
    compiled = compile_script("import time\ndef f(s):\n    time.sleep(s)\n    return s\n")
    assert execute(compiled, "f", [0.01], {}, caps, None) == 0.01
    with pytest.raises(errors.LimitExceeded, match="sleep budget"):
        execute(compiled, "f", [10], {}, caps, None)
    assert execute(compiled, "f", [0.01], {}, caps, None) == 0.01
