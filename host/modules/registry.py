"""Module versions: validate an uploaded package completely, store it immutably, list it.

Upload checks the manifest against the JSON Schema, compiles the script with the sandbox's
compiler, and checks the contract functions it defines, reporting every problem at once.
A version, once stored, never changes: the same id and version with other content is a
conflict; the same content again is accepted as a no-op.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pluggy
from sqlalchemy import select

from host.contract.enums import ModuleKind
from host.contract.functions import FUNCTIONS_BY_KIND
from host.contract.script_functions import DefinedFunction, check_defined_functions
from host.contract.world import SCRIPT_IMPORTS
from host.db.engine import Database
from host.db.models import Module, ModuleVersion
from host.errors import Conflict, InvalidInput, NotFound, Problem
from host.manifest import Manifest, parse_manifest, semver_key
from host.module_program import ModuleProgram
from host.modules.inspection import settings_reads, stub_functions
from host.modules.packages import ModulePackage
from host.modules.version_removal import remove_version
from host.plugin_manager import notify
from sandbox.compiler import CompiledScript, compile_script
from sandbox.errors import ScriptCompileError


@dataclass(frozen=True)
class ValidatedModule:
    manifest: Manifest
    script: str
    functions: list[str]
    content_hash: str


@dataclass(frozen=True)
class VersionInfo:
    id: str
    version: str
    name: str
    kind: str
    functions: list[str]
    uploaded_at: datetime
    created: bool = True
    """False when the identical version was already stored (the upload was a no-op)."""


@dataclass(frozen=True)
class StoredVersion:
    """An immutable stored version, as callers of a module need it; ``program`` holds what
    running it needs, computed once per version."""

    module_id: str
    version: str
    program: ModuleProgram
    functions: tuple[str, ...]

    @property
    def manifest(self) -> Manifest:
        return self.program.manifest

    @property
    def script(self) -> str:
        return self.program.script


@dataclass(frozen=True)
class ModuleInfo:
    id: str
    kind: str
    versions: list[VersionInfo] = field(default_factory=list)

    @property
    def latest(self) -> VersionInfo:
        return self.versions[-1]

    @property
    def name(self) -> str:
        """The name in the latest version's manifest."""
        return self.latest.name

    @property
    def latest_version(self) -> str:
        return self.latest.version


def validate_package(package: ModulePackage, *, max_script_bytes: int) -> ValidatedModule:
    """Everything wrong with ``package``, all at once, as one InvalidInput."""
    problems: list[Problem] = []
    manifest: Manifest | None = None
    try:
        manifest = parse_manifest(package.manifest_text, package.manifest_source())
    except InvalidInput as exc:
        problems.extend(exc.problems)
    script_name = package.script_name or "module.py"
    compiled: CompiledScript | None = None
    if package.script is None:
        if manifest is not None:
            problems.append(Problem(script_name, "script file is missing"))
    else:
        try:
            compiled = compile_script(
                package.script,
                script_name,
                max_source_bytes=max_script_bytes,
                allowed_imports=SCRIPT_IMPORTS,
            )
        except ScriptCompileError as exc:
            problems.extend(Problem(p.location(), p.message) for p in exc.problems)
    kind = manifest.kind if manifest is not None else _declared_kind(package.manifest_text)
    if kind is not None and compiled is not None:
        problems.extend(check_defined_functions(kind, _defined(compiled), script_name))
    if manifest is not None and compiled is not None and package.script is not None:
        problems.extend(_undeclared_settings(package.script, script_name, manifest))
    if problems:
        raise InvalidInput(_invalid_title(manifest), problems)
    assert manifest is not None and compiled is not None and package.script is not None
    stubs = stub_functions(package.script)
    functions = [
        f.name
        for f in FUNCTIONS_BY_KIND[ModuleKind(manifest.kind)]
        if f.name in compiled.functions and f.name not in stubs
    ]
    return ValidatedModule(manifest, package.script, functions, _content_hash(manifest, package))


