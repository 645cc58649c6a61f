"""Every 2xx JSON answer in ``/openapi.json`` has a typed schema, so clients can be generated.

The document is the served one (``GET /openapi.json`` of the real app), walked operation by
operation: a route added later without a response model fails here, naming it. "Typed"
means what a client generator can use: a ``$ref`` to a model with properties, an object
with ``properties``, an array whose items are typed, or a scalar type. ``{}`` and a bare
``{"type": "object", "additionalProperties": true}`` (what ``-> dict[str, Any]`` gives) are
not. Exempt, because they are not JSON resources: the public webhook endpoint ``/hooks/...``
(it answers whatever the module says), ``/metrics`` (Prometheus text), ``/console`` (HTML),
file downloads (no ``application/json`` content) and 204 (no body).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from host.api.schemas import ApiModel
from host.platform import Host

EXEMPT_PREFIXES = ("/hooks/", "/metrics", "/console")


class Thing(ApiModel):
    """A typed answer of the scratch app below."""

    name: str


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(document, node)


def untyped_reason(document: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """Why ``schema`` does not describe a shape (None when it does)."""
    schema = _resolve(document, schema)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        for branch in branches:
            if _resolve(document, branch).get("type") == "null":
                continue
            reason = untyped_reason(document, branch)
            if reason:
                return reason
        return None
    kind = schema.get("type")
    if kind is None and "properties" not in schema:
        return f"no type: {schema}"
    if kind == "array":
        return untyped_reason(document, schema.get("items") or {})
    if (kind == "object" or kind is None) and not schema.get("properties"):
        return f"an object without properties: {schema}"
    return None


def untyped_answers(document: dict[str, Any]) -> tuple[list[str], int]:
    """The 2xx JSON answers of ``document`` without a typed schema, and how many were
    checked."""
    problems, checked = [], 0
    for path, operations in document["paths"].items():
        if path.startswith(EXEMPT_PREFIXES):
            continue
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if not status.startswith("2") or status == "204":
                    continue
                content = response.get("content", {})
                if "application/json" not in content:
                    continue  # a file download (or no body)
                checked += 1
                schema = content["application/json"].get("schema", {})
                reason = untyped_reason(document, schema)
                if reason:
                    problems.append(f"{method.upper()} {path} {status}: {reason}")
    return problems, checked


def test_every_2xx_json_answer_of_the_api_has_a_typed_schema(client: TestClient) -> None:
    reply = client.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    problems, checked = untyped_answers(document)
    assert problems == []
    operations = sum(
        1
        for path, methods in document["paths"].items()
        if not path.startswith(EXEMPT_PREFIXES)
        for _ in methods
    )
    # every operation outside the exemptions answers JSON, and each was checked
    assert checked == operations
    assert checked >= 33


def test_the_answers_name_their_models_and_camel_case_fields(client: TestClient) -> None:
    """The shapes are the API's resources with their JSON (camelCase) names."""
    document = client.get("/openapi.json").json()
    ok = document["paths"]["/api/v1/tenants/{tenant_id}/campaigns/{campaign_id}"]["get"]
    schema = ok["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/CampaignOut"}
    campaign = document["components"]["schemas"]["CampaignOut"]["properties"]
    assert {"externalId", "moduleVersion", "cancelRequested", "createdAt", "progress"} <= set(
        campaign
    )
    assert "external_id" not in campaign
    listing = document["paths"]["/api/v1/tenants/{tenant_id}/webhooks/receipts"]["get"]
    items = listing["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    assert items == {"$ref": "#/components/schemas/WebhookReceiptOut"}


def test_the_check_finds_an_untyped_answer() -> None:
    """The walk is not vacuous: a dict, a list of dicts and a bare value are reported, a
    model and a list of models are not, and the exemptions are skipped."""
    app = FastAPI()

    @app.get("/loose")
    def loose() -> dict[str, Any]:
        return {}

    @app.get("/loose-list")
    def loose_list() -> list[dict[str, Any]]:
        return []

    @app.get("/anything")
    def anything() -> Any:
        return None

    @app.get("/thing")
    def thing() -> Thing:
        return Thing(name="x")

    @app.get("/things")
    def things() -> list[Thing]:
        return []

    @app.get("/hooks/x")
    def hook() -> dict[str, Any]:
        return {}

    @app.delete("/thing", status_code=204)
    def delete_thing() -> None:
        return None

    problems, checked = untyped_answers(app.openapi())
    assert [p.split(":")[0] for p in problems] == [
        "GET /loose 200",
        "GET /loose-list 200",
        "GET /anything 200",
    ]
    assert checked == 5


def test_answers_keep_their_json_names_and_time_format(
    client: TestClient, host: Host, admin: dict[str, str], tenant: tuple[str, str]
) -> None:
    """Typed answers did not change the wire: camelCase names, times as ``isoformat()``
    (``+00:00``, not pydantic's ``Z``), and nothing a model does not declare."""
    tenant_id, key = tenant
    shown = client.get(f"/api/v1/tenants/{tenant_id}", headers=admin)
    assert shown.status_code == 200
    stored = host.tenants.get(tenant_id)
    assert shown.json() == {
        "id": "acme",
        "name": "Acme Corp",
        "createdAt": stored.created_at.isoformat(),
    }
    assert shown.json()["createdAt"].endswith("+00:00")
    rotated = client.post(f"/api/v1/tenants/{tenant_id}/api-key/rotate", headers=admin)
    assert rotated.status_code == 200 and set(rotated.json()) == {"id", "apiKey"}
    assert rotated.json()["apiKey"] != key
