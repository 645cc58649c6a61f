"""A module author's pathological settings regex against the real served host: the save of a
100,000-character value finishes with its outcome while ``/healthz`` keeps answering from
another thread (with a backtracking engine the first request froze the host for seconds)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import RunningHost, running_host
from tests.host.conftest import EMAIL_SCRIPT, email_manifest

PATHOLOGICAL = r"^(\w+\.?)+$"
SETTINGS = {
    "type": "object",
    "properties": {"word": {"type": "string", "pattern": PATHOLOGICAL}},
    "patternProperties": {r"^x_(\w+\.?)+$": {"type": "integer"}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHost]:
    workdir: Path = tmp_path_factory.mktemp("regex-e2e")
    with running_host(workdir, CRM_HOST_SANDBOX_WORKERS="1") as host, host.client() as admin:
        body = {"manifest": email_manifest(settings=SETTINGS), "script": EMAIL_SCRIPT}
        assert admin.post("/api/v1/modules", json=body).status_code == 201
        assert admin.post("/api/v1/tenants", json={"id": "acme", "name": "Acme"}).status_code
        yield host


class HealthPoller:
    """Polls ``/healthz`` on its own connection until stopped; records every outcome."""

    def __init__(self, url: str):
        self.url = url
        self.outcomes: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    self.outcomes.append(client.get("/healthz").status_code)
                except httpx.HTTPError as exc:
                    self.outcomes.append(type(exc).__name__)
                self._stop.wait(0.02)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def save(server: RunningHost, settings: dict[str, Any]) -> httpx.Response:
    with server.client() as admin, HealthPoller(server.url) as poller:
        answer = admin.put(
            "/api/v1/tenants/acme/modules/sendmail",
            json={"version": "1.0.0", "settings": settings, "enabled": True},
        )
        # a few more polls after the answer: the host is still serving
        seen = len(poller.outcomes)
        for _ in range(500):  # a generous liveness bound (10 s), not a timing assertion
            if len(poller.outcomes) >= seen + 3:
                break
            threading.Event().wait(0.02)
    assert poller.outcomes and set(poller.outcomes) == {200}, poller.outcomes
    return answer


def test_matching_100000_characters_is_saved_while_healthz_answers(server: RunningHost) -> None:
    word, key = "a" * 100_000, "x_" + "b" * 100_000
    answer = save(server, {"word": word, key: 7})
    assert answer.status_code == 200, answer.text
    with server.client() as admin:
        stored = admin.get("/api/v1/tenants/acme/modules/sendmail").json()
    assert stored["settings"]["word"] == word and stored["settings"][key] == 7


def test_failing_100000_characters_is_a_422_while_healthz_answers(server: RunningHost) -> None:
    word = "a" * 99_999 + "!"
    answer = save(server, {"word": word, "x_" + word: 7})
    assert answer.status_code == 422
    assert answer.json()["problems"] == [
        {"location": "settings.word", "message": f"must match the pattern {PATHOLOGICAL}"}
    ]
