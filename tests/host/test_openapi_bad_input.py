"""Every operation in ``/openapi.json`` answers bad input with a 4xx, never a 5xx.

The operations are read by schemathesis from the app's own OpenAPI document (in-process,
over ASGI) at collection time, so a route added later is covered without touching this
file. For each one, schemathesis generates requests from the documented parameters and
body schema (hypothesis with ``derandomize=True``: the same cases on every run), and the
test spoils them the ways clients and
attackers do: lone surrogates, NUL characters, nesting past the 64-level limit, invalid
UTF-8, non-JSON bytes, and NUL / surrogates in path and query parameters — sent with the
admin token and with the tenant's API key. The module behind the tenant answers every
function validly, so any 5xx is the host's fault.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.api.app import create_app
from sandbox.limits import MAX_NESTING_DEPTH
from tests.host.conftest import ADMIN_TOKEN, email_manifest, make_host

BODY_METHODS = {"post", "put", "patch"}
BAD_TEXT = ["\ud800", "\x00", "a\udfffb", "nul\x00in the middle"]
RAW_BODIES = [
    b'{"settings": {"api_key": "\xff\xfe"}}',  # invalid UTF-8 inside a string
    b'{"name": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 (invalid UTF-8)
    b"\xff\xfe\x00\x00",
    b"[" * 100_000,  # deeper than the JSON parser's own stack
    b"not json at all",
    b"",
]
RAW_CSV = [
    b"name,email\nAnn\xff,a@x.test\n",
    b"name\nA\x00nn\n",
    b"\xef\xbb\xbfname\n\xed\xa0\x80\n",
]

ROBUST_SCRIPT = '''\
"""Answers every function validly whatever it is given, so a 5xx can only be the host's."""


def CRM_Marketing_ImportTemplates(offset, limit):
    return []


def CRM_Marketing_ExportContacts(contactIds):
    return None


def CRM_Marketing_PrepareCampaign(campaignId, type, contacts):
    return None


def CRM_Marketing_CreateCampaign(request):
    return {"externalId": "ext-" + request["campaignId"]}


def CRM_Marketing_GetCampaignStats(campaignExternalId):
    return {"total": 1, "sent": 1}


def CRM_Marketing_ParseWebhookRequest(request):
    return {"actions": []}


def CRM_Marketing_GetTemplateHTML(templateExternalId):
    return "<p>hello</p>"


def CRM_Marketing_SetTemplateHTML(html, name, templateExternalId=None):
    return "tpl-1"
