"""Compile a script with RestrictedPython and describe the functions it defines.

This is the single entry point every caller uses to turn source into code; the policy it
applies lives in :mod:`sandbox.policy`.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from types import CodeType

from RestrictedPython import compile_restricted_exec

from sandbox.errors import InvalidModule, PolicyViolation, ScriptCompileError, ScriptProblem

DEFAULT_MAX_SOURCE_BYTES = 512 * 1024

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
) -> CompiledScript:
    """Compile ``source`` under the sandbox policy.

    Raises :class:`ScriptCompileError` listing every problem (syntax error, policy
    violation, oversize source) with its line.
    """
    size = len(source.encode("utf-8"))
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
    try:
        result = compile_restricted_exec(source, filename=filename)
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ScriptCompileError(
            [ScriptProblem(InvalidModule.kind, f"script cannot be parsed: {type(exc).__name__}", filename)]
        ) from None
    if result.errors:
        raise ScriptCompileError([_problem(e, filename) for e in result.errors])
    assert result.code is not None
    return CompiledScript(
        filename=filename,
        source_hash=source_hash(source),
        code=result.code,
        functions=_functions(ast.parse(source, filename=filename)),
    )


def _problem(error: str, filename: str) -> ScriptProblem:
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
