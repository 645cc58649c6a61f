"""The contract is defined once (``host/contract/``); the checked-in SDK and the guide's
reference sections are generated from it, and the hookspecs and the bridge's hooks are built
from it. These tests fail when a derived copy drifts from the definition."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from host.contract.functions import ALL_FUNCTIONS, FUNCTIONS_BY_KIND
from host.contract.generate import GUIDE_PATH, ROOT, generated_files, with_sections
from host.contract.script_names import annotation
from plugins.sandbox_bridge import SandboxBridge


def test_regenerating_changes_nothing() -> None:
    for path, text in generated_files().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python -m host.contract.generate"
        )


def test_the_sdk_imports_nothing_from_the_host() -> None:
    for path in (ROOT / "crm_module_sdk").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in ("host", "plugins", "sandbox")]
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, crm_module_sdk; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('host', 'plugins', 'sandbox')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_the_guide_lists_every_function_with_its_signature_and_retry() -> None:
    guide = GUIDE_PATH.read_text(encoding="utf-8")
    for functions in FUNCTIONS_BY_KIND.values():
        for function in functions:
            assert f"`{function.signature()}`" in guide
            assert function.retry in guide
            assert f"`{function.hook}`" in guide


def test_a_guide_without_its_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no <!-- contract:reference --> section"):
        with_sections("# a guide\n", {"reference": "x"})


def test_the_sdk_annotates_what_the_definition_returns() -> None:
    import crm_module_sdk

    for function in ALL_FUNCTIONS.values():
        for name in annotation(function.returns).replace("list[", "").rstrip("]").split(" | "):
            if name not in ("None", "str"):
                assert hasattr(crm_module_sdk, name), (function.name, name)


def test_the_bridge_has_one_hook_per_function_delegating_to_serve() -> None:
    calls = []

    class Recording(SandboxBridge):
        def serve(self, call, *args):  # type: ignore[no-untyped-def]
            calls.append((call, args))
            return "served"

    bridge = Recording(
        sandbox=lambda: None,  # type: ignore[arg-type,return-value]
        module_storage=None,  # type: ignore[arg-type]
        script_callbacks=lambda call: {},
        egress_allow=[],
        sandbox_wait_s=1.0,
    )
    for function in ALL_FUNCTIONS.values():
        method = getattr(bridge, function.hook)
        args = tuple(f"{p}-value" for p in function.parameters)
        assert method("the-call", *args) == "served"
        assert calls.pop() == ("the-call", args)
        assert method.__code__.co_varnames[: 2 + len(args)] == (
            "self",
            "call",
            *function.parameters,
        )


def test_scaffold_stubs_have_the_contract_signature(tmp_path: Path) -> None:
    from host.toolkit.scaffold import script_text

    for kind, functions in FUNCTIONS_BY_KIND.items():
        tree = ast.parse(script_text("x-mod", kind))
        defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for function in functions:
            node = defined[function.name]
            assert tuple(a.arg for a in node.args.args) == function.parameters
            assert len(node.args.defaults) == function.optional
            assert ast.unparse(node.returns) == annotation(function.returns)
