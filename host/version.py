"""The installed version of crm-module-host, read once from the package metadata."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def host_version() -> str:
    try:
        return version("crm-module-host")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
