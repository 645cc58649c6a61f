"""A local SendGrid: the v3 API calls the SendGrid example module makes, and its Event Webhook.

``create_app(state)`` returns an ASGI app over a :class:`SendGridState` (see
:mod:`emulators.sendgrid_state` for the account model, the events and the signing). What it
follows from the published API (https://www.twilio.com/docs/sendgrid/api-reference):

* ``Authorization: Bearer <API key>`` on every ``/v3`` call; otherwise 401 with the
  ``{"errors": [{"field", "message"}]}`` envelope that every error uses.
* Token pagination: ``page_size`` + ``page_token``; responses carry ``_metadata`` with
  absolute ``self``/``next``/``prev`` URLs and ``count``. ``GET /v3/templates`` requires
  ``page_size`` (1-200) and lists ``generations=legacy`` unless asked otherwise; its versions
  come WITHOUT ``html_content`` (fetch the template or version for that).
* Contacts: ``PUT /v3/marketing/contacts`` → 202 ``{job_id}`` (asynchronous; see
  ``SendGridState.hold_imports``), ``GET …/contacts/imports/{id}``, ``POST
  …/contacts/search/emails``, ``GET …/contacts/count``. Lists: create, list, get, delete.
* Single sends: create (201, ``draft``), get, list, search (by name, status, categories),
  delete, ``PUT …/schedule`` (201
  ``{send_at, status: scheduled}``; 400 listing what is missing: sender, unsubscribe
  handling, subject/html, recipients), ``DELETE …/schedule``.
* Stats: ``GET /v3/marketing/stats/singlesends/{id}`` (``aggregated_by=total``), counted from
  the events the emulator generated.
* Templates: create, list, get, edit, delete; versions: create (``active: 1`` deactivates the
  others), get, edit, activate.
* Event webhook settings: ``GET/PATCH /v3/user/webhooks/event/settings`` and
  ``…/settings/signed`` (``{"enabled": true}`` → ``{"public_key"}``).

Rate limits (https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/
rate-limits), off unless switched on per API key: ``state.limit_rate(key, requests,
per_seconds)`` or ``PUT /_emulator/rate-limits`` with ``{"apiKey", "requests", "perSeconds"}``
(``"requests": null`` switches it off). A limited key's responses carry ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch seconds); past its budget it gets
429 ``too many requests`` until the reset (:class:`~emulators.sendgrid_state.RateLimit`).

Emulator controls (not SendGrid API, no API key): ``POST /_emulator/singlesends/{id}/deliver``
with ``{"outcomes": {email: outcome}, "default": "delivered"}`` sends a scheduled single send
and posts its events to the configured webhook; the same is ``state.deliver(...)`` in Python.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.sendgrid_state import OUTCOMES, EmulatorError, SendGridState, now_iso

__all__ = ["SendGridState", "create_app"]

Handler = Callable[[Request, SendGridState], Awaitable[Any]]


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"field": field, "message": message}]}, status_code=status)


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise EmulatorError(400, "invalid JSON in request body", None) from None
    if not isinstance(body, dict):
        raise EmulatorError(400, "the request body must be a JSON object", None)
    return body


def paginate(
    request: Request, items: list[Any], *, default_size: int | None, max_size: int
) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``items`` and the ``_metadata`` SendGrid returns with it."""
    raw_size = request.query_params.get("page_size")
    if raw_size is None and default_size is None:
        raise EmulatorError(400, "page_size is required", "page_size")
    try:
        size = int(raw_size) if raw_size is not None else int(default_size or 0)
        token = request.query_params.get("page_token") or ""
        start = int(base64.urlsafe_b64decode(token.encode()).decode() or 0) if token else 0
    except ValueError:
        raise EmulatorError(400, "invalid page_size or page_token", "page_token") from None
    if not 1 <= size <= max_size:
        raise EmulatorError(400, f"page_size must be between 1 and {max_size}", "page_size")

    def link(offset: int) -> str:
        query = dict(request.query_params)
        query.update(page_size=str(size), page_token=_token(offset) if offset else "")
        return f"{str(request.base_url).rstrip('/')}{request.url.path}?{urlencode(query)}"

    metadata: dict[str, Any] = {"self": link(start), "count": len(items)}
    if start + size < len(items):
        metadata["next"] = link(start + size)
    if start > 0:
        metadata["prev"] = link(max(start - size, 0))
    return items[start : start + size], metadata


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def self_link(request: Request, path: str) -> dict[str, str]:
    return {"self": f"{str(request.base_url).rstrip('/')}{path}"}


# --- contacts and lists ---------------------------------------------------------------------


async def put_contacts(request: Request, state: SendGridState) -> Any:
    body = await json_body(request)
    job_id = state.upsert_contacts(body.get("contacts"), body.get("list_ids"))
    return 202, {"job_id": job_id}


