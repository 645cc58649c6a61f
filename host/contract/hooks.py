"""The pluggy shape of a contract function, so the hookspecs and the plugin that serves every
function are built from the one definition instead of being written out eleven times.

pluggy reads a hook's argument names from the implementing function's code object (not from
``__signature__``) and calls it positionally in that order, so the functions here are
compiled from a one-line ``def`` whose parameters are the contract's — the way
:mod:`dataclasses` builds ``__init__``. The names are checked to be identifiers by
:class:`~host.contract.function_model.ContractFunction`; nothing else reaches the source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from host.calls import ModuleCall, ModuleResult
from host.contract.function_model import ContractFunction


def _compiled(source: str, name: str, function: ContractFunction, doc: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<hook {name}>", "exec"), namespace)
    built: Callable[..., Any] = namespace[name]
    built.__doc__ = doc or None
    built.__annotations__ = {
        "call": ModuleCall,
        **{p.name: p.type for p in function.params},
        "return": ModuleResult | None,
    }
    return built


def spec_function(function: ContractFunction, doc: str) -> Callable[..., Any]:
    """``def crm_marketing_x(call, <parameters>)``: a body-less function for a hookspec."""
    params = ", ".join(("call", *function.parameters))
    source = f"def {function.hook}({params}):\n    pass\n"
    return _compiled(source, function.hook, function, doc)


def delegating_method(function: ContractFunction, target: str) -> Callable[..., Any]:
    """``def crm_marketing_x(self, call, <parameters>): return self.<target>(call, ...)``: a
    hook method that hands the contract's arguments, in order, to one common method."""
    params = ", ".join(("call", *function.parameters))
    source = f"def {function.hook}(self, {params}):\n    return self.{target}({params})\n"
    return _compiled(source, function.hook, function, f"Serves {function.name}.")
