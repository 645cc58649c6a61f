"""The deployment examples under ``docs/deploy/``: the systemd unit passes
``systemd-analyze verify`` (pointed at this checkout's real ``crm-host``, since verify checks
that the binary exists), and the Containerfile runs the commands and settings the README
documents. No image is built: there is no registry to build against."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import CRM_HOST

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (apt-get install systemd) - the unit is NOT verified",
)


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_systemd
def test_the_systemd_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    text = (DEPLOY / "crm-host.service").read_text()
    assert "ExecStart=/opt/crm-host/bin/crm-host serve --host 127.0.0.1 --port 8000" in text
    unit = tmp_path / "crm-host.service"
    unit.write_text(text.replace("/opt/crm-host/bin/crm-host", str(CRM_HOST)))
    result = _verify(unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # verify only warns about unknown keys


@needs_systemd
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    text = (
        (DEPLOY / "crm-host.service")
        .read_text()
        .replace("/opt/crm-host/bin/crm-host", str(CRM_HOST))
    )
    unit = tmp_path / "crm-host.service"
    unit.write_text(text.replace("Restart=on-failure", "Restart=sometimes\nRestartSecs=5"))
    result = _verify(unit)
    assert "RestartSecs" in result.stderr and "sometimes" in result.stderr


def test_the_containerfile_serves_from_its_data_volume() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert 'CMD ["crm-host", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text
    assert "CRM_HOST_HOME=/var/lib/crm-host" in text
    assert "VOLUME /var/lib/crm-host" in text
    assert "USER crm-host" in text  # never root
    assert '"crm-module-host[postgres]"' in text
