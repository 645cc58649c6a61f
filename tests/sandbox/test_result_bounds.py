"""What a script sends back is bounded: nesting (64 levels, with its path), text that UTF-8
cannot carry, the result's size (checked in the worker), the log under a flood, and the
parent's memory while it reads one large frame."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc

from sandbox.channel import HEADER, FrameReader
from sandbox.invocation import Invocation
from sandbox.limits import MAX_NESTING_DEPTH, MIB, Limits
from sandbox.pool import SandboxPool

SMALL = Limits(timeout_s=4, cpu_s=2, memory_mb=64)

NESTED = """
def f(levels):
    value = 'leaf'
    for i in range(levels):
        value = {'a': value}
    return value
"""


def call(pool: SandboxPool, source: str, *args: object, limits: Limits = SMALL):
    return pool.run(Invocation(source=source, function="f", args=list(args), limits=limits))


def test_return_values_nest_up_to_the_limit_whatever_the_recursion_budget(
    sandbox_pool: SandboxPool,
) -> None:
    tight = Limits(timeout_s=4, cpu_s=2, memory_mb=64, recursion_depth=30)
    result = call(sandbox_pool, NESTED, MAX_NESTING_DEPTH, limits=tight)
    assert result.ok, result.error
    depth, value = 0, result.value
    while isinstance(value, dict):
        depth, value = depth + 1, value["a"]
    assert (depth, value) == (MAX_NESTING_DEPTH, "leaf")

    result = call(sandbox_pool, NESTED, 90, limits=tight)
    assert not result.ok and result.error is not None
    assert result.error.kind == "invalid_return"
    assert result.error.message.endswith(f": nested deeper than {MAX_NESTING_DEPTH} levels")
    assert "$.a.a.a" in result.error.message and "..." in result.error.message
    assert len(result.error.message) < 250


def test_a_lone_surrogate_is_invalid_return_naming_its_path(sandbox_pool: SandboxPool) -> None:
    result = call(sandbox_pool, "def f():\n    return {'items': ['ok', 'bad \\udc80']}\n")
    assert not result.ok and result.error is not None
    assert result.error.kind == "invalid_return"
    assert "$.items[1]: contains a lone surrogate" in result.error.message
    assert call(sandbox_pool, "def f(x):\n    return x * 2\n", 21).value == 42


def test_result_over_result_bytes_is_limit_exceeded_in_the_worker(
    sandbox_pool: SandboxPool,
) -> None:
    limits = Limits(timeout_s=4, cpu_s=2, memory_mb=64, result_bytes=10_000)
    source = "def f(n):\n    log('made', n)\n    return 'x' * n\n"
    assert call(sandbox_pool, source, 5_000, limits=limits).ok
    result = call(sandbox_pool, source, 20_000, limits=limits)
    assert not result.ok and result.error is not None
    assert result.error.kind == "limit_exceeded"
    assert "more than the limit of 10000 bytes" in result.error.message
    assert result.log == "made 20000\n"  # the call's log survives the refused value


def test_a_flood_of_print_and_one_huge_log_line_keep_the_outcome(
    sandbox_pool: SandboxPool,
) -> None:
    source = (
        "def f():\n"
        "    for i in range(100000):\n"
        "        print('y' * 1000)\n"
        "    log('z' * 30000000)\n"
        "    return 'done'\n"
    )
    result = call(sandbox_pool, source)
    assert result.ok, result.error
    assert result.value == "done"
    assert result.log_truncated
    written = 100000 * 1001 + 30000001
    assert result.log.endswith(f"[log truncated: {written} bytes written, limit 65536 bytes]")


def test_reading_a_large_frame_holds_about_twice_its_size() -> None:
    size = 8 * MIB
    payload = json.dumps({"op": "done", "value": "x" * size}).encode()
    frame = HEADER.pack(len(payload)) + payload
    read_fd, write_fd = os.pipe()

    def write_all() -> None:
        view = memoryview(frame)
        while view:
            view = view[os.write(write_fd, view) :]
        os.close(write_fd)

    writer = threading.Thread(target=write_all)
    reader = FrameReader(read_fd)
    tracemalloc.start()
    try:
        writer.start()
        message = reader.read(deadline=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.join()
        os.close(read_fd)
    assert message["value"] == "x" * size
    assert peak < 2.3 * len(frame), peak / len(frame)


def test_nul_and_lone_surrogates_in_errors_and_log_are_replaced(
    sandbox_pool: SandboxPool,
) -> None:
    source = "def f():\n    log('a\\x00b')\n    raise ValueError('bad \\ud800 and \\x00')\n"
    result = call(sandbox_pool, source)
    assert result.error is not None and result.error.kind == "script_error"
    assert result.error.message == "ValueError: bad ? and \ufffd"
    assert result.log == "a\ufffdb\n"
