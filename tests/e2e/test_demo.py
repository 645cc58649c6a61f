"""``crm-host demo`` as a user runs it: the real console script, emulators and host started by
it, the whole scenario, the final table — in under 60 s. And a failing step: one error line,
exit 1, nothing left running."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from host.cli.main import app
from host.demo.scenario import DemoFailure, DemoScenario
from tests.cli_runner import Cli


def table_rows(output: str) -> dict[str, list[str]]:
    """The demo table's rows by label: ``{"status": ["Sent", "Sent", "Sent"], ...}``."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if not line.startswith(("│", "┃")):
            continue
        label, *cells = [c.strip() for c in re.split("[│┃]", line.strip("│┃"))]
        if label:
            rows[label] = cells
    return rows


def test_demo_runs_every_step_and_prints_the_campaigns(tmp_path: Path) -> None:
    started = time.monotonic()
    result = Cli.in_dir(tmp_path).run("demo")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60
    output = result.stdout
    for title in ("upload the example modules", "SendGrid delivers it", "send the Telegram"):
        assert re.search(rf"✓ {title}.*\d+\.\d\d s", output), output
    assert re.search(r"demo finished in \d+\.\d s", output)

    rows = table_rows(output)
    assert rows["module"] == ["sendgrid", "unisender", "telegram", "mailchimp"]
    assert rows["status"] == ["Sent", "Sent", "Sent", "Sent"]
    sendgrid_id, unisender_id, telegram_id, mailchimp_id = rows["externalId"]
    assert rows["campaign"][:2] == ["Spring sale", "Spring news"]  # later names wrap
    assert re.fullmatch(r"[0-9a-f-]+", sendgrid_id)  # a uuid, wrapped in narrow tables
    assert unisender_id.isdigit() and telegram_id.startswith("tg-")
    assert re.fullmatch(r"[0-9a-f]{10}", mailchimp_id)
    # 50 contacts; SendGrid unsubscribes 5 and hard-bounces 5: the host suppresses all ten, so
    # Unisender sends to 40; its own bounces suppress 5 more, so Telegram's 30 chosen lose 9
    # and Mailchimp sends to 35
    assert [int(n) for n in rows["recipients"]] == [50, 40, 21, 35]

    def counts(status: str) -> list[int]:
        return [int(n) for n in rows[f"delivery {status}"]]

    # fixed outcomes per recipient (host/demo/scenario.py), moved by the services' webhooks
    assert counts("Delivered") == [10, 15, 0, 0]
    assert counts("Opened") == [15, 10, 0, 0]
    assert counts("Clicked") == [10, 5, 0, 0]
    assert counts("Bounced")[:2] == [5, 5] and counts("SoftBounced")[:2] == [5, 5]
    assert counts("Unsubscribed") == [5, 0, 0, 0]
    # Mailchimp posts only unsubscribes, abuse reports and cleaned addresses; the rest stay Sent
    assert counts("Bounced")[3] == 5 and counts("Complained") == [0, 0, 0, 5]
    # Telegram: 19 linked chats got the message; 2 contacts without a chat are Failed
    assert counts("Sent") == [0, 0, 19, 25] and counts("Failed") == [0, 0, 2, 0]
    stats = {name: [int(n) for n in rows[f"stats {name}"]] for name in ("total", "opened")}
    assert stats["total"] == [50, 40, 21, 35]
    assert all(n > 0 for n in (stats["opened"][0], stats["opened"][1], stats["opened"][3]))
    assert result.stderr == ""


def test_a_failing_step_is_one_error_line_and_stops_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: DemoScenario) -> str:
        raise DemoFailure("the emulator is out of stamps")

    monkeypatch.setattr(DemoScenario, "sendgrid_delivers", refuse)
    before = {t.name for t in threading.enumerate()}
    result = CliRunner().invoke(app, ["demo", "--contacts", "3"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [
        "error: demo step 'SendGrid delivers it and posts its events' failed: "
        "the emulator is out of stamps"
    ]
    assert "✓ send the SendGrid email campaign" in result.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = {t.name for t in threading.enumerate() if t.is_alive()} - before
        if not left:
            break
        time.sleep(0.05)
    assert not left, left