def declared_settings(schema: object) -> set[str]:
    """The setting names a settings schema declares (its top-level ``properties``)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return set(properties) if isinstance(properties, dict) else set()


def _undeclared_settings(source: str, script_name: str, manifest: Manifest) -> list[Problem]:
    """``settings["x"]`` of a setting the manifest does not declare: no tenant can set it,
    so the read can only raise ``KeyError`` when the function runs. ``settings.get("x")`` has
    a default and is only a warning of ``module validate``; dynamic keys are not checked."""
    declared = declared_settings(manifest.settings)
    return [
        Problem(
            f"{script_name}:{read.line}",
            f"settings[{read.key!r}] reads a setting the manifest does not declare "
            f"(declared: {', '.join(sorted(declared)) or 'none'}); declare it under "
            '"settings" in manifest.json or use settings.get() with a default',
        )
        for read in settings_reads(ast.parse(source))
        if read.how == "item" and read.key not in declared
    ]


def _declared_kind(manifest_text: str) -> str | None:
    """The kind an invalid manifest still declares validly, so the script's functions are
    checked in the same answer as the manifest's other problems."""
    try:
        data = json.loads(manifest_text)
    except (ValueError, RecursionError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind in FUNCTIONS_BY_KIND else None


def _invalid_title(manifest: Manifest | None) -> str:
    if manifest is None:
        return "module is invalid"
    return f"module {manifest.id}@{manifest.version} is invalid"


def _defined(compiled: CompiledScript) -> list[DefinedFunction]:
    defined = []
    for sig in compiled.functions.values():
        positional = sig.positional_names
        required = sum(1 for p in sig.parameters if p.kind == "positional" and not p.has_default)
        varargs = any(p.kind == "vararg" for p in sig.parameters)
        defined.append(DefinedFunction(sig.name, sig.line, positional, required, varargs))
    return defined


def _content_hash(manifest: Manifest, package: ModulePackage) -> str:
    canonical = json.dumps(manifest.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode() + b"\0" + package.script.encode()).hexdigest()  # type: ignore[union-attr]


def _version_info(row: ModuleVersion, kind: str, created: bool = True) -> VersionInfo:
    return VersionInfo(
        row.module_id, row.version, row.name, kind, list(row.functions), row.uploaded_at, created
    )


class ModuleRegistry:
    def __init__(self, db: Database, hooks: pluggy.PluginManager, *, max_script_bytes: int):
        self.db = db
        self.hooks = hooks
        self.max_script_bytes = max_script_bytes
        self._stored: dict[tuple[str, str], StoredVersion] = {}

    def upload(self, package: ModulePackage) -> VersionInfo:
        module = validate_package(package, max_script_bytes=self.max_script_bytes)
        manifest = module.manifest
        with self.db.transaction() as session:
            stored = session.get(Module, manifest.id)
            if stored is None:
                stored = Module(id=manifest.id, kind=manifest.kind)
                session.add(stored)
            elif stored.kind != manifest.kind:
                raise Conflict(
                    f"module {manifest.id} is a {stored.kind} module; "
                    f"version {manifest.version} declares kind {manifest.kind}",
                    [Problem("manifest.json: $.kind", f"must stay {stored.kind}")],
                )
            existing = session.scalar(
                select(ModuleVersion).where(
                    ModuleVersion.module_id == manifest.id,
                    ModuleVersion.version == manifest.version,
                )
            )
            if existing is not None:
                if existing.content_hash != module.content_hash:
                    raise Conflict(
                        f"module {manifest.id}@{manifest.version} already exists with other "
                        "content; versions are immutable, upload a new version",
                        [Problem("manifest.json: $.version", "already used")],
                    )
                return _version_info(existing, stored.kind, created=False)
            row = ModuleVersion(
                module_id=manifest.id,
                version=manifest.version,
                name=manifest.name,
                manifest=manifest.model_dump(mode="json"),
                script=module.script,
                content_hash=module.content_hash,
                functions=module.functions,
            )
            session.add(row)
            session.flush()
            info = _version_info(row, stored.kind)
        notify(
            self.hooks,
            "crm_host_module_uploaded",
            module_id=info.id,
            version=info.version,
            kind=info.kind,
        )
        return info

    def list(self) -> list[ModuleInfo]:
        with self.db.transaction() as session:
            modules = session.scalars(select(Module).order_by(Module.id)).all()
            return [self._info(m) for m in modules if m.versions]

    def get(self, module_id: str) -> ModuleInfo:
        with self.db.transaction() as session:
            module = session.get(Module, module_id)
            if module is None or not module.versions:
                raise NotFound(f"module {module_id} does not exist")
            return self._info(module)

    def version(self, module_id: str, version: str | None = None) -> ModuleVersion:
        """A stored version (the latest by semver when ``version`` is None)."""
        info = self.get(module_id)
        wanted = version or info.latest.version
        with self.db.transaction() as session:
            row = session.scalar(
                select(ModuleVersion).where(
                    ModuleVersion.module_id == module_id, ModuleVersion.version == wanted
                )
            )
            if row is None:
                known = ", ".join(v.version for v in info.versions)
                raise NotFound(
                    f"module {module_id} has no version {wanted}",
                    [Problem("version", f"known versions: {known}")],
                )
            return row

    def stored(self, module_id: str, version: str | None = None) -> StoredVersion:
        """A version ready to call (the latest when ``version`` is None). Versions never
        change once stored, so each is read and parsed once per process."""
        if version is not None and (module_id, version) in self._stored:
            return self._stored[(module_id, version)]
        row = self.version(module_id, version)
        stored = StoredVersion(
            row.module_id,
            row.version,
            ModuleProgram.of(Manifest.from_stored(row.manifest), row.script),
            tuple(row.functions),
        )
        self._stored[(row.module_id, row.version)] = stored
        return stored

    def remove(self, module_id: str, version: str, *, stats_retention: timedelta) -> None:
        """Delete a version nothing uses (see ``version_removal``); 409 naming the uses."""
        remove_version(self.db, module_id, version, stats_retention=stats_retention)
        self._stored.pop((module_id, version), None)

    @staticmethod
    def _info(module: Module) -> ModuleInfo:
        versions = sorted(module.versions, key=lambda v: semver_key(v.version))
        return ModuleInfo(module.id, module.kind, [_version_info(v, module.kind) for v in versions])
