"""The request of a ParseWebhookRequest case, from the shorthand a case file may use.

Why shorthands: services do not all post JSON. Mailchimp posts a form
(``application/x-www-form-urlencoded``), SendGrid and Unisender Go sign the exact raw bytes
of the body, and a capture of a real delivery is a raw HTTP message. A case says which::

    {"json": {...}}                                  a JSON body (content-type application/json)
    {"form": {"type": "subscribe", "data[email]": "a@x.test"}}   (or a list of [name, value])
    {"bodyFile": "fixtures/signed.body", "headers": {...}}       the file's exact bytes
    {"http": "fixtures/webhook.http"}                a raw HTTP request: line, headers, body
    {"body": "...", "headers": {...}}                the body text as it is

``method``, ``url``, ``headers`` and ``query`` may be given beside any of them (case headers
win over a captured message's). Every shorthand but ``json`` and a bare ``body`` becomes the
FetchRequest exactly as the host's webhook route builds it
(:func:`host.marketing.webhooks.fetch_request`): header names lower-cased, the
``x-crm-host-body-encoding`` header set, the body decoded as the route decodes it — so a
signature check over ``request.body.encode(request.headers["x-crm-host-body-encoding"])``
sees the bytes the service signed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from host.errors import InvalidInput, Problem
from host.marketing.webhooks import IncomingRequest, fetch_request

LOCAL_URL = "https://crm.example/hooks/local/module/token"
BODY_FORMS = ("json", "form", "bodyFile", "http", "body")
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BODY_FILE_BYTES = 10 * 1024 * 1024


def webhook_request(
    partial: dict[str, Any], folder: Path = Path("."), where: str = "args[0]"
) -> dict[str, Any]:
    """A full FetchRequest from a case's shorthand; InvalidInput naming ``where.<key>``."""
    forms = [k for k in BODY_FORMS if k in partial]
    if len(forms) > 1:
        raise InvalidInput(
            "", [Problem(where, f"give one body: {', '.join(forms)} exclude each other")]
        )
    headers = partial.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InvalidInput("", [Problem(f"{where}.headers", "must map names to strings")])
    form = forms[0] if forms else "body"
    if form in ("json", "body"):
        return _plain(partial)
    if form == "form":
        body, given = _form(partial["form"], f"{where}.form"), {"content-type": FORM_TYPE}
        return _as_received(partial, "POST", given, body)
    if form == "bodyFile":
        body = _file(folder, partial["bodyFile"], f"{where}.bodyFile")
        return _as_received(partial, "POST", {}, body)
    method, target, captured, body = _http(
        _file(folder, partial["http"], f"{where}.http"), f"{where}.http"
    )
    partial = {"url": "https://crm.example" + target, **partial}
    return _as_received(partial, method, captured, body)


def _plain(partial: dict[str, Any]) -> dict[str, Any]:
    """``json`` or a literal ``body``: the values a plain POST to the webhook would have."""
    request: dict[str, Any] = {
        "method": "POST",
        "url": LOCAL_URL,
        "headers": {},
        "query": {},
        "body": "",
    }
    request.update({k: v for k, v in partial.items() if k != "json"})
    if "json" in partial:
        request["body"] = json.dumps(partial["json"])
        request["headers"] = {"content-type": "application/json", **request["headers"]}
    return request


def _as_received(
    partial: dict[str, Any], method: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """What the webhook route hands the module for this method, URL, headers and body."""
    url = str(partial.get("url") or LOCAL_URL)
    query = partial.get("query")
    query_string = urlencode(query, doseq=True) if isinstance(query, dict) else urlsplit(url).query
    if isinstance(query, dict) and query_string:
        url = url.split("?", 1)[0] + "?" + query_string
    merged = {k.lower(): v for k, v in headers.items()}
    merged.update({k.lower(): v for k, v in partial.get("headers", {}).items()})
    incoming = IncomingRequest(
        method=str(partial.get("method") or method),
        url=url,
        headers=list(merged.items()),
        query_string=query_string,
        body=body,
    )
    return fetch_request(incoming)


def _form(value: Any, where: str) -> bytes:
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, str) for x in p)
        for p in pairs
    ):
        raise InvalidInput(
            "", [Problem(where, "must map field names to strings, or list [name, value] pairs")]
        )
    return urlencode([(name, value) for name, value in pairs]).encode()


def _file(folder: Path, name: Any, where: str) -> bytes:
    if not isinstance(name, str) or not (folder / name).is_file():
        raise InvalidInput("", [Problem(where, f"no file {name!r} beside the case file")])
    path = folder / name
    if path.stat().st_size > MAX_BODY_FILE_BYTES:
        raise InvalidInput("", [Problem(where, f"{name} is over {MAX_BODY_FILE_BYTES} bytes")])
    return path.read_bytes()


def _http(raw: bytes, where: str) -> tuple[str, str, dict[str, str], bytes]:
    """Method, target, headers and body of a raw HTTP/1.1 request (CRLF or LF lines)."""
    head, separator, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    if b"\r\n\r\n" in raw:  # keep the body's own bytes (its CRLFs) untouched
        head_raw, _, body = raw.partition(b"\r\n\r\n")
        head = head_raw.replace(b"\r\n", b"\n")
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].split(" ")
    if not separator or len(parts) != 3 or not parts[1].startswith("/"):
        raise InvalidInput(
            "",
            [Problem(where, "not an HTTP request: 'METHOD /path HTTP/1.1', headers, blank line")],
        )
    headers: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidInput("", [Problem(f"{where}:{number}", "a header is 'Name: value'")])
        key = name.strip().lower()
        if key in ("host", "content-length"):
            continue  # the route's URL and the body itself say these
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return parts[0].upper(), parts[1], headers, body