async def get_import(request: Request, state: SendGridState) -> Any:
    job = state.jobs.get(request.path_params["job_id"])
    if job is None:
        raise EmulatorError(404, "job not found", "id")
    return {k: v for k, v in job.items() if not k.startswith("_")}


async def search_emails(request: Request, state: SendGridState) -> Any:
    emails = (await json_body(request)).get("emails") or []
    result = {}
    for email in emails:
        contact = state.contacts.get(str(email).strip().lower())
        result[email] = {"contact": contact} if contact else {"error": "contact not found"}
    if not any("contact" in v for v in result.values()):
        raise EmulatorError(404, "no contacts found", "emails")
    return {"result": result}


async def contact_count(request: Request, state: SendGridState) -> Any:
    return {"contact_count": len(state.contacts), "billable_count": len(state.contacts)}


def list_view(request: Request, state: SendGridState, item: dict[str, Any]) -> dict[str, Any]:
    return {
        **item,
        "contact_count": state.list_contact_count(item["id"]),
        "_metadata": self_link(request, f"/v3/marketing/lists/{item['id']}"),
    }


async def post_list(request: Request, state: SendGridState) -> Any:
    item = state.create_list(str((await json_body(request)).get("name") or ""))
    return 201, list_view(request, state, item)


async def get_lists(request: Request, state: SendGridState) -> Any:
    items = [list_view(request, state, i) for i in state.lists.values()]
    page, metadata = paginate(request, items, default_size=100, max_size=1000)
    return {"result": page, "_metadata": metadata}


async def one_list(request: Request, state: SendGridState) -> Any:
    item = state.lists.get(request.path_params["list_id"])
    if item is None:
        raise EmulatorError(404, "list not found", "id")
    if request.method == "DELETE":
        with state.lock:
            del state.lists[item["id"]]
            for contact in state.contacts.values():
                contact["list_ids"] = [i for i in contact["list_ids"] if i != item["id"]]
        return 204, None
    return list_view(request, state, item)


# --- single sends and stats -----------------------------------------------------------------


async def post_single_send(request: Request, state: SendGridState) -> Any:
    return 201, state.create_single_send(await json_body(request))


async def get_single_sends(request: Request, state: SendGridState) -> Any:
    items = [
        {k: v for k, v in s.items() if k not in ("email_config", "send_to")}
        for s in state.single_sends.values()
    ]
    page, metadata = paginate(request, items, default_size=100, max_size=100)
    return {"result": page, "_metadata": metadata}


async def search_single_sends(request: Request, state: SendGridState) -> Any:
    """``POST …/singlesends/search``: ``{name?, status?: [...], categories?: [...]}``; a
    single send matches when its name contains ``name``, its status is one of ``status``
    and it has at least one of ``categories`` (each filter only when given)."""
    body = await json_body(request)
    name = body.get("name")
    statuses = body.get("status")
    categories = body.get("categories")
    for key, value in (("status", statuses), ("categories", categories)):
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise EmulatorError(400, f"{key} must be a list of strings", key)
    if name is not None and not isinstance(name, str):
        raise EmulatorError(400, "name must be a string", "name")
    with state.lock:
        items = [
            {k: v for k, v in s.items() if k not in ("email_config", "send_to")}
            for s in state.single_sends.values()
            if (not name or name in s["name"])
            and (not statuses or s["status"] in statuses)
            and (not categories or set(categories) & set(s["categories"]))
        ]
    page, metadata = paginate(request, items, default_size=100, max_size=100)
    return {"result": page, "_metadata": metadata}


async def one_single_send(request: Request, state: SendGridState) -> Any:
    item = state.single_send(request.path_params["ss_id"])
    if request.method == "DELETE":
        with state.lock:
            del state.single_sends[item["id"]]
        return 204, None
    return item


async def schedule(request: Request, state: SendGridState) -> Any:
    ss_id = request.path_params["ss_id"]
    if request.method == "DELETE":
        with state.lock:
            item = state.single_send(ss_id)
            item.update(status="draft", send_at=None)
        return item
    return 201, state.schedule(ss_id, (await json_body(request)).get("send_at"))


async def single_send_stats(request: Request, state: SendGridState) -> Any:
    ss_id = request.path_params["ss_id"]
    result = {
        "id": ss_id,
        "ab_variation": "all",
        "ab_phase": "all",
        "aggregation": "total",
        "stats": state.stats(ss_id),
    }
    page, metadata = paginate(request, [result], default_size=25, max_size=50)
    return {"results": page, "_metadata": metadata}


# --- templates ------------------------------------------------------------------------------

