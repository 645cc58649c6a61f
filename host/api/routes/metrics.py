"""``GET /metrics``: the host's Prometheus metrics (:mod:`host.metrics`).

Who may scrape: the admin token, or ``CRM_HOST_METRICS_TOKEN``, a credential that opens this
one route and nothing else, for the Prometheus configuration. The answer names modules,
functions, egress hosts and counts, never a tenant, but it still tells who runs what, so it
is open to anyone without a token only when the admin says so (``CRM_HOST_METRICS_PUBLIC``,
for a deployment where only the scraper reaches the host)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from host.api.bodies import checked_router
from host.api.deps import HostDep
from host.errors import Unauthorized
from host.platform import Host

router = checked_router(tags=["meta"])

_bearer = HTTPBearer(auto_error=False, description="Admin token or CRM_HOST_METRICS_TOKEN")


def require_scraper(
    host: HostDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if host.settings.metrics_public:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not _may_scrape(host, credentials.credentials):
        raise Unauthorized("this token may not read the metrics")


def _may_scrape(host: Host, token: str) -> bool:
    configured = host.settings.metrics_token
    if configured is not None and hmac.compare_digest(
        token.encode(), configured.get_secret_value().encode()
    ):
        return True
    return host.admin_tokens.is_admin(token)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_scraper)],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(host: HostDep) -> Response:
    """Every metric in the Prometheus text format (docs/operations.md lists them)."""
    return Response(host.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