'''


def _operations() -> list[Any]:
    """The app's operations, read by schemathesis from its own ``/openapi.json`` (in-process,
    ASGI). Building a Host has no side effects, so this needs no database."""
    with tempfile.TemporaryDirectory() as folder:
        host = make_host(Path(folder) / "host.db")
        try:
            schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(host))
            return [result.ok() for result in schema.get_all_operations()]
        finally:
            host.close()


OPERATIONS = _operations()


@dataclass
class World:
    """A served host with one tenant, an enabled module and an object of every kind."""

    client: TestClient
    tenant_key: str
    #: values of path parameters that name existing objects
    known: dict[str, list[str]]
    #: bodies the operation accepts, keyed by (method, path template): the spoilt forms
    #: of a valid body get furthest into the host
    valid_bodies: dict[tuple[str, str], list[Any]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pool: Any) -> Iterator[World]:
    host = make_host(tmp_path_factory.mktemp("openapi") / "host.db", sandbox=pool)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(host)) as client:
        created = client.post("/api/v1/tenants", headers=admin, json={"id": "acme", "name": "A"})
        manifest = email_manifest(id="fuzzmail", egress=[])
        body = {"manifest": manifest, "script": ROBUST_SCRIPT}
        assert client.post("/api/v1/modules", headers=admin, json=body).status_code == 201
        enabled = client.put(
            "/api/v1/tenants/acme/modules/fuzzmail",
            headers=admin,
            json={"settings": {"api_key": "fuzz-api-key-123"}},
        )
        assert enabled.status_code == 200, enabled.text
        contacts = client.post(
            "/api/v1/tenants/acme/contacts",
            headers=admin,
            json=[{"id": "c1", "name": "Ann", "email": "ann@acme.test"}],
        )
        assert contacts.status_code == 200, contacts.text
        imported = client.post(
            "/api/v1/tenants/acme/modules/fuzzmail/templates/import", headers=admin
        )
        assert imported.status_code == 200, imported.text
        token = enabled.json()["webhookUrl"].rstrip("/").rsplit("/", 1)[-1]
        known = {
            "tenant_id": ["acme"],
            "module_id": ["fuzzmail"],
            "version": ["1.0.0"],
            "token": [token],
            "contact_id": ["c1"],
        }
        settings_body = {"settings": {"api_key": "fuzz-api-key-123", "sender_email": "a@b.test"}}
        campaign = {
            "module": "fuzzmail",
            "name": "Spring",
            "type": "Email",
            "subject": "Hello",
            "senderName": "Acme",
            "senderEmail": "news@acme.test",
            "contactIds": ["c1"],
            "html": "<p>hi</p>",
        }
        template = {"module": "fuzzmail", "name": "Welcome", "html": "<p>hi</p>"}
        valid_bodies = {
            ("post", "/api/v1/tenants"): [{"id": "globex", "name": "Globex"}],
            ("put", "/api/v1/tenants/{tenant_id}/modules/{module_id}"): [settings_body],
            ("patch", "/api/v1/tenants/{tenant_id}/modules/{module_id}"): [settings_body],
            ("post", "/api/v1/tenants/{tenant_id}/contacts"): [
                [{"id": "c2", "name": "Bob", "email": "bob@acme.test", "phone": "+1 555 0100"}]
            ],
            ("post", "/api/v1/tenants/{tenant_id}/campaigns"): [campaign],
            ("post", "/api/v1/tenants/{tenant_id}/templates"): [template],
            ("post", "/api/v1/tenants/{tenant_id}/templates/{template_id}/publish"): [{}],
            ("post", "/api/v1/modules"): [
                {"manifest": email_manifest(id="other", egress=[]), "script": ROBUST_SCRIPT}
            ],
        }
        made = client.post("/api/v1/tenants/acme/templates", headers=admin, json=template)
        assert made.status_code in (200, 201), made.text
        launched = client.post("/api/v1/tenants/acme/campaigns", headers=admin, json=campaign)
        assert launched.status_code == 202, launched.text
        known["template_id"] = [made.json()["id"]]
        known["campaign_id"] = [launched.json()["id"]]
        yield World(client, created.json()["apiKey"], known, valid_bodies)
    host.close()


def _nested(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def _spoil_strings(value: Any, bad: str) -> Any:
    if isinstance(value, str):
        return value + bad
    if isinstance(value, list):
        return [_spoil_strings(v, bad) for v in value] or [bad]
    if isinstance(value, dict):
        return {k: _spoil_strings(v, bad) for k, v in value.items()} or {"name": bad}
    return value


def _variants(value: Any) -> list[Any]:
    """The generated value and its spoilt forms: bad text in every string, and one level
    past the nesting limit."""
    deep = _nested(MAX_NESTING_DEPTH, "leaf")
    too_deep = {**value, next(iter(value), "x"): deep} if isinstance(value, dict) else deep
    return [value, *(_spoil_strings(value, bad) for bad in BAD_TEXT), too_deep]


def _quoted(value: str) -> str:
    return quote(value, safe="", errors="surrogatepass")


WEIRD_VALUES = ["missing", "a\x00b", "\ud800", "\u00e9\u4e2d", " ", "x" * 300]
JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def _likely(data: st.DataObject, preferred: list[Any], others: list[Any]) -> Any:
    """One of ``preferred`` three times in four (when there are any), else one of
    ``others``: requests must get past "not found" to reach the code that stores input."""
    if preferred and (not others or data.draw(st.integers(0, 3)) < 3):
        return data.draw(st.sampled_from(preferred))
    return data.draw(st.sampled_from(others))


def _body(case: Any, world: World, data: st.DataObject) -> tuple[bytes, str] | None:
    if case.method.lower() not in BODY_METHODS:
        return None
    if case.media_type == "text/csv":
        generated = (
            case.body.encode("utf-8", "surrogatepass") if isinstance(case.body, str) else b""
        )
        return _likely(data, RAW_CSV, [generated]), "text/csv"
    if data.draw(st.integers(0, 3)) == 0:
        return data.draw(st.sampled_from(RAW_BODIES)), "application/json"
    generated = case.body if isinstance(case.body, JSON_TYPES) else {}
    valid = world.valid_bodies.get((case.method.lower(), case.operation.path), [])
    value = _likely(data, valid, [generated])
    return json.dumps(data.draw(st.sampled_from(_variants(value)))).encode(), "application/json"


def _url(case: Any, world: World, data: st.DataObject) -> str:
    path = {}
    for name, generated in (case.path_parameters or {}).items():
        known = [_quoted(v) for v in world.known.get(name, [])]
        path[name] = _likely(data, known, [str(generated), *map(_quoted, WEIRD_VALUES)])
    query = []
    for name, value in (case.query or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        text = _likely(data, [text], WEIRD_VALUES)
        query.append(f"{_quoted(name)}={_quoted(text)}")
    url = case.operation.path.format(**path)
    return f"{url}?{'&'.join(query)}" if query else url


@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_no_operation_answers_bad_input_with_a_5xx(world: World, operation: Any) -> None:
    @settings(
        max_examples=10,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), data=st.data())
    def check(case: Any, data: st.DataObject) -> None:
        url = _url(case, world, data)
        caller = data.draw(st.sampled_from(["admin", "tenant"]))
        token = ADMIN_TOKEN if caller == "admin" else world.tenant_key
        headers = {"Authorization": f"Bearer {token}"}
        body = _body(case, world, data)
        content = None
        if body is not None:
            content, headers["Content-Type"] = body
        response = world.client.request(case.method.upper(), url, headers=headers, content=content)
        assert response.status_code < 500, (case.method, url, content, response.text)

    check()
    assert world.client.get("/healthz").status_code == 200
