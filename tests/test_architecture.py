"""The shape of the house, checked from the source: no import circle between files, and no
import against the layer order ``sandbox`` ← ``host`` ← ``plugins``.

The graph is built with :mod:`ast` (nothing is imported): every ``import``/``from … import``
anywhere in a file counts, including the ones inside functions, because a lazy import is
still a dependency; only imports under ``if TYPE_CHECKING:`` are left out, since they never
run. ``from package import name`` points at ``package/name.py`` when that file exists, else at
the package's ``__init__.py``; importing a submodule also runs its packages' ``__init__.py``
files, so those count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("host", "sandbox", "plugins", "crm_module_sdk", "emulators")

FORBIDDEN: dict[str, frozenset[str]] = {
    "sandbox": frozenset({"host", "plugins", "crm_module_sdk", "emulators"}),
    "host": frozenset({"plugins", "emulators"}),
    "crm_module_sdk": frozenset({"host", "plugins", "emulators"}),
    "emulators": frozenset({"host", "plugins", "crm_module_sdk"}),
}
"""Which top-level packages each package must not import. ``emulators`` is a shipped leaf
(the demo runs from a wheel) that stands in for outside services, so it knows nothing of ours;
``plugins`` may import ``host`` and ``sandbox``."""

ALLOWED_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset({("host/demo", "emulators")})
"""(folder, package) pairs exempt from :data:`FORBIDDEN`: the demo runs the emulators."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every project module by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import node that runs, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str, modules: dict[str, Path]) -> Iterator[str]:
    """The module and the packages whose ``__init__`` importing it runs."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            yield candidate


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that importing ``name`` (at ``path``) imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.update(_with_parents(alias.name, modules))
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        targets.update(_with_parents(base, modules))
        for alias in node.names:
            if f"{base}.{alias.name}" in modules:
                targets.add(f"{base}.{alias.name}")
    targets.discard(name)
    return targets


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest closed path through the component's first member (breadth first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def as_file(name: str, modules: dict[str, Path]) -> str:
    return str(modules[name].relative_to(ROOT))


def layer_violations(graph: dict[str, set[str]], modules: dict[str, Path]) -> list[str]:
    problems = []
    for name, targets in sorted(graph.items()):
        source = as_file(name, modules)
        forbidden = FORBIDDEN.get(name.split(".")[0], frozenset())
        for target in sorted(targets):
            top = target.split(".")[0]
            if top not in forbidden:
                continue
            if any(
                source.startswith(folder + "/") and top == pkg for folder, pkg in ALLOWED_EXCEPTIONS
            ):
                continue
            problems.append(f"{source} imports {as_file(target, modules)}")
    return problems


def test_no_import_cycles() -> None:
    modules = project_modules()
    cycles = find_cycles(import_graph())
    paths = [" -> ".join(as_file(name, modules) for name in cycle) for cycle in cycles]
    assert paths == [], "import circles:\n" + "\n".join(paths)


def test_layers() -> None:
    modules = project_modules()
    problems = [
        problem
        for problem in layer_violations(import_graph(), modules)
        if not problem.startswith("crm_module_sdk/")
    ]
    assert problems == [], "imports against the layer order:\n" + "\n".join(problems)


def test_sdk_imports_nothing_from_host() -> None:
    """The SDK is generated from the contract and imports nothing of ours: a module author's
    editor and tests need ``crm_module_sdk`` alone (the generator is issue 12's contract
    part; this test holds the line once it lands)."""
    modules = project_modules()
    problems = [
        problem
        for problem in layer_violations(import_graph(), modules)
        if problem.startswith("crm_module_sdk/")
    ]
    assert problems == [], "the SDK imports:\n" + "\n".join(problems)


def _code_strings(tree: ast.AST) -> Iterator[str]:
    """String constants that are code, not docstrings."""
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.value


def test_sandbox_reads_no_host_variable() -> None:
    """``sandbox/`` is configured by its caller: no ``CRM_HOST_*`` name appears in its code
    (its docstrings may say that the worker never inherits them)."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "sandbox").rglob("*.py"))
        if any("CRM_HOST_" in text for text in _code_strings(ast.parse(path.read_text())))
    ]
    assert offenders == []


ENTRY_LAYERS = ("host/api/", "host/cli/", "host/demo/", "host/console/")
"""Where a ``Host`` is built or served: the HTTP app, the CLI, the demo and the console."""


def test_no_service_reaches_through_host() -> None:
    """Services and plugins receive their collaborators; only the entry layers know the
    ``Host`` (checked with ``TYPE_CHECKING`` imports too: a type hint of ``Host`` on a service
    is how reaching through it starts)."""
    offenders = []
    for path in sorted(project_modules().values()):
        relative = str(path.relative_to(ROOT))
        if relative == "host/platform.py" or relative.startswith(ENTRY_LAYERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if "host.platform" in names:
                offenders.append(relative)
    assert offenders == []


# --- the checker itself, on small made-up trees (so a green run means something) ----------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    return tmp_path


def test_checker_reports_a_cycle_as_a_path_of_files(fake_root: Path) -> None:
    _tree(
        fake_root,
        {
            "host/a.py": "from host.b import thing\n",
            "host/b.py": "def f():\n    from host import c\n",
            "host/c.py": "import host.a\n",
        },
    )
    modules = project_modules(fake_root)
    cycles = find_cycles(import_graph(fake_root))
    assert [[as_file(n, modules) for n in cycle] for cycle in cycles] == [
        ["host/a.py", "host/b.py", "host/c.py", "host/a.py"]
    ]


def test_checker_skips_type_checking_imports_and_resolves_relative_ones(fake_root: Path) -> None:
    _tree(
        fake_root,
        {
            "host/a.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from host.b import B\n"
            ),
            "host/b.py": "from . import a\nfrom .sub.c import x\n",
            "host/sub/__init__.py": "",
            "host/sub/c.py": "from ..a import y\n",
        },
    )
    graph = import_graph(fake_root)
    assert graph["host.a"] == set()
    assert graph["host.b"] == {"host", "host.a", "host.sub", "host.sub.c"}
    assert graph["host.sub.c"] == {"host", "host.a"}
    assert find_cycles(graph) == []


def test_checker_reports_layer_violations(fake_root: Path) -> None:
    _tree(
        fake_root,
        {
            "sandbox/x.py": "import host.y\n",
            "host/y.py": "import importlib\nfrom plugins import p\n",
            "host/demo/run.py": "import emulators.fake\n",
            "emulators/fake.py": "",
            "plugins/p.py": "import host.y\n",
        },
    )
    modules = project_modules(fake_root)
    assert layer_violations(import_graph(fake_root), modules) == [
        "host/y.py imports plugins/__init__.py",
        "host/y.py imports plugins/p.py",
        "sandbox/x.py imports host/__init__.py",
        "sandbox/x.py imports host/y.py",
    ]
