"""Run one function of a compiled script, in-process, and say precisely how it ended.

:func:`execute` is the language-level half of an invocation: fresh globals, the module
body, the function, the return value converted to plain data, and every failure turned into
exactly one :mod:`sandbox.errors` kind with the script line it happened on. OS-level limits
(rlimits, wall-clock kill) belong to the worker process that calls this.

No traceback, frame or host exception object ever reaches the script or leaves this module:
failures leave as fresh :class:`SandboxError` instances raised ``from None``.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from sandbox import errors
from sandbox.capabilities import Capabilities, CapabilityError, InMemoryCapabilities
from sandbox.compiler import CompiledScript
from sandbox.errors import InvalidReturn
from sandbox.facades import ImportDenied
from sandbox.guards import AccessDenied, WriteDenied, WriteGuard
from sandbox.records import to_plain, wrap
from sandbox.world import WorldSpec, build_globals

MAX_MESSAGE_CHARS = 2000
#: rounds of the leftover collection (each round may run finalizers that leave new garbage)
LEFTOVER_ROUNDS = 4


def execute(
    compiled: CompiledScript,
    function: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    capabilities: Capabilities | None = None,
    spec: WorldSpec | None = None,
) -> Any:
    """Run the module body of ``compiled`` in fresh globals, then call ``function``.

    ``args``/``kwargs`` must be JSON-compatible; the script receives dicts and lists as
    read-only records. Returns the result as plain JSON data.

    Raises :class:`NotImplementedFunction` (function absent, not a function, or raising
    ``NotImplementedError``), :class:`InvalidReturn` (non-JSON result), or the kind of the
    failure: :class:`ScriptError` (``Type: message``, script line), :class:`PolicyViolation`
    (refused import/attribute), :class:`LimitExceeded` (recursion, lent limits),
    :class:`MemoryLimit`, :class:`EgressDenied` (an uncaught refused fetch) ...
    """
    capabilities = capabilities if capabilities is not None else InMemoryCapabilities()
    arguments = [wrap(to_plain(a, what="argument", error=TypeError)) for a in args]
    keyword_arguments = {
        str(k): wrap(to_plain(v, what=f"argument {k}", error=TypeError))
        for k, v in (kwargs or {}).items()
    }
    world = build_globals(capabilities, spec)
    write_guard: WriteGuard = world["_write_"]
    try:
        exec(compiled.code, world)
    except BaseException as exc:
        if not _from_script(exc, write_guard):
            raise
        raise _translate(exc, compiled, function, None, in_body=True) from None

    target: Any = world.get(function)
    if not _is_script_function(target, compiled):
        raise errors.NotImplementedFunction(
            f"the script does not implement {function}", filename=compiled.filename
        )
    try:
        result = target(*arguments, **keyword_arguments)
    except BaseException as exc:
        if not _from_script(exc, write_guard):
            raise
        raise _translate(exc, compiled, function, target, in_body=False) from None
    finally:
        # finalizers of what the script left behind run now, while its globals exist and
        # its capabilities are open; then the globals go, breaking cycles through them
        collect_leftovers()
        world.clear()
    return to_plain(
        result,
        what=f"{function} returned an invalid value",
        error=lambda message: InvalidReturn(message, filename=compiled.filename),
    )


def collect_leftovers() -> None:
    """Collect what the script left behind (generators suspended in a reference cycle,
    closures, objects with finalizers) NOW, inside its invocation: under its limits, with its
    capabilities open, before its result leaves. Their code is charged to the script and
    sees only its own world. Repeated while finalizers leave new garbage, a bounded number of
    times (a finalizer that keeps resurrecting itself is stopped by the CPU limit)."""
    for _round in range(LEFTOVER_ROUNDS):
        if not gc.collect():
            return


def _from_script(exc: BaseException, write_guard: WriteGuard) -> bool:
    """Whether ``exc`` is the script's failure to report, rather than the worker's own
    interruption (CPU-time signal, shutdown) that must pass through untouched.

    Every ``Exception`` is the script's; of the other ``BaseException`` classes only those a
    script can name or define are.
    """
    cls = type(exc)
    if isinstance(exc, Exception) or cls in (BaseException, GeneratorExit):
        return True
    return write_guard.is_script_class(cls)


def _is_script_function(target: Any, compiled: CompiledScript) -> bool:
    return (
        isinstance(target, types.FunctionType) and target.__code__.co_filename == compiled.filename
    )


def _translate(
    exc: BaseException,
    compiled: CompiledScript,
    function: str,
    target: Any,
    *,
    in_body: bool,
) -> errors.SandboxError:
    """Exactly one sandbox error for an exception that left the script."""
    filename = compiled.filename
    line = script_line(exc.__traceback__, filename)
    if line is None and target is not None:
        line = target.__code__.co_firstlineno
    message = _message(exc)

    if isinstance(exc, CapabilityError) and exc._error_class is not None:
        return exc._error_class(exc.message, filename=filename, line=line)
    if isinstance(exc, errors.SandboxError):  # raised by a capability outside the wrappers
        return type(exc)(exc.message, filename=filename, line=line)
    if isinstance(exc, NotImplementedError) and not in_body:
        detail = f": {message}" if message else ""
        return errors.NotImplementedFunction(
            f"the script does not implement {function}{detail}", filename=filename, line=line
        )
    if isinstance(exc, (ImportDenied, AccessDenied)):
        return errors.PolicyViolation(message, filename=filename, line=line)
    if isinstance(exc, RecursionError):
        return errors.LimitExceeded(
            "maximum recursion depth exceeded", filename=filename, line=line
        )
    if isinstance(exc, MemoryError):
        return errors.MemoryLimit("out of memory", filename=filename, line=line)
    name = "TypeError" if isinstance(exc, WriteDenied) else type(exc).__name__
    text = f"{name}: {message}" if message else name
    return errors.ScriptError(text, filename=filename, line=line)


def script_line(tb: TracebackType | None, filename: str) -> int | None:
    """The line of the innermost traceback entry that lies in the script."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable message>"
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "..."
    return text
