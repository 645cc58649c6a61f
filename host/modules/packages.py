"""Reading a module package — a directory, a zip archive or a JSON body — into its manifest
text and script, refusing anything unsafe before it is parsed (path traversal, links,
oversize archives and scripts, zip bombs)."""

from __future__ import annotations

import io
import json
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from host.errors import InvalidInput, PayloadTooLarge, Problem

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 256 * 1024
MAX_ZIP_ENTRIES = 200


@dataclass(frozen=True)
class ModulePackage:
    """The two things a module version is made of, as uploaded."""

    manifest_text: str
    script: str | None
    script_name: str | None
    origin: str  # where it came from, for error messages
    tests: dict[str, bytes] = field(default_factory=dict, repr=False)
    """The ``tests/`` folder (case files, recordings, fixtures) by relative path: what
    certification runs the module's cases from. Never stored as part of the version."""

    def manifest_source(self) -> str:
        return MANIFEST_NAME


def _script_name(manifest_text: str) -> str | None:
    """The script file the manifest names, if the manifest is readable enough to say."""
    try:
        data = json.loads(manifest_text)
    except ValueError:
        return None
    name = data.get("script") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            "module package is not readable",
            [Problem(where, f"not UTF-8 text (byte {exc.start})")],
        ) from None


def _safe_member(name: str) -> bool:
    return PurePosixPath(name).name == name and name not in ("", ".", "..") and "\\" not in name


def from_directory(path: Path, *, max_script_bytes: int) -> ModulePackage:
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InvalidInput(
            "module package is incomplete", [Problem(str(manifest_path), "file not found")]
        )
    manifest_text = _decode(_read_capped(manifest_path, MAX_MANIFEST_BYTES), str(manifest_path))
    script_name = _script_name(manifest_text)
    script = None
    if script_name is not None and _safe_member(script_name):
        script_path = path / script_name
        if script_path.is_symlink() or not script_path.is_file():
            raise InvalidInput(
                "module package is incomplete",
                [Problem(str(script_path), "script file named by the manifest is missing")],
            )
        script = _decode(_read_capped(script_path, max_script_bytes), str(script_path))
    return ModulePackage(manifest_text, script, script_name, str(path), _test_files(path))


TESTS_DIR = "tests"
MAX_TEST_BYTES = 5 * 1024 * 1024
"""All of a folder's ``tests/`` files together (a zip's are capped by the archive limit)."""


def _test_files(root: Path) -> dict[str, bytes]:
    """The regular files under ``root/tests`` (links are skipped: a test never reads
    outside its folder), within :data:`MAX_ZIP_ENTRIES` files and :data:`MAX_TEST_BYTES`."""
    folder = root / TESTS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return {}
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        if any(p.is_symlink() for p in path.relative_to(root).parents if p != Path(".")):
            continue
        total += path.stat().st_size
        if len(files) >= MAX_ZIP_ENTRIES or total > MAX_TEST_BYTES:
            raise InvalidInput(
                "module package is too large",
                [
                    Problem(
                        str(folder), f"more than {MAX_ZIP_ENTRIES} files or {MAX_TEST_BYTES} bytes"
                    )
                ],
            )
        files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _read_capped(path: Path, cap: int) -> bytes:
    size = path.stat().st_size
    if size > cap:
        raise InvalidInput(
            "module package is too large",
            [Problem(str(path), f"{size} bytes, more than the limit of {cap}")],
        )
    return path.read_bytes()