LIST_VERSION_FIELDS = (
    "id",
    "template_id",
    "active",
    "name",
    "subject",
    "updated_at",
    "generate_plain_content",
    "editor",
    "thumbnail_url",
)


def template_time() -> str:
    return now_iso().replace("T", " ").rstrip("Z")


def find_template(state: SendGridState, template_id: str) -> dict[str, Any]:
    template = state.templates.get(template_id)
    if template is None:
        raise EmulatorError(404, "resource not found", "template_id")
    return template


def find_version(template: dict[str, Any], version_id: str) -> dict[str, Any]:
    for version in template["versions"]:
        if version["id"] == version_id:
            return version
    raise EmulatorError(404, "resource not found", "version_id")


def make_active(template: dict[str, Any], version: dict[str, Any]) -> None:
    for other in template["versions"]:
        other["active"] = 1 if other is version else 0


async def post_template(request: Request, state: SendGridState) -> Any:
    body = await json_body(request)
    name, generation = body.get("name"), body.get("generation", "legacy")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise EmulatorError(400, "name is required (1-100 characters)", "name")
    if generation not in ("legacy", "dynamic"):
        raise EmulatorError(400, "generation must be legacy or dynamic", "generation")
    template_id = f"d-{uuid.uuid4().hex}" if generation == "dynamic" else str(uuid.uuid4())
    template = {
        "id": template_id,
        "name": name,
        "generation": generation,
        "updated_at": template_time(),
        "versions": [],
    }
    with state.lock:
        state.templates[template_id] = template
    return 201, template


async def get_templates(request: Request, state: SendGridState) -> Any:
    wanted = set((request.query_params.get("generations") or "legacy").split(","))
    items = [
        {**t, "versions": [{k: v.get(k) for k in LIST_VERSION_FIELDS} for v in t["versions"]]}
        for t in state.templates.values()
        if t["generation"] in wanted
    ]
    page, metadata = paginate(request, items, default_size=None, max_size=200)
    return {"result": page, "_metadata": metadata}


async def one_template(request: Request, state: SendGridState) -> Any:
    template = find_template(state, request.path_params["template_id"])
    if request.method == "DELETE":
        with state.lock:
            del state.templates[template["id"]]
        return 204, None
    if request.method == "PATCH":
        name = (await json_body(request)).get("name")
        if isinstance(name, str) and 1 <= len(name) <= 100:
            template.update(name=name, updated_at=template_time())
    return template


async def post_version(request: Request, state: SendGridState) -> Any:
    template = find_template(state, request.path_params["template_id"])
    body = await json_body(request)
    if not isinstance(body.get("name"), str) or not body["name"]:
        raise EmulatorError(400, "name is required", "name")
    if not isinstance(body.get("subject"), str) or not body["subject"]:
        raise EmulatorError(400, "subject is required", "subject")
    version = {
        "id": str(uuid.uuid4()),
        "template_id": template["id"],
        "active": 0,
        "name": body["name"],
        "subject": body["subject"],
        "html_content": body.get("html_content", ""),
        "plain_content": body.get("plain_content", ""),
        "generate_plain_content": body.get("generate_plain_content", True),
        "editor": body.get("editor", "code"),
        "updated_at": template_time(),
        "thumbnail_url": "",
    }
    with state.lock:
        template["versions"].append(version)
        if body.get("active") == 1 or len(template["versions"]) == 1:
            make_active(template, version)
    return 201, version


async def one_version(request: Request, state: SendGridState) -> Any:
    template = find_template(state, request.path_params["template_id"])
    version = find_version(template, request.path_params["version_id"])
    if request.method == "PATCH":
        body = await json_body(request)
        with state.lock:
            for key in ("name", "subject", "html_content", "plain_content", "editor"):
                if isinstance(body.get(key), str):
                    version[key] = body[key]
            if body.get("active") == 1:
                make_active(template, version)
            version["updated_at"] = template_time()
    return version


async def activate_version(request: Request, state: SendGridState) -> Any:
    template = find_template(state, request.path_params["template_id"])
    version = find_version(template, request.path_params["version_id"])
    with state.lock:
        make_active(template, version)
    return version


# --- event webhook settings, emulator controls ----------------------------------------------


async def webhook_settings(request: Request, state: SendGridState) -> Any:
    if request.method == "PATCH":
        body = await json_body(request)
        with state.lock:
            state.webhook.update({k: v for k, v in body.items() if k in state.webhook})
    return dict(state.webhook)


async def signed_settings(request: Request, state: SendGridState) -> Any:
    if request.method == "PATCH":
        state.signed = bool((await json_body(request)).get("enabled"))
    return {"public_key": state.public_key() if state.signed else ""}


