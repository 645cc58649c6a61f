"""Compile a script with RestrictedPython and describe the functions it defines.

This is the single entry point every caller uses to turn source into code; the policy it
applies lives in :mod:`sandbox.policy`.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import CodeType

from RestrictedPython import compile_restricted_exec

from sandbox.errors import InvalidModule, PolicyViolation, ScriptCompileError, ScriptProblem
from sandbox.facades import importable_names
from sandbox.policy import ScriptPolicy

DEFAULT_MAX_SOURCE_BYTES = 512 * 1024

#: Deepest AST a script may have; real code stays far below, the compiler stack does not.
MAX_NESTING_DEPTH = 100

_LINE_PREFIX = re.compile(r"^Line (\d+): (.*)$", re.DOTALL)


@dataclass(frozen=True)
class Parameter:
    name: str
    has_default: bool
    kind: str  # "positional", "vararg", "keyword_only", "varkw"


@dataclass(frozen=True)
class FunctionSignature:
    name: str
    line: int
    parameters: tuple[Parameter, ...]

    @property
    def positional_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters if p.kind == "positional")


@dataclass(frozen=True)
class CompiledScript:
    """Restricted byte code plus what the caller needs to know about the script."""

    filename: str
    source_hash: str
    code: CodeType
    functions: dict[str, FunctionSignature] = field(default_factory=dict)


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def compile_script(
    source: str,
    filename: str = "module.py",
    *,
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    allowed_imports: Iterable[str] | None = None,
) -> CompiledScript:
    """Compile ``source`` under the sandbox policy (:class:`sandbox.policy.ScriptPolicy`).
    With ``allowed_imports``, an import of any other module — or ``from m import name`` of a
    name the module's facade lacks — is a policy violation here, at compile time, instead of
    an ImportError when the line runs.

    Raises :class:`ScriptCompileError` listing every problem (syntax error, policy
    violation, oversize or pathologically nested source) with its line. Never lets a
    ``RecursionError``/``MemoryError`` of the parser or compiler escape: a hostile source
    must produce a report, not crash the process that validates it.
    """
    size = len(source.encode("utf-8", errors="surrogatepass"))
    if size > max_source_bytes:
        raise ScriptCompileError(
            [
                ScriptProblem(
                    InvalidModule.kind,
                    f"script is {size} bytes, more than the limit of {max_source_bytes}",
                    filename,
                )
            ]
        )
    tree = _parse(source, filename)
    _check_nesting(tree, filename)
    functions = _functions(tree)
    try:
        policy = (
            ScriptPolicy
            if allowed_imports is None
            else ScriptPolicy.allowing_imports(allowed_imports, importable_names())
        )
        result = compile_restricted_exec(tree, filename=filename, policy=policy)
    except SyntaxError as exc:  # found by the compiler, not the parser ("return" outside def)
        raise ScriptCompileError([_syntax_problem(exc, filename)]) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ScriptCompileError(
            [
                ScriptProblem(
                    InvalidModule.kind,
                    f"script cannot be compiled: {type(exc).__name__}",
                    filename,
                )
            ]
        ) from None
    if result.errors:
        raise ScriptCompileError([_problem(e, filename) for e in result.errors])
    assert result.code is not None
    return CompiledScript(
        filename=filename,
        source_hash=source_hash(source),
        code=result.code,
        functions=functions,
    )


def _parse(source: str, filename: str) -> ast.Module:
    try:
        return ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ScriptCompileError([_syntax_problem(exc, filename)]) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        # ValueError: NUL bytes in the source; the others: pathological nesting
        raise ScriptCompileError(
            [
                ScriptProblem(
                    InvalidModule.kind,
                    f"script cannot be parsed: {type(exc).__name__}: {exc}"[:300],
                    filename,
                )
            ]
        ) from None


def _syntax_problem(exc: SyntaxError, filename: str) -> ScriptProblem:
    return ScriptProblem(
        InvalidModule.kind,
        f"{type(exc).__name__}: {exc.msg}",
        filename,
        exc.lineno,
        exc.offset,
    )


def _check_nesting(tree: ast.AST, filename: str) -> None:
    """Refuse trees deeper than :data:`MAX_NESTING_DEPTH`, pointing at the deepest line.

    The policy transformer and the byte-code compiler recurse once per level; a
    100,000-term ``1+1+...`` would exhaust the interpreter stack there. Measured here with
    an explicit stack, so the check itself cannot overflow.
    """
    stack: list[tuple[ast.AST, int, int | None]] = [(tree, 0, None)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        if depth > MAX_NESTING_DEPTH:
            raise ScriptCompileError(
                [
                    ScriptProblem(
                        PolicyViolation.kind,
                        f"code is nested too deeply (more than {MAX_NESTING_DEPTH} levels of "
                        "expressions and blocks); split it into smaller parts",
                        filename,
                        line,
                    )
                ]
            )
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))


def _problem(error: str, filename: str) -> ScriptProblem:
    """Turn one RestrictedPython error string (``Line N: message``) into a problem."""
    match = _LINE_PREFIX.match(error)
    line, message = (int(match.group(1)), match.group(2)) if match else (None, error)
    kind = InvalidModule.kind if "SyntaxError" in message else PolicyViolation.kind
    return ScriptProblem(kind, message, filename, line)


def _functions(tree: ast.Module) -> dict[str, FunctionSignature]:
    """Top-level ``def`` statements with their parameters (the script's public surface)."""
    found: dict[str, FunctionSignature] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        first_default = len(positional) - len(args.defaults)
        params = [
            Parameter(a.arg, i >= first_default, "positional") for i, a in enumerate(positional)
        ]
        if args.vararg:
            params.append(Parameter(args.vararg.arg, True, "vararg"))
        params.extend(
            Parameter(a.arg, d is not None, "keyword_only")
            for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
        )
        if args.kwarg:
            params.append(Parameter(args.kwarg.arg, True, "varkw"))
        found[node.name] = FunctionSignature(node.name, node.lineno, tuple(params))
    return found
