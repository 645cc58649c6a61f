"""The recording file: the HTTP exchanges of one module run, kept to be replayed offline.

Why: an integrator wants to run and test a module without the real service (no network in
CI, no API quota, the same answer every time). ``crm-host module run --record FILE`` saves
every exchange of one run (:mod:`host.toolkit.recorder`); ``--replay FILE`` and
``module test`` answer from such a file (:mod:`host.toolkit.replayer`). Both are httpx
transports under the real Fetcher, so a replayed call passes the same egress check,
request validation, redirect rules and size caps as a live one.

The file (``format: crm-host-recording/2``) is JSON meant to be read and edited::

    {"format": "crm-host-recording/2", "module": "acme-mail@0.1.0",
     "function": "CRM_Marketing_ImportTemplates",
     "exchanges": [
       {"request": {"method": "GET", "url": "https://api.x.com/v1/templates?offset=0",
                    "headers": {"Authorization": "***"}, "body": null},
        "addresses": ["203.0.113.7"],
        "response": {"status": 200, "statusText": "OK", "url": "...",
                     "headers": {"content-type": "application/json"}, "body": "{...}"}}],
     "fetches": [{"method": "GET", "url": "...", "status": 200, "ms": 3.1, "bytes": 120}]}

``addresses`` are what the host name resolved to when the exchange was recorded: on replay
the egress policy judges them instead of asking DNS, so the verdict is the recorded one and
needs no network (a recorded loopback or private address is refused again unless the
admin's allow-list waives it). ``fetches`` is the run's fetch log, as ``--show-log`` and the
invocation log show it; replay ignores it. An exchange without ``addresses`` (format
``crm-host-recording/1`` files, exchanges written by hand) is judged on its host name alone:
it must be in the manifest's egress list. Other formats are refused, naming the file.

Matching rules (replay): a request matches an exchange when the method, the URL and the body
are equal — compared after masking, so a different API key in the replaying settings still
matches. Headers are never compared. Each exchange answers once, in recorded order among
equal requests (so a paginated loop gets page 1, then page 2). Deleting ``body`` from a
recorded request makes it match any body. A request that matches nothing fails the call
with a ``script_error`` naming the request and the unused exchanges.

Secrets never reach the file: credential-like headers (Authorization, Cookie, ``*key*``,
``*token*``, ``*secret*``...) are replaced by ``***``, and every secret setting value is
masked wherever it appears (URL, headers, bodies of requests and responses).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from host.errors import InvalidInput, Problem
from sandbox.errors import ScriptError
from sandbox.invocation import REDACTED, redact_text

FORMAT = "crm-host-recording/2"
#: formats this version reads (the first one kept no resolved addresses)
READABLE_FORMATS = ("crm-host-recording/1", FORMAT)

_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-auth"}
)
_CREDENTIAL_WORDS = ("key", "token", "secret", "password", "signature", "session")
_ANY_BODY = object()


class ReplayMismatch(ScriptError):
    """A replayed run sent a request the recording has no answer for."""


def is_credential_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _CREDENTIAL_HEADERS or any(w in lowered for w in _CREDENTIAL_WORDS)


def mask_headers(headers: Mapping[str, Any] | None, secrets: Sequence[str]) -> dict[str, str]:
    """Header values with credentials replaced by ``***`` and secret values masked."""
    return {
        str(name): REDACTED if is_credential_header(str(name)) else redact_text(str(v), secrets)
        for name, v in (headers or {}).items()
    }


def masked_request(request: httpx.Request, url: str, secrets: Sequence[str]) -> dict[str, Any]:
    """A request as a recording keeps it and as replay compares it: ``url`` is the one the
    script asked for (the request itself goes to the pinned IP), header names keep the
    script's spelling, and an empty body is ``None``."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
    body = request.read()
    return {
        "method": request.method.upper(),
        "url": redact_text(url, secrets),
        "headers": mask_headers(headers, secrets),
        "body": redact_text(body.decode("utf-8", "replace"), secrets) if body else None,
    }


@dataclass
class Exchange:
    """One recorded request, the addresses its host resolved to, and the response (or the
    error the connection failed with). The recorder fills ``response`` when the body has
    been read."""

    request: dict[str, Any]
    response: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    addresses: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request": self.request}
        if self.addresses is not None:
            data["addresses"] = self.addresses
        if self.error is not None:
            data["error"] = self.error
        else:
            data["response"] = self.response
        return data

    def describe(self) -> str:
        return f"{self.request.get('method', 'GET')} {self.request.get('url', '')}"

    def same_target(self, method: str, url: str) -> bool:
        req = self.request
        return str(req.get("method", "GET")).upper() == method and req.get("url") == url

    def matches(self, method: str, url: str, body: str | None) -> bool:
        if not self.same_target(method, url):
            return False
        recorded = self.request.get("body", _ANY_BODY)
        return recorded is _ANY_BODY or recorded == body


@dataclass
class Recording:
    """The exchanges of one run, with what they were recorded from."""

    exchanges: list[Exchange] = field(default_factory=list)
    module: str = ""
    function: str = ""
    #: the run's fetch log (method, url, status, ms, bytes, error), for the reader only
    fetches: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "module": self.module,
            "function": self.function,
            "exchanges": [e.as_dict() for e in self.exchanges],
            "fetches": self.fetches,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.as_dict(), indent=2, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Recording:
        """Read a recording; every problem is reported with the file (and line for JSON)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput(
                "recording is unreadable", [Problem(str(path), exc.strerror or str(exc))]
            ) from None
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                "recording is not JSON", [Problem(f"{path}:{exc.lineno}", exc.msg)]
            ) from None
        problems: list[Problem] = []
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            found = data.get("format") if isinstance(data, dict) else None
            problems.append(
                Problem(
                    str(path),
                    f'expected an object with "format": "{FORMAT}"'
                    + (f" (this version does not read {found!r})" if found else ""),
                )
            )
        raw = data.get("exchanges") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            problems.append(Problem(f"{path}: $.exchanges", "must be a list"))
            raw = []
        exchanges = []
        for i, item in enumerate(raw):
            where = f"{path}: $.exchanges[{i}]"
            exchange = _exchange(item, where, problems)
            if exchange is not None:
                exchanges.append(exchange)
        if problems:
            raise InvalidInput("recording is invalid", problems)
        assert isinstance(data, dict)
        fetches = data.get("fetches")
        return cls(
            exchanges,
            str(data.get("module", "")),
            str(data.get("function", "")),
            fetches if isinstance(fetches, list) else [],
            str(data["format"]),
        )


def _exchange(item: Any, where: str, problems: list[Problem]) -> Exchange | None:
    request = item.get("request") if isinstance(item, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        problems.append(Problem(where, "needs a request with a url"))
        return None
    assert isinstance(item, dict)
    addresses = item.get("addresses")
    if addresses is not None and (
        not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses)
    ):
        problems.append(Problem(f"{where}.addresses", "must be a list of IP address strings"))
        return None
    response, error = item.get("response"), item.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return Exchange(request, error=error, addresses=addresses)
    if isinstance(response, dict) and isinstance(response.get("status"), int):
        return Exchange(request, response, addresses=addresses)
    problems.append(Problem(where, "needs a response with a status, or an error"))
    return None
