"""Static facts about a module's script that the host needs beyond compiling it: which
contract functions are real and which are scaffolding stubs, and which settings it reads by
a literal key."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal


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


@dataclass(frozen=True)
class SettingsRead:
    """``settings["key"]`` (``item``) or ``settings.get("key", ...)`` (``get``) at ``line``."""

    key: str
    line: int
    how: Literal["item", "get"]


def settings_reads(tree: ast.Module) -> list[SettingsRead]:
    """Reads of the lent ``settings`` with a literal string key, in source order.

    Dynamic keys (``settings[name]``) are not reads anyone can check. A script that binds the
    name ``settings`` itself (a parameter, an assignment, another import) may mean another
    object by it, so it gets no reads at all rather than errors about someone else's keys.
    """
    if _binds_settings(tree):
        return []
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_settings(node.value):
            key, how = node.slice, "item"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and _is_settings(node.func.value)
            and node.args
        ):
            key, how = node.args[0], "get"
        else:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            reads.append(SettingsRead(key.value, node.lineno, how))  # type: ignore[arg-type]
    return sorted(reads, key=lambda read: read.line)


def _is_settings(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "settings"


def _binds_settings(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Name)
            and node.id == "settings"
            and not isinstance(node.ctx, ast.Load)
        ):
            return True
        if isinstance(node, ast.arg) and node.arg == "settings":
            return True
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == "settings":
            return True
        if isinstance(node, ast.Import | ast.ImportFrom):
            lent = isinstance(node, ast.ImportFrom) and node.module == "crm_module_sdk"
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                if bound == "settings" and not (lent and alias.name == "settings"):
                    return True
    return False
