"""Certification on the host: an upload that carries its ``tests/`` is certified
(:mod:`host.toolkit.certify`) before it is stored, and the report is kept with the version.

Why the host runs the checks itself rather than trusting a report the integrator sends: a
report file is data anyone can write. The host runs the suite in its own sandbox on the exact
content it is about to store, binds the report to that content's hash, and seals the
report's digest with its secret key; a report is *valid* only when the version's content
hash, the report's digest and the seal all agree.

With ``CRM_HOST_REQUIRE_CERTIFIED=1`` an upload that fails certification, or brings no
cases (a bare JSON upload gets the static checks only), is refused with every failed check
listed, and enabling a version without a valid certification (uploaded before the setting
was turned on) is refused too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from host.db.engine import Database
from host.db.models import ModuleCertification, ModuleVersion
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.modules.packages import MANIFEST_NAME, ModulePackage
from host.secrets import SecretBox
from host.toolkit.certify import Certification, certify, digest
from sandbox.pool import SandboxPool


class CertificationService:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        sandbox: Callable[[], SandboxPool],
        *,
        max_script_bytes: int,
        egress_allow: Sequence[str],
        required: bool,
    ):
        self.db = db
        self.box = box
        self.sandbox = sandbox
        self.max_script_bytes = max_script_bytes
        self.egress_allow = list(egress_allow)
        self.required = required

    def check_upload(self, package: ModulePackage) -> Certification | None:
        """The report of ``package`` (None when it carries no tests and none is required);
        refuses the upload when certification is required and the report failed."""
        if not package.tests and not self.required:
            return None
        with tempfile.TemporaryDirectory(prefix="crm-certify-") as folder:
            root = Path(folder)
            _materialise(root, package)
            report = certify(
                root,
                package,
                max_script_bytes=self.max_script_bytes,
                allow=self.egress_allow,
                pool=self.sandbox(),
            )
        if self.required and not report.passed:
            problems = [
                Problem(f"certification: {c.name}", detail)
                for c in report.checks
                if not c.passed
                for detail in (c.details or ["failed"])
            ]
            raise InvalidInput(
                f"module {report.module}@{report.version} is not certified and this host "
                "requires certification (CRM_HOST_REQUIRE_CERTIFIED)",
                problems,
            )
        return report

    def store(self, module_id: str, version: str, report: Certification) -> None:
        """Keep ``report`` with the stored version (replacing an older report of it)."""
        body = report.as_dict()
        with self.db.transaction() as session:
            row = self._version(session, module_id, version)
            if row.content_hash != report.content_hash:
                return  # another content under this version (the upload was refused)
            existing = session.get(ModuleCertification, row.id)
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(
                ModuleCertification(
                    version_id=row.id,
                    content_hash=report.content_hash,
                    passed=report.passed,
                    report=body,
                    seal=self.box.seal(body["digest"]) or "",
                )
            )

    def report(self, module_id: str, version: str) -> dict[str, Any]:
        """The stored report with ``valid``: whether it still verifies for this version."""
        with self.db.transaction() as session:
            row = self._version(session, module_id, version)
            stored = session.get(ModuleCertification, row.id)
            if stored is None:
                raise NotFound(f"module {module_id}@{version} has no certification report")
            return {**stored.report, "valid": self._verifies(stored, row)}

    def check_enable(self, module_id: str, version: str) -> None:
        """Refuse (409) to pin a version without a valid, passed certification, when
        certification is required."""
        if not self.required:
            return
        with self.db.transaction() as session:
            row = self._version(session, module_id, version)
            stored = session.get(ModuleCertification, row.id)
            ok = stored is not None and stored.passed and self._verifies(stored, row)
        if not ok:
            reason = "has no certification" if stored is None else "is not validly certified"
            raise Conflict(
                f"module {module_id}@{version} {reason} and this host requires "
                "certification (CRM_HOST_REQUIRE_CERTIFIED): upload it with its tests/ "
                "so the host certifies it",
                [Problem("version", f"{version}: not certified")],
            )

    def _verifies(self, stored: ModuleCertification, row: ModuleVersion) -> bool:
        report = dict(stored.report)
        claimed = report.pop("digest", None)
        try:
            sealed = self.box.open(stored.seal)
        except Exception:  # a seal another key made, or an edited one
            return False
        return (
            stored.content_hash == row.content_hash == report.get("contentHash")
            and claimed == digest(report) == sealed
            and report.get("passed") is stored.passed
        )

    @staticmethod
    def _version(session: Any, module_id: str, version: str) -> ModuleVersion:
        row = session.scalar(
            select(ModuleVersion).where(
                ModuleVersion.module_id == module_id, ModuleVersion.version == version
            )
        )
        if row is None:
            raise NotFound(f"module {module_id} has no version {version}")
        return row


def _materialise(root: Path, package: ModulePackage) -> None:
    """The package as a module folder: manifest, script and its tests/ files."""
    (root / MANIFEST_NAME).write_text(package.manifest_text, encoding="utf-8")
    if package.script is not None and package.script_name is not None:
        (root / package.script_name).write_text(package.script, encoding="utf-8")
    for name, data in package.tests.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            continue  # packages refuse these already; never write outside the folder
        target = root.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
