"""An executor that plays a leaky or compromised worker, for the isolation tests.

Scripts cannot (by policy) keep an object beyond their invocation or write to the channel;
these functions do what a script that found such a hole would do, from inside a real worker
process, so the tests can prove that the *next* line of defence holds: capabilities die with
their invocation, and the parent refuses frames that are not the current invocation's.
Selected by the invocation's ``function``; anything else runs the real executor.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from sandbox.channel import encode, write_all
from sandbox.execution import execute as real_execute
from sandbox.world import build_globals

#: a "global-like place" that outlives invocations (the hole a leaky script would find)
_stash: dict[str, Any] = {}


def execute(
    compiled: Any,
    function: str,
    args: list[Any],
    kwargs: dict[str, Any],
    capabilities: Any,
    spec: Any,
) -> Any:
    if function == "stash":
        _stash["world"] = build_globals(capabilities, spec)
        return "stashed"
    if function == "use_stash":
        return _use_stash()
    if function == "forged_call":
        # a call frame that carries another invocation's identity
        capabilities._parent.send(
            {"op": "call", "inv": "an-earlier-invocation", "name": "crm.contacts", "args": [[1]]}
        )
        return capabilities._parent.receive()
    if function == "late_frame":
        # answer early, then keep talking after the invocation is over
        out_fd = capabilities._parent.out_fd
        token = capabilities.invocation_id
        write_all(out_fd, encode({"op": "done", "inv": token, "ok": True, "value": "early"}))
        write_all(out_fd, encode({"op": "call", "inv": token, "name": "crm.contacts", "args": []}))
        return "late"
    if function == "answer_other_request":
        # a done frame of this invocation that names another caller's request id
        token = capabilities.invocation_id
        write_all(
            capabilities._parent.out_fd,
            encode({"op": "done", "inv": token, "ok": True, "value": 1, "request_id": "other"}),
        )
        return "answered"
    if function == "remember_token":
        _stash["token"] = capabilities.invocation_id
        return "remembered"
    if function == "stale_then_run":
        # speak with the previous invocation's identity as this one starts: the frame a
        # late finalizer of that invocation would send, arriving after its ``done``
        token = _stash.pop("token", None)
        if token is not None:
            out_fd = capabilities._parent.out_fd
            write_all(
                out_fd, encode({"op": "call", "inv": token, "name": "crm.contacts", "args": []})
            )
        return real_execute(compiled, "f", args, kwargs, capabilities, spec)
    if function == "crash":
        # the worker dies by itself, the way a C extension crash would look to the parent
        os.kill(os.getpid(), signal.SIGSEGV)
    return real_execute(compiled, function, args, kwargs, capabilities, spec)


def _use_stash() -> dict[str, str]:
    """Use every lent object kept from an earlier invocation; report how each failed."""
    world = _stash.pop("world")
    attempts = {
        "crm.contacts": lambda: world["crm"].contacts([1]),
        "fetch": lambda: world["fetch"]("https://api.example.test/"),
        "storage.get": lambda: world["storage"].get("k"),
        "storage.set": lambda: world["storage"].set("k", 1),
        "log": lambda: world["log"]("late line"),
        "print": lambda: world["_print_"]()._call_print("late print"),
    }
    outcome: dict[str, str] = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            outcome[name] = "no error"
        except Exception as exc:
            outcome[name] = f"{type(exc).__name__}: {exc}"
    return outcome
