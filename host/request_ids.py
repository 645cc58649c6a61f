"""The request id: one correlation id per HTTP request, carried to everything it causes.

An incoming ``X-Request-ID`` is kept when it is sane (1-128 characters of letters, digits
and ``._:-``, what load balancers and tracing proxies send), so a request can be followed
from the proxy's log into this host's; anything else is replaced by a fresh id rather than
refused (a bad header must not make a webhook fail). The id lives in a context variable
for the request's duration: the invoker puts it on every :class:`~host.calls.ModuleCall`
(so it is stored on the invocation log row and handed to the sandbox worker as an opaque
label), and JSON log lines carry it. Thread pools that serve routes copy the context
(:func:`host.api.executors.run_in`), so the id follows the request into them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

HEADER = "X-Request-ID"
MAX_LENGTH = 128

_SANE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def accepted_or_new(incoming: str | None) -> str:
    """The caller's id when it is sane, else a new one (32 hex digits)."""
    if incoming is not None and _SANE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being served in this context, None outside one (background
    work: campaign jobs, the acknowledge-first backlog, CLI runs)."""
    return _current.get()


@contextmanager
def request_scope(request_id: str) -> Iterator[str]:
    """Make ``request_id`` current for the block (and what it starts in copied contexts)."""
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)
