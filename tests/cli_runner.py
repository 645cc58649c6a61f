"""Run the real ``crm-host`` console script, as a user would, against a temp database."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import database_url

CRM_HOST = Path(sys.executable).with_name("crm-host")


@dataclass
class Cli:
    workdir: Path
    env: dict[str, str]

    @classmethod
    def in_dir(cls, workdir: Path, **extra_env: str) -> Cli:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_HOST_")}
        env["CRM_HOST_DATABASE_URL"] = database_url(workdir / "host.db")
        env["COLUMNS"] = "200"
        env.update(extra_env)
        return cls(workdir, env)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CRM_HOST), *args],
            cwd=self.workdir,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
