"""The language policy: which Python a script may be written in.

:class:`ScriptPolicy` extends RestrictedPython's ``RestrictingNodeTransformer`` the way the
upstream project states its own policy: one ``visit_*``/``check_*`` method per rule, never by
filtering source text. The upstream transformer already

- rewrites attribute access, subscripts, iteration, unpacking, ``print`` and ``*args`` calls
  into calls of the guards in :mod:`sandbox.guards`;
- rejects names and attributes starting with ``_`` (so the guards cannot be shadowed), the
  ``inspect`` attributes of frames/code/generators/coroutines, ``exec``/``eval`` calls,
  ``async``/``await``, ``nonlocal``, ``try/except*`` (CVE-2025-22153), ``match`` statements
  (class patterns read attributes without ``_getattr_``), star imports and every AST node it
  does not know.

On top of that this policy, deliberately stricter than upstream:

- rejects ``__`` anywhere in a name, attribute, keyword argument or ``global`` name
  (``a__b`` never names anything useful; dunders are how escapes are spelled);
- rejects the attributes ``format``/``format_map`` on *anything* (CVE-2023-41039 class of
  leaks: ``"{0.__class__}".format(x)``) and ``mro``; f-strings are the supported way to format;
- rejects every attribute that reaches frames, code, tracebacks or generator internals
  (``gi_*``, ``cr_*``, ``ag_*``, ``tb_*``, ``f_back`` ...), a superset of upstream's list;
- rejects asynchronous comprehensions (they would otherwise crash ``compile`` later);
- allows ``global`` (module globals are fresh per invocation) but checks its names;
- allows ``yield``: generators are ordinary iteration tools, and what made them dangerous
  (CVE-2023-37271, ``gi_frame.f_back``) is closed by the attribute rules here and at run time;
- turns ``x[k] += v`` / ``x.a += v`` (refused upstream) into guarded reads and writes, since
  aggregation code (``stats["sent"] += 1``) is what integration scripts are made of;
- drops every annotation — of variables (``x: int = 1`` keeps only ``x = 1``; refused
  upstream), parameters and returns — before anything else sees it. Annotations are for the
  editor and mypy; at run time they would be expressions evaluated when a ``def`` runs and
  strings kept in ``__annotations__`` for whoever evaluates them later (``typing``'s
  ``get_type_hints``/``ForwardRef`` do so with an unrestricted ``eval``). Dropped, they never
  run and leave nothing behind to evaluate.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from RestrictedPython.transformer import (
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

#: Attribute names no script may read or write, whatever the object.
FORBIDDEN_ATTRIBUTES: frozenset[str] = INSPECT_ATTRIBUTES | frozenset(
    {
        "format",
        "format_map",
        "mro",
        "f_back",
        "f_builtins",
        "f_code",
        "f_globals",
        "f_locals",
        "f_trace",
        "f_generator",
        "tb_frame",
        "tb_next",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "co_code",
    }
)

#: Prefixes of the attributes of tracebacks, generators, coroutines and async generators.
FORBIDDEN_ATTRIBUTE_PREFIXES: tuple[str, ...] = ("gi_", "cr_", "ag_", "tb_")


def attribute_problem(name: str) -> str | None:
    """Why a script may not use attribute ``name``, or ``None`` when it may.

    Shared by the compile-time policy and the run-time ``getattr`` guard so both say the same.
    """
    if name.startswith("_"):
        return f'"{name}" is an invalid attribute name because it starts with "_"'
    if "__" in name:
        return f'"{name}" is an invalid attribute name because it contains "__"'
    if name.endswith("__roles__"):
        return f'"{name}" is an invalid attribute name'
    if name in ("format", "format_map"):
        return f'"{name}" is not allowed (it can reach object internals); use an f-string'
    if name in FORBIDDEN_ATTRIBUTES or name.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES):
        return f'"{name}" is a restricted name (interpreter internals)'
    return None


class ScriptPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus the extra rules of this sandbox (see module docstring)."""

    #: modules an ``import`` may name; None leaves imports to the run-time import hook
    allowed_imports: ClassVar[frozenset[str] | None] = None
    #: per module, the names ``from module import ...`` may take (modules absent: any name)
    importable_names: ClassVar[Mapping[str, frozenset[str]]] = {}

    @classmethod
    def allowing_imports(
        cls, modules: Iterable[str], names: Mapping[str, frozenset[str]] | None = None
    ) -> type[ScriptPolicy]:
        """This policy, also refusing at compile time any import the run-time hook would
        refuse, so an uploader learns every bad import at once, with its line."""
        attributes = {"allowed_imports": frozenset(modules), "importable_names": names or {}}
        return type("ScriptPolicyWithImports", (cls,), attributes)

    # Imports

    def visit_Import(self, node: ast.Import) -> Any:
        for alias in node.names:
            self._check_import(node, alias.name)
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        if node.level == 0 and node.module:
            self._check_import(node, node.module)
            names = self.importable_names.get(node.module)
            for alias in node.names:
                if names is not None and alias.name not in names and alias.name[:1] != "_":
                    self.error(
                        node,
                        f"cannot import '{alias.name}' from module '{node.module}': "
                        "not available in scripts",
                    )
        return super().visit_ImportFrom(node)

    def _check_import(self, node: ast.stmt, module: str) -> None:
        if self.allowed_imports is not None and module not in self.allowed_imports:
            allowed = ", ".join(sorted(self.allowed_imports))
            self.error(node, f"import of module '{module}' is not allowed (allowed: {allowed})")

    # Names

    def check_name(self, node: Any, name: str | None, allow_magic_methods: bool = False) -> None:
        """Upstream rules, plus: no ``__`` anywhere in a name the script binds or reads."""
        errors_before = len(self.errors)
        super().check_name(node, name, allow_magic_methods)
        if name is None or len(self.errors) > errors_before:
            return
        if "__" in name and not name.startswith("_"):
            self.error(node, f'"{name}" is an invalid name because it contains "__"')

    def visit_Global(self, node: ast.Global) -> Any:
        """Allow ``global`` (globals are per invocation) but not for protected names."""
        for name in node.names:
            self.check_name(node, name)
        return self.node_contents_visit(node)

    def visit_keyword(self, node: ast.keyword) -> Any:
        """Keyword argument names follow the name rules (``f(_getattr_=...)`` is refused)."""
        if node.arg is not None:
            self.check_name(node.value, node.arg)
        return self.node_contents_visit(node)

    # Attributes

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        """Upstream rules, plus :func:`attribute_problem` (format, mro, frame internals)."""
        problem = attribute_problem(node.attr)
        if problem and not node.attr.startswith("_") and node.attr not in INSPECT_ATTRIBUTES:
            # upstream already reports "_" names and its own inspect attributes
            self.error(node, problem)
        return super().visit_Attribute(node)

    # Annotations (dropped: see the module docstring)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:
        """``target: T = value`` becomes ``target = value`` (then checked as an assignment);
        a bare ``target: T`` declares nothing at run time and becomes ``pass``."""
        replacement: ast.stmt = (
            ast.Pass()
            if node.value is None
            else ast.Assign(targets=[node.target], value=node.value)
        )
        copy_locations(replacement, node)
        return self.visit(replacement)

    def visit_arg(self, node: ast.arg) -> Any:
        """A parameter keeps its name, never its annotation."""
        node.annotation = None
        return super().visit_arg(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        """A function keeps its body, never its return annotation."""
        node.returns = None
        return super().visit_FunctionDef(node)

    # Comprehensions

    def visit_comprehension(self, node: ast.comprehension) -> Any:
        """Refuse ``async for`` in comprehensions (async code is not supported)."""
        if node.is_async:
            self.error(node.target, "Asynchronous comprehensions are not allowed.")
        return super().visit_comprehension(node)

    # Augmented assignment

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        """Allow ``x[k] op= v`` and ``x.a op= v`` through the guards.

        ``obj[key] += value`` becomes::

            _tmp0 = obj
            _tmp1 = key
            _write_(_tmp0)[_tmp1] = _inplacevar_("+=", _getitem_(_tmp0, _tmp1), value)

        so ``obj`` and ``key`` are evaluated once, the read goes through ``_getitem_`` /
        ``_getattr_`` and the write through ``_write_``. Slices stay refused.
        """
        target = node.target
        if isinstance(target, ast.Name):
            return super().visit_AugAssign(node)
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            return self._augmented_item(node, target)
        if isinstance(target, ast.Attribute):
            return self._augmented_attribute(node, target)
        return super().visit_AugAssign(node)

    def _augmented_item(self, node: ast.AugAssign, target: ast.Subscript) -> list[ast.stmt]:
        obj = self.visit(target.value)
        key = self.visit(target.slice)
        value = self.visit(node.value)
        obj_name, key_name = self.gen_tmp_name(), self.gen_tmp_name()
        read = _call("_getitem_", _load(obj_name), _load(key_name))
        write_target = ast.Subscript(
            value=_call("_write_", _load(obj_name)), slice=_load(key_name), ctx=ast.Store()
        )
        return self._augmented(node, obj_name, obj, key_name, key, read, write_target, value)

    def _augmented_attribute(self, node: ast.AugAssign, target: ast.Attribute) -> Any:
        problem = attribute_problem(target.attr)
        if problem:
            self.error(node, problem)
            return node
        obj = self.visit(target.value)
        value = self.visit(node.value)
        obj_name = self.gen_tmp_name()
        read = _call("_getattr_", _load(obj_name), ast.Constant(target.attr))
        write_target = ast.Attribute(
            value=_call("_write_", _load(obj_name)), attr=target.attr, ctx=ast.Store()
        )
        return self._augmented(node, obj_name, obj, None, None, read, write_target, value)

    def _augmented(
        self,
        node: ast.AugAssign,
        obj_name: str,
        obj: ast.expr,
        key_name: str | None,
        key: ast.expr | None,
        read: ast.expr,
        write_target: ast.expr,
        value: ast.expr,
    ) -> list[ast.stmt]:
        operator = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        statements: list[ast.stmt] = [
            ast.Assign(targets=[ast.Name(obj_name, ast.Store())], value=obj)
        ]
        if key_name is not None and key is not None:
            statements.append(ast.Assign(targets=[ast.Name(key_name, ast.Store())], value=key))
        statements.append(
            ast.Assign(
                targets=[write_target],
                value=_call("_inplacevar_", operator, read, value),
            )
        )
        for statement in statements:
            copy_locations(statement, node)
        return statements


def _load(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _call(function: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=_load(function), args=list(args), keywords=[])
