"""API models: module versions, their detail and certification."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from host.api.api_model import ApiModel, IsoTime, from_names


class VersionOut(ApiModel):
    id: str
    version: str
    name: str
    kind: str = Field(description="email or messenger")
    functions: list[str] = Field(description="CRM_Marketing_* functions the script defines")
    uploaded_at: IsoTime


class ModuleOut(ApiModel):
    id: str
    kind: str
    name: str = Field(description="Name in the latest version's manifest")
    latest_version: str
    versions: list[VersionOut] = Field(description="Oldest first")


class VersionDetail(ApiModel):
    id: str = Field(validation_alias=from_names("module_id", "id"))
    version: str
    functions: list[str]
    manifest: dict[str, Any] = Field(description="Validated, defaults filled in")
    script: str = Field(description="As uploaded")
    uploaded_at: IsoTime


class CertificationCheck(ApiModel):
    name: str
    passed: bool
    details: list[str]


class CertificationOut(ApiModel):
    """A version's certification report; ``valid``: it is bound to this version's content
    and its sealed digest verifies."""

    format: int
    module: str
    version: str
    content_hash: str
    passed: bool
    checks: list[CertificationCheck]
    certified_at: datetime
    certified_by: str
    digest: str
    valid: bool


class VersionRemoved(ApiModel):
    id: str
    version: str
    removed: bool = True
