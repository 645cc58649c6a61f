"""Bounded thread pools that keep webhook and tenant work apart from the admin API.

FastAPI runs sync routes (and sync dependencies) in AnyIO's one shared thread pool. A flood of
webhooks whose modules sleep, or a tenant hammering its API, would take every thread of it,
and the admin API and ``/healthz`` would queue behind them. So webhook work and tenant-route
work run in pools of their own (``CRM_HOST_WEBHOOK_THREADS``, ``CRM_HOST_TENANT_API_THREADS``);
AnyIO's pool is left to the admin API and to the short authentication dependency. How long a
thread of these pools can be held is bounded by the sandbox's wait deadline and the module's
wall-time limit.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request

from host.config import HostSettings

T = TypeVar("T")


class RouteExecutors:
    """The webhook pool and the tenant-API pool of one app. Threads start on first use."""

    def __init__(self, settings: HostSettings):
        self.webhooks = ThreadPoolExecutor(settings.webhook_threads, "webhooks")
        self.tenant_api = ThreadPoolExecutor(settings.tenant_api_threads, "tenant-api")

    def close(self) -> None:
        for pool in (self.webhooks, self.tenant_api):
            pool.shutdown(wait=False, cancel_futures=True)


async def run_in(executor: ThreadPoolExecutor, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in ``executor``, awaited; the caller's context variables go along."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(context.run, func, *args))


def executors_of(request: Request) -> RouteExecutors:
    executors: RouteExecutors = request.app.state.executors
    return executors


_REQUEST_PARAMETER = "_tenant_work_request"


def tenant_work(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Decorate a sync tenant route so that its body runs in the tenant-API pool.

    The returned coroutine function has the route's own signature (annotations resolved, so
    FastAPI sees the same parameters, dependencies and response model) plus the request,
    through which it finds the app's pool. It deliberately has no ``__wrapped__``: FastAPI
    unwraps it to decide whether a route is async.
    """
    signature = inspect.signature(func, eval_str=True)
    request = inspect.Parameter(
        _REQUEST_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=Request
    )

    async def endpoint(*args: Any, **kwargs: Any) -> T:
        executors = executors_of(kwargs.pop(_REQUEST_PARAMETER))
        return await run_in(executors.tenant_api, functools.partial(func, *args, **kwargs))

    endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), request]
    )
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(endpoint, attribute, getattr(func, attribute))
    return endpoint
