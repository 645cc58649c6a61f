"""The ``Idempotency-Key`` header of the creating routes (see ``host/idempotency.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Response

from host.idempotency import HEADER, KEY_TTL, Answer

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="Any unique string (1-255 visible ASCII characters). A retry with the "
        "same key and the same body gets the first answer again (with "
        f"`Idempotent-Replayed: true`) instead of repeating the request; the same key with "
        f"another body is a 422. Keys are kept {KEY_TTL.total_seconds() / 3600:g} hours, per "
        "tenant and route.",
    ),
]

REPLAYED_HEADER = "Idempotent-Replayed"


def answered(response: Response, answer: Answer) -> Any:
    """The answer's body, with its status (and the replay marker) set on ``response``."""
    response.status_code = answer.status_code
    if answer.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return answer.body
