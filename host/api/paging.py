"""How listings page, and the paging parameters each one refuses.

A listing that silently ignores a paging parameter it does not use answers the first page
again (``?offset=100`` on a cursor-paged listing), and a client loops forever or misses
data. Every listing therefore declares how it pages (:func:`paged_by`), and a request with
any *other* well-known paging parameter is a 422 naming it and saying what to use instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from host.errors import InvalidInput, Problem

#: the paging parameters clients commonly send
PAGING_PARAMETERS: tuple[str, ...] = (
    "limit",
    "offset",
    "page",
    "cursor",
    "after",
    "before",
    "skip",
    "pageSize",
    "page_size",
    "per_page",
)


def paged_by(*used: str) -> Any:
    """A route dependency refusing the paging parameters of :data:`PAGING_PARAMETERS` that
    this listing does not use (``used``: the ones it does, e.g. ``"after"``)."""
    unused = [name for name in PAGING_PARAMETERS if name not in used]
    how = f"its paging parameters are {', '.join(used)}" if used else "it is not paged"

    def refuse_unused_paging(request: Request) -> None:
        given = [name for name in unused if name in request.query_params]
        if given:
            raise InvalidInput(
                "request is invalid",
                [
                    Problem(f"query.{name}", f"not a parameter of this listing ({how})")
                    for name in given
                ],
            )

    refuse_unused_paging.paged_by = used  # type: ignore[attr-defined]
    return Depends(refuse_unused_paging)