async def control_rate_limit(request: Request, state: SendGridState) -> Any:
    body = await json_body(request)
    key, requests, per_seconds = body.get("apiKey"), body.get("requests"), body.get("perSeconds", 1)
    if not isinstance(key, str) or not key:
        raise EmulatorError(400, "apiKey is required", "apiKey")
    if requests is not None and (type(requests) is not int or requests < 0):
        raise EmulatorError(400, "requests must be a whole number >= 0, or null", "requests")
    if type(per_seconds) not in (int, float) or per_seconds <= 0:
        raise EmulatorError(400, "perSeconds must be a number > 0", "perSeconds")
    state.limit_rate(key, requests, per_seconds)
    return {"apiKey": key, "requests": requests, "perSeconds": per_seconds}


async def control_deliver(request: Request, state: SendGridState) -> Any:
    body = await json_body(request)
    outcomes, default = body.get("outcomes") or {}, body.get("default", "delivered")
    unknown = sorted({default, *outcomes.values()} - set(OUTCOMES))
    if unknown:
        raise EmulatorError(400, f"unknown outcomes {unknown}; known: {sorted(OUTCOMES)}")
    # deliver() posts to the webhook synchronously; run it off the event loop.
    from starlette.concurrency import run_in_threadpool

    events = await run_in_threadpool(
        state.deliver, request.path_params["ss_id"], outcomes, default=default
    )
    return {"events": len(events), "posts": [p["status"] for p in state.posts]}


def route(path: str, handler: Handler, methods: list[str], state: SendGridState) -> Route:
    async def endpoint(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        line = f"{request.method} {request.url.path}{query}"
        state.requests.append(line)
        authorization = request.headers.get("authorization")
        if path.startswith("/v3") and not state.authorized(authorization):
            return error_response(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        allowed, limit_headers = (
            state.rate_check(authorization) if path.startswith("/v3") else (True, {})
        )
        if not allowed:
            state.throttled.append(line)
            response: Response = error_response(429, "too many requests")
        else:
            response = await respond(request, handler)
        response.headers.update(limit_headers)
        return response

    async def respond(request: Request, handler: Handler) -> Response:
        try:
            result = await handler(request, state)
        except EmulatorError as exc:
            return JSONResponse({"errors": exc.errors}, status_code=exc.status)
        status, body = result if isinstance(result, tuple) else (200, result)
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status)

    return Route(path, endpoint, methods=methods)


def create_app(state: SendGridState | None = None) -> Starlette:
    """The emulator app over ``state`` (a fresh account when omitted; see ``app.state``)."""
    state = state if state is not None else SendGridState()
    mc = "/v3/marketing"
    table: list[tuple[str, Handler, list[str]]] = [
        (f"{mc}/contacts", put_contacts, ["PUT"]),
        (f"{mc}/contacts/count", contact_count, ["GET"]),
        (f"{mc}/contacts/imports/{{job_id}}", get_import, ["GET"]),
        (f"{mc}/contacts/search/emails", search_emails, ["POST"]),
        (f"{mc}/lists", post_list, ["POST"]),
        (f"{mc}/lists", get_lists, ["GET"]),
        (f"{mc}/lists/{{list_id}}", one_list, ["GET", "DELETE"]),
        (f"{mc}/singlesends", post_single_send, ["POST"]),
        (f"{mc}/singlesends", get_single_sends, ["GET"]),
        (f"{mc}/singlesends/search", search_single_sends, ["POST"]),
        (f"{mc}/singlesends/{{ss_id}}", one_single_send, ["GET", "DELETE"]),
        (f"{mc}/singlesends/{{ss_id}}/schedule", schedule, ["PUT", "DELETE"]),
        (f"{mc}/stats/singlesends/{{ss_id}}", single_send_stats, ["GET"]),
        ("/v3/templates", post_template, ["POST"]),
        ("/v3/templates", get_templates, ["GET"]),
        ("/v3/templates/{template_id}", one_template, ["GET", "PATCH", "DELETE"]),
        ("/v3/templates/{template_id}/versions", post_version, ["POST"]),
        ("/v3/templates/{template_id}/versions/{version_id}", one_version, ["GET", "PATCH"]),
        ("/v3/templates/{template_id}/versions/{version_id}/activate", activate_version, ["POST"]),
        ("/v3/user/webhooks/event/settings", webhook_settings, ["GET", "PATCH"]),
        ("/v3/user/webhooks/event/settings/signed", signed_settings, ["GET", "PATCH"]),
        ("/_emulator/singlesends/{ss_id}/deliver", control_deliver, ["POST"]),
        ("/_emulator/rate-limits", control_rate_limit, ["PUT"]),
    ]
    app = Starlette(routes=[route(p, h, m, state) for p, h, m in table])
    app.state.sendgrid = state
    return app
