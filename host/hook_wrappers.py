"""Wrapping every CRM_Marketing_* hook at once, for cross-cutting plugins (the host's contract
enforcer, the invocation log, an audit or metrics plugin): one ``around_call`` instead of
eleven near-identical methods that would drift from the contract."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from host.calls import ModuleCall
from host.contract.functions import ALL_FUNCTIONS
from host.hookspecs import hookimpl

C = TypeVar("C", bound=type)


def wraps_every_function(**options: Any) -> Callable[[C], C]:
    """Class decorator: make ``cls.around_call(self, call)`` (a generator, pluggy's new-style
    wrapper protocol) a ``wrapper=True`` hookimpl of every ``crm_marketing_*`` hook."""

    def decorate(cls: C) -> C:
        for function in ALL_FUNCTIONS.values():

            def wrapper(self: Any, call: ModuleCall) -> Generator[None, Any, Any]:
                return (yield from self.around_call(call))

            wrapper.__name__ = function.hook
            setattr(cls, function.hook, hookimpl(wrapper=True, **options)(wrapper))
        return cls

    return decorate
