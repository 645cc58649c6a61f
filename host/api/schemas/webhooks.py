"""API models: webhook receipts, stored requests, replays, shadow runs and the mail outbox."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime


class WebhookReceiptOut(ApiModel):
    id: int
    module: str
    received_at: IsoTime
    status: int = Field(description="HTTP status answered")
    applied: int = Field(description="Actions applied")
    skipped: list[Any] = Field(description="Actions skipped, with their reasons")
    error: str | None
    version: str | None = Field(None, description="The module version that served it")
    request_id: int | None = Field(None, description="The stored request (for replay)")
    replay_of: int | None = Field(None, description="The receipt this one replayed")


class StoredRequestOut(ApiModel):
    """A stored webhook request, masked: the URL's token, credential and signature headers
    and every secret setting are `***`; `body` is a preview."""

    id: int
    module: str
    received_at: str
    size_bytes: int
    method: str
    url: str
    headers: list[list[str]]
    body: str
    body_truncated: bool


class WebhookReplayOut(ApiModel):
    replay_of: int = Field(description="The receipt whose request was replayed")
    version: str
    dry_run: bool
    receipt: int | None = Field(description="The new receipt (None for a dry run)")
    status: int
    applied: list[Any]
    skipped: list[Any]
    error: str | None = Field(None, description="Why the module call failed, if it did")


class ShadowSideOut(ApiModel):
    """What one version did with a stored request (`source`: `receipt`, or `rerun` for a
    receipt older than kept actions) or would do (`shadow`); `none` when nothing is known."""

    version: str | None
    source: str
    status: int | None = Field(description="The reply status (500/501 when the call failed)")
    error: str | None = Field(description="`kind: message` when the call failed")
    actions: list[Any] | None = Field(
        description="The returned actions (secrets masked; a SendEmail body as its length "
        "and SHA-256); null when the call failed"
    )
    duration_ms: float | None
    unmatched_fetches: list[str] = Field(
        description="Fetches refused because no recording answered them (never made)"
    )
    storage_writes: list[str] = Field(
        description="Storage keys the call wrote and host callbacks it was refused "
        "(none of it stored)"
    )
    fetches: list[Any]


class ShadowResultOut(ApiModel):
    request: int = Field(description="The stored webhook request")
    received_at: IsoTime
    verdict: str = Field(description="`same`, `differs` or `no_baseline`")
    current: ShadowSideOut
    candidate: ShadowSideOut
    only_current: list[Any] = Field(description="Actions only the current version returned")
    only_candidate: list[Any] = Field(description="Actions only the shadowed version returned")
    reordered: bool = Field(description="The same actions, in another order")


class ShadowRunOut(ApiModel):
    tenant: str
    module: str
    version: str = Field(description="The shadowed version")
    current_version: str = Field(description="The version pinned for the tenant")
    matched: int = Field(description="Stored requests in the window (at most `limit` ran)")
    stopped: str = Field(description="`complete`, or `time` when the time was up first")
    elapsed_ms: float
    same: int
    differs: int
    no_baseline: int
    requests: list[ShadowResultOut]


class OutboxMessageOut(ApiModel):
    id: int
    module: str
    recipient: str
    subject: str
    status: str = Field(description="queued, sent or failed")
    attempts: int
    error: str | None
    created_at: IsoTime
    sent_at: IsoTime | None