def from_zip(data: bytes, *, max_archive_bytes: int, max_script_bytes: int) -> ModulePackage:
    """A package from a zip holding ``manifest.json`` and the script at its root, or inside
    one top-level folder. Every unsafe entry is reported, not just the first."""
    if len(data) > max_archive_bytes:
        raise PayloadTooLarge(
            "module archive is too large",
            [Problem("package", f"{len(data)} bytes, more than the limit of {max_archive_bytes}")],
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInput(
            "module archive is not readable", [Problem("package", "not a zip archive")]
        ) from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise InvalidInput(
                "module archive has too many entries",
                [Problem("package", f"{len(infos)} entries, more than {MAX_ZIP_ENTRIES}")],
            )
        problems = [p for info in infos if (p := _unsafe_entry(info)) is not None]
        seen: set[str] = set()
        for entry in infos:
            if entry.filename in seen:
                # unzip tools disagree on which copy wins; what is validated must be what
                # the integrator sees
                problems.append(Problem(entry.filename, "appears more than once in the archive"))
            seen.add(entry.filename)
        if problems:
            raise InvalidInput("module archive contains unsafe entries", problems)
        files = {info.filename: info for info in infos if not info.is_dir()}
        prefix = _package_root(files)
        manifest_info = files[prefix + MANIFEST_NAME]
        manifest_text = _decode(
            _read_member(archive, manifest_info, MAX_MANIFEST_BYTES), manifest_info.filename
        )
        script_name = _script_name(manifest_text)
        script = None
        if script_name is not None and _safe_member(script_name):
            info = files.get(prefix + script_name)
            if info is None:
                raise InvalidInput(
                    "module package is incomplete",
                    [Problem(prefix + script_name, "script file named by the manifest is missing")],
                )
            script = _decode(_read_member(archive, info, max_script_bytes), info.filename)
        tests = {
            name[len(prefix) :]: _read_member(archive, info, max_archive_bytes)
            for name, info in files.items()
            if name.startswith(prefix + TESTS_DIR + "/")
        }
    return ModulePackage(manifest_text, script, script_name, "package", tests)


def _unsafe_entry(info: zipfile.ZipInfo) -> Problem | None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return Problem(name, "absolute path in archive")
    if ".." in parts:
        return Problem(name, "path escapes the archive ('..')")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return Problem(name, "symbolic links are not allowed in a module archive")
    return None


def _package_root(files: dict[str, zipfile.ZipInfo]) -> str:
    if MANIFEST_NAME in files:
        return ""
    roots = {name.split("/", 1)[0] for name in files if "/" in name}
    if len(roots) == 1:
        prefix = roots.pop() + "/"
        if prefix + MANIFEST_NAME in files:
            return prefix
    raise InvalidInput(
        "module archive is incomplete",
        [Problem("package", f"no {MANIFEST_NAME} at the archive root or in one top folder")],
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """Read at most ``cap`` bytes whatever the header claims: the declared size of a zip
    bomb lies, so the stream is cut, not trusted."""
    if info.file_size > cap:
        raise InvalidInput(
            "module package is too large",
            [Problem(info.filename, f"{info.file_size} bytes, more than the limit of {cap}")],
        )
    try:
        with archive.open(info) as handle:
            data = handle.read(cap + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # A declared size that lies stops the stream early and fails the CRC check here.
        raise InvalidInput(
            "module archive is not readable",
            [Problem(info.filename, f"corrupt archive entry ({exc})")],
        ) from None
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
        raise InvalidInput(
            "module archive is not readable",
            [Problem(info.filename, f"unsupported archive entry ({exc})")],
        ) from None
    if len(data) > cap:
        raise InvalidInput(
            "module package is too large",
            [Problem(info.filename, f"more than the limit of {cap} bytes")],
        )
    return data


def from_json_body(body: Any, *, max_script_bytes: int) -> ModulePackage:
    """A package from the API's JSON form ``{"manifest": {...}, "script": "..."}``."""
    problems = []
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", [Problem("body", "not an object")])
    manifest = body.get("manifest")
    script = body.get("script")
    if not isinstance(manifest, dict):
        problems.append(Problem("body.manifest", "required: the manifest as a JSON object"))
    if not isinstance(script, str):
        problems.append(Problem("body.script", "required: the script source as a string"))
    elif len(script.encode()) > max_script_bytes:
        problems.append(Problem("body.script", f"more than the limit of {max_script_bytes} bytes"))
    if problems:
        raise InvalidInput("module upload is invalid", problems)
    assert isinstance(manifest, dict) and isinstance(script, str)
    name = manifest.get("script") if isinstance(manifest.get("script"), str) else "module.py"
    return ModulePackage(json.dumps(manifest, indent=2), script, name, "body")
