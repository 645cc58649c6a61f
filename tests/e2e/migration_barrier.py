"""``crm-host`` with every process held right before its schema upgrade until the test
releases them together (``<barrier>/go``), so nodes started "at once" really enter the
upgrade within milliseconds of each other, however the machine's load spreads their
imports. Each process marks itself ready with ``<barrier>/ready-<pid>``.

Run as ``python migration_barrier.py <crm-host arguments>`` with ``CRM_TEST_MIGRATION_BARRIER``
naming the barrier folder; the upgrade itself is the host's, unchanged."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import host.platform
from host.cli.main import app

BARRIER = Path(os.environ["CRM_TEST_MIGRATION_BARRIER"])
WAIT_LIMIT_S = 300.0
original_upgrade = host.platform.upgrade_to_head


def upgrade_when_released(engine: Any) -> None:
    (BARRIER / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not (BARRIER / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    original_upgrade(engine)


host.platform.upgrade_to_head = upgrade_when_released
sys.argv[0] = "crm-host"
app()
