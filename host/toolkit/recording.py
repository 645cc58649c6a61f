"""Record the HTTP traffic of a module run, and replay it offline.

Why: an integrator wants to run and test a module without the real service (no network in
CI, no API quota, the same answer every time). ``crm-host module run --record FILE`` saves
every ``fetch()`` exchange of one run; ``--replay FILE`` and ``module test`` answer
``fetch()`` from such a file instead of the network.

The file (``format: crm-host-recording/1``) is JSON meant to be read and edited::

    {"format": "crm-host-recording/1", "module": "acme-mail@0.1.0",
     "function": "CRM_Marketing_ImportTemplates",
     "exchanges": [
       {"request": {"method": "GET", "url": "https://api.x.com/v1/templates?offset=0",
                    "headers": {"Authorization": "***"}, "body": null},
        "response": {"status": 200, "statusText": "OK", "url": "...",
                     "headers": {"content-type": "application/json"}, "body": "{...}"}}]}

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

from host.errors import InvalidInput, Problem
from sandbox.errors import SandboxError, ScriptError
from sandbox.invocation import ERROR_KINDS, REDACTED, redact_data, redact_text

FORMAT = "crm-host-recording/1"

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


@dataclass(frozen=True)
class Exchange:
    """One recorded request and its response (or the error the fetch raised)."""

    request: dict[str, Any]
    response: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"request": self.request}
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "module": self.module,
            "function": self.function,
            "exchanges": [e.as_dict() for e in self.exchanges],
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
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            problems.append(Problem(str(path), f'expected an object with "format": "{FORMAT}"'))
        raw = data.get("exchanges") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            problems.append(Problem(f"{path}: $.exchanges", "must be a list"))
            raw = []
        exchanges = []
        for i, item in enumerate(raw):
            where = f"{path}: $.exchanges[{i}]"
            request = item.get("request") if isinstance(item, dict) else None
            if not isinstance(request, dict) or not isinstance(request.get("url"), str):
                problems.append(Problem(where, "needs a request with a url"))
                continue
            response, error = item.get("response"), item.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                exchanges.append(Exchange(request, error=error))
            elif isinstance(response, dict) and isinstance(response.get("status"), int):
                exchanges.append(Exchange(request, response))
            else:
                problems.append(Problem(where, "needs a response with a status, or an error"))
        if problems:
            raise InvalidInput("recording is invalid", problems)
        assert isinstance(data, dict)
        return cls(exchanges, str(data.get("module", "")), str(data.get("function", "")))


def _masked_request(request: Mapping[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    body = request.get("body")
    return {
        "method": str(request.get("method") or "GET").upper(),
        "url": redact_text(str(request.get("url", "")), secrets),
        "headers": mask_headers(request.get("headers"), secrets),
        "body": None if body is None else redact_text(str(body), secrets),
    }


class Recorder:
    """A fetch function that performs each request with ``fetch`` (the real, egress-checked
    Fetcher) and keeps a masked copy of the exchange."""

    def __init__(self, fetch: Any, secrets: Sequence[str]):
        self._fetch = fetch
        self._secrets = list(secrets)
        self.recording = Recording()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        masked = _masked_request(request, self._secrets)
        try:
            response = self._fetch(request)
        except SandboxError as exc:
            message = redact_text(exc.message, self._secrets)
            self.recording.exchanges.append(
                Exchange(masked, error={"kind": exc.kind, "message": message})
            )
            raise
        stored = redact_data(dict(response), self._secrets)
        stored["headers"] = mask_headers(response.get("headers"), self._secrets)
        self.recording.exchanges.append(Exchange(masked, stored))
        return response


class Replayer:
    """A fetch function answering from a recording; see the module docstring for matching."""

    def __init__(self, recording: Recording, secrets: Sequence[str], source: str = "recording"):
        self.recording = recording
        self.source = source
        self._secrets = list(secrets)
        self._used = [False] * len(recording.exchanges)
        #: requests nothing matched, as "METHOD URL" (a script may swallow the error)
        self.misses: list[str] = []

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        masked = _masked_request(request, self._secrets)
        method, url, body = masked["method"], masked["url"], masked["body"]
        for i, exchange in enumerate(self.recording.exchanges):
            if not self._used[i] and exchange.matches(method, url, body):
                self._used[i] = True
                if exchange.error is not None:
                    cls = ERROR_KINDS.get(exchange.error.get("kind", ""), ScriptError)
                    raise cls(exchange.error["message"])
                assert exchange.response is not None
                return dict(exchange.response)
        self.misses.append(f"{method} {url}")
        raise ReplayMismatch(self._mismatch_message(method, url, body))

    def unused(self) -> list[Exchange]:
        return [e for e, used in zip(self.recording.exchanges, self._used, strict=True) if not used]

    def _mismatch_message(self, method: str, url: str, body: str | None) -> str:
        unused = self.unused()
        if any(e.same_target(method, url) for e in unused):
            hint = " (an exchange has this method and URL but another body)"
        else:
            listed = ", ".join(e.describe() for e in unused[:5]) or "none"
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            hint = f"; unused exchanges: {listed}{more}"
        return f"unmatched request: {self.source} has no response for {method} {url}{hint}"
