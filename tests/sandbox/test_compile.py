"""compile_script: every problem at once, with its line and kind; hostile sources become
reports, never crashes; function signatures describe the script's public surface."""

from __future__ import annotations

import textwrap

import pytest

from sandbox.compiler import MAX_NESTING_DEPTH, compile_script
from sandbox.errors import ScriptCompileError


def problems(source: str) -> ScriptCompileError:
    with pytest.raises(ScriptCompileError) as info:
        compile_script(textwrap.dedent(source))
    return info.value


def test_valid_script_compiles_with_hash_and_filename() -> None:
    compiled = compile_script("def f():\n    return 1\n", "mod.py")
    assert compiled.filename == "mod.py"
    assert len(compiled.source_hash) == 64
    assert compiled.code.co_filename == "mod.py"


def test_syntax_error_is_invalid_module_with_line() -> None:
    error = problems(
        """
        def f():
            return 1

        def g(:
            pass
        """
    )
    assert error.kind == "invalid_module"
    assert error.problems[0].line == 5
    assert "SyntaxError" in error.problems[0].message


def test_compiler_level_syntax_error_is_reported_not_raised() -> None:
    """``return`` outside a function parses fine and only fails in the byte-code compiler."""
    error = problems("x = 1\nreturn x\n")
    assert error.kind == "invalid_module"
    assert error.problems[0].line == 2


def test_policy_violation_has_kind_and_line() -> None:
    error = problems(
        """
        def f(x):
            y = 1
            return x.__class__
        """
    )
    assert error.kind == "policy_violation"
    assert [p.line for p in error.problems] == [4]
    assert "__class__" in error.problems[0].message


def test_all_policy_problems_are_reported_at_once() -> None:
    error = problems(
        """
        import os
        def f(x):
            a = x._private
            b = "{}".format(x)
            exec("1")
            return a__b
        """
    )
    lines = sorted(p.line or 0 for p in error.problems)
    assert lines == [4, 5, 6, 7]
    assert all(p.kind == "policy_violation" for p in error.problems)


def test_oversize_source_is_refused_before_parsing() -> None:
    with pytest.raises(ScriptCompileError) as info:
        compile_script("x = 1\n" * 100, max_source_bytes=100)
    assert info.value.kind == "invalid_module"
    assert "600 bytes" in info.value.problems[0].message


def test_hundred_thousand_term_sum_is_a_report_not_a_crash() -> None:
    error = problems("x = " + "+".join(["1"] * 100_000) + "\n")
    assert error.kind in ("invalid_module", "policy_violation")
    assert error.problems


def test_long_but_reasonable_expression_compiles() -> None:
    compiled = compile_script("x = " + "+".join(["1"] * 60) + "\n")
    assert compiled.code is not None


def test_deep_nesting_is_policy_violation_with_line() -> None:
    depth = MAX_NESTING_DEPTH + 20
    error = problems("a = 1\nx = " + "[" * depth + "]" * depth + "\n")
    assert error.kind == "policy_violation"
    assert error.problems[0].line == 2
    assert "nested too deeply" in error.problems[0].message


def test_too_many_parentheses_is_a_syntax_report() -> None:
    error = problems("x = " + "(" * 500 + "1" + ")" * 500 + "\n")
    assert error.kind == "invalid_module"
    assert error.problems[0].line == 1


def test_deeply_indented_blocks_are_reported() -> None:
    source = "".join("    " * i + "if x:\n" for i in range(120)) + "    " * 120 + "pass\n"
    error = problems(source)
    assert error.problems[0].line is not None


def test_nul_byte_is_reported() -> None:
    error = problems("x = 1\x00\n")
    assert error.kind == "invalid_module"


def test_function_signatures() -> None:
    compiled = compile_script(
        textwrap.dedent(
            """
            def CRM_Import(offset, limit=10, *rest, flag, opt=None, **extra):
                return []

            def helper():
                pass

            class NotAFunction:
                pass
            """
        )
    )
    assert set(compiled.functions) == {"CRM_Import", "helper"}
    signature = compiled.functions["CRM_Import"]
    assert signature.line == 2
    assert signature.positional_names == ("offset", "limit")
    assert [(p.name, p.has_default, p.kind) for p in signature.parameters] == [
        ("offset", False, "positional"),
        ("limit", True, "positional"),
        ("rest", True, "vararg"),
        ("flag", False, "keyword_only"),
        ("opt", True, "keyword_only"),
        ("extra", True, "varkw"),
    ]


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    d = {}\n    d['k'] = 1\n    d['k'] += 2\n    return d\n",
        "def f():\n    x = 0\n    x += 1\n    return x\n",
        "def f():\n    g = (i for i in range(3))\n    return list(g)\n",
        "def f():\n    def gen():\n        yield 1\n    return list(gen())\n",
        "def f(x, /, y):\n    return x\n",
        "counter = 0\ndef f():\n    global counter\n    counter = 1\n",
        "def f():\n    return f'{1 + 1}'\n",
        "class Point:\n    def __init__(self, x):\n        self.x = x\n",
    ],
)
def test_ordinary_python_compiles(source: str) -> None:
    assert compile_script(source).code is not None


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("async def f():\n    pass\n", "AsyncFunctionDef"),
        ("def f(y):\n    return [x async for x in y]\n", "Asynchronous comprehensions"),
        ("def f():\n    x = 1\n    def g():\n        nonlocal x\n", "Nonlocal"),
        ("def f(x):\n    match x:\n        case 1:\n            pass\n", "Match"),
        ("def f():\n    global _getattr_\n", '"_getattr_"'),
        ("def f(x):\n    return x.mro()\n", '"mro"'),
        ("def f(x):\n    return dict(__class__=1)\n", '"__class__"'),
        ("def f(x):\n    x[1:2] += [1]\n", "Augmented assignment"),
        ("def f(x):\n    x.__dict__ += 1\n", '"__dict__"'),
    ],
)
def test_refused_constructs(source: str, fragment: str) -> None:
    error = problems(source)
    assert error.kind == "policy_violation"
    assert any(fragment in p.message for p in error.problems), error.problems
