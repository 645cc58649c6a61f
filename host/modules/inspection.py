"""Static facts about a module's script that the host needs beyond compiling it: which
contract functions are real and which are scaffolding stubs."""

from __future__ import annotations

import ast


def stub_functions(source: str) -> set[str]:
    """Top-level functions whose body only raises NotImplementedError (after an optional
    docstring): ``module new`` writes these, and they implement nothing."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, RecursionError, ValueError, MemoryError):
        return set()
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and _only_raises_not_implemented(node.body)
    }


def _only_raises_not_implemented(body: list[ast.stmt]) -> bool:
    statements = body
    if (
        statements
        and isinstance(statements[0], ast.Expr)
        and isinstance(statements[0].value, ast.Constant)
        and isinstance(statements[0].value.value, str)
    ):
        statements = statements[1:]
    if len(statements) != 1 or not isinstance(statements[0], ast.Raise):
        return False
    raised = statements[0].exc
    if isinstance(raised, ast.Call):
        raised = raised.func
    return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"
