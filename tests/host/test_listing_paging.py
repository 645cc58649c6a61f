"""Every listing refuses the paging parameters it does not use with a 422 naming them,
instead of silently answering the first page again (``?offset=`` on a cursor listing)."""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from host.api.app import create_app
from host.api.paging import PAGING_PARAMETERS
from host.platform import Host

#: every listing of the API and the paging parameters it uses
LISTINGS: dict[str, tuple[str, ...]] = {
    "/-/plugins": (),
    "/api/v1/modules": (),
    "/api/v1/tenants": (),
    "/api/v1/tenants/{tenant_id}/modules": (),
    "/api/v1/tenants/{tenant_id}/templates": (),
    "/api/v1/tenants/{tenant_id}/contacts": ("after", "limit"),
    "/api/v1/tenants/{tenant_id}/campaigns": ("offset", "limit"),
    "/api/v1/tenants/{tenant_id}/campaigns/{campaign_id}/deliveries": ("after", "limit"),
    "/api/v1/tenants/{tenant_id}/invocations": ("before", "limit"),
    "/api/v1/tenants/{tenant_id}/webhooks/receipts": ("limit",),
    "/api/v1/tenants/{tenant_id}/webhooks/requests": ("limit",),
    "/api/v1/tenants/{tenant_id}/outbox": ("limit",),
    "/api/v1/tenants/{tenant_id}/modules/{module_id}/messenger/types": (),
    "/api/v1/tenants/{tenant_id}/modules/{module_id}/messenger/bots": (),
    "/api/v1/audit": ("before", "limit"),
    "/api/v1/jobs": ("before", "limit"),
}


def _paging_guard(route: APIRoute) -> tuple[str, ...] | None:
    for dependency in route.dependant.dependencies:
        used = getattr(dependency.call, "paged_by", None)
        if used is not None:
            return tuple(used)
    return None


def _is_listing(route: APIRoute) -> bool:
    returns = inspect.signature(route.endpoint).return_annotation
    hints = typing.get_type_hints(route.endpoint)
    query = {p.name for p in route.dependant.query_params}
    return typing.get_origin(hints.get("return", returns)) is list or bool(
        query & set(PAGING_PARAMETERS)
    )


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """The app's API routes, including those of routers it included."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found += _api_routes(router.routes)
    return found


def test_every_listing_declares_how_it_pages(host: Host) -> None:
    """Found from the app itself, so a new listing without the guard fails here. The
    console's pages are HTML for people, not API listings: left out."""
    routes = [
        r
        for r in _api_routes(create_app(host).routes)
        if "GET" in r.methods and not r.path.startswith("/console")
    ]
    assert len(routes) > 15
    listings = {
        r.path: _paging_guard(r) for r in routes if _is_listing(r) or _paging_guard(r) is not None
    }
    assert listings == LISTINGS
    for route in routes:  # and every parameter a listing uses is one it really takes
        used = _paging_guard(route) or ()
        query = {p.alias for p in route.dependant.query_params}
        assert set(used) <= query, route.path


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"tenant_id": "acme"}.get(m[1], "x"), path)


CASES = [
    (path, name)
    for path, used in LISTINGS.items()
    for name in ("offset", "page", "cursor", "after", "before", "limit")
    if name not in used
]


@pytest.mark.parametrize(("path", "name"), CASES)
def test_unused_paging_parameters_are_refused(
    client: TestClient, admin: dict[str, str], tenant: Any, path: str, name: str
) -> None:
    response = client.get(_url(path), params={name: "100"}, headers=admin)
    assert response.status_code == 422, response.text
    body = response.json()
    assert [p["location"] for p in body["problems"]] == [f"query.{name}"]
    assert "not a parameter of this listing" in body["problems"][0]["message"]
    assert client.get("/api/v1/tenants", headers=admin).status_code == 200  # still serving


def test_deliveries_offset_is_refused_not_ignored(
    client: TestClient, admin: dict[str, str], tenant: Any
) -> None:
    url = "/api/v1/tenants/acme/campaigns/none/deliveries"
    response = client.get(url, params={"offset": "50", "page": "2"}, headers=admin)
    assert response.status_code == 422
    problems = {p["location"]: p["message"] for p in response.json()["problems"]}
    assert set(problems) == {"query.offset", "query.page"}
    assert "its paging parameters are after, limit" in problems["query.offset"]
    assert client.get(url, params={"after": "c1"}, headers=admin).status_code == 404


def test_used_paging_parameters_still_work(
    client: TestClient, admin: dict[str, str], tenant: Any
) -> None:
    listed = client.get(
        "/api/v1/tenants/acme/campaigns", params={"offset": 0, "limit": 5}, headers=admin
    )
    assert (listed.status_code, listed.json()) == (200, [])
    page = client.get("/api/v1/tenants/acme/invocations", params={"limit": 5}, headers=admin)
    assert page.status_code == 200 and page.json()["items"] == []
