"""Reading module packages: directory, zip (root or one top folder), JSON body, and every
unsafe or broken archive refused with a located problem and nothing stored."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from host.errors import InvalidInput
from host.modules.packages import from_directory, from_json_body, from_zip
from tests.host.conftest import (
    EMAIL_FUNCTIONS,
    EMAIL_SCRIPT,
    email_manifest,
    json_body,
    package_zip,
    table_dump,
    write_package,
    zip_bytes,
)

MAX_ARCHIVE = 1024 * 1024
MAX_SCRIPT = 64 * 1024


def read_zip(data: bytes, **caps: int):
    return from_zip(
        data,
        max_archive_bytes=caps.get("max_archive_bytes", MAX_ARCHIVE),
        max_script_bytes=caps.get("max_script_bytes", MAX_SCRIPT),
    )


def problems_of(excinfo: pytest.ExceptionInfo[InvalidInput]) -> list[tuple[str, str]]:
    return [(p.location, p.message) for p in excinfo.value.problems]


# ------------------------------------------------------------------------------ good paths


def test_directory_package(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg")
    package = from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT)
    assert json.loads(package.manifest_text)["id"] == "sendmail"
    assert package.script == EMAIL_SCRIPT
    assert package.script_name == "module.py"


def test_zip_with_files_at_root() -> None:
    package = read_zip(package_zip())
    assert json.loads(package.manifest_text) == email_manifest()
    assert package.script == EMAIL_SCRIPT


def test_zip_with_one_top_folder() -> None:
    package = read_zip(package_zip(folder="sendmail-1.0.0"))
    assert package.script == EMAIL_SCRIPT


def test_zip_with_directory_entries_and_other_files() -> None:
    data = zip_bytes(
        {
            "pkg/": b"",
            "pkg/manifest.json": json.dumps(email_manifest()),
            "pkg/module.py": EMAIL_SCRIPT,
            "pkg/tests/test_module.py": "def test(): pass\n",
        }
    )
    assert read_zip(data).script == EMAIL_SCRIPT


def test_json_body_package() -> None:
    package = from_json_body(json_body(), max_script_bytes=MAX_SCRIPT)
    assert json.loads(package.manifest_text) == email_manifest()
    assert package.script == EMAIL_SCRIPT
    assert package.script_name == "module.py"


def test_script_name_comes_from_the_manifest(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg", email_manifest(script="sendmail.py"))
    package = from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT)
    assert package.script_name == "sendmail.py"
    assert package.script == EMAIL_SCRIPT


def test_every_form_uploads_the_same_version(host, tmp_path: Path) -> None:
    """Directory, zip and JSON body of the same content are one immutable version."""
    write_package(tmp_path / "pkg")
    first = host.registry.upload(from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT))
    again_zip = host.registry.upload(read_zip(package_zip(folder="x")))
    again_json = host.registry.upload(from_json_body(json_body(), max_script_bytes=MAX_SCRIPT))
    assert first.created and not again_zip.created and not again_json.created
    assert first.functions == EMAIL_FUNCTIONS


# ------------------------------------------------------------------------- unsafe archives


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(email_manifest()))
        link = zipfile.ZipInfo("module.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entries", "location", "words"),
    [
        (
            {"manifest.json": "{}", "module.py": "", "../evil.py": "x"},
            "../evil.py",
            "escapes",
        ),
        (
            {"manifest.json": "{}", "module.py": "", "pkg/../../evil.py": "x"},
            "pkg/../../evil.py",
            "escapes",
        ),
        (
            {"manifest.json": "{}", "module.py": "", "/etc/cron.d/x": "x"},
            "/etc/cron.d/x",
            "absolute",
        ),
        ({"manifest.json": "{}", "module.py": "", "C:/evil.py": "x"}, "C:/evil.py", "absolute"),
    ],
)
def test_unsafe_paths_are_refused(entries, location, words) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            # ZipFile.writestr normalises nothing for a ZipInfo: the name is kept as given
            archive.writestr(zipfile.ZipInfo(name), content)
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(buffer.getvalue())
    assert excinfo.value.message == "module archive contains unsafe entries"
    ((where, message),) = problems_of(excinfo)
    assert where == location
    assert words in message


def test_every_unsafe_entry_is_reported_at_once() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("manifest.json", "module.py", "../a", "/b"):
            archive.writestr(zipfile.ZipInfo(name), "x")
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(buffer.getvalue())
    assert [loc for loc, _ in problems_of(excinfo)] == ["../a", "/b"]


def test_symlink_entry_is_refused() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(symlink_zip())
    assert problems_of(excinfo) == [
        ("module.py", "symbolic links are not allowed in a module archive")
    ]


def test_oversize_archive_is_refused_before_it_is_opened() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(b"PK" + b"\0" * 5000, max_archive_bytes=4096)
    ((where, message),) = problems_of(excinfo)
    assert where == "package"
    assert "5002 bytes, more than the limit of 4096" in message


def test_oversize_script_in_zip() -> None:
    big = EMAIL_SCRIPT + "#" * MAX_SCRIPT
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(package_zip(script=big))
    ((where, message),) = problems_of(excinfo)
    assert where == "module.py"
    assert f"more than the limit of {MAX_SCRIPT}" in message


def test_oversize_script_in_directory(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg", script=EMAIL_SCRIPT + "#" * MAX_SCRIPT)
    with pytest.raises(InvalidInput) as excinfo:
        from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT)
    ((where, message),) = problems_of(excinfo)
    assert where.endswith("module.py")
    assert "more than the limit" in message


def test_oversize_script_in_json_body() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        from_json_body(json_body(script="#" * (MAX_SCRIPT + 1)), max_script_bytes=MAX_SCRIPT)
    assert problems_of(excinfo) == [("body.script", f"more than the limit of {MAX_SCRIPT} bytes")]


def _patch_declared_size(data: bytes, member: str, declared: int) -> bytes:
    """Make ``member``'s local and central headers lie about its uncompressed size."""
    patched = bytearray(data)
    name = member.encode()
    for signature, name_len_at, name_at, size_at in (
        (b"PK\x03\x04", 26, 30, 22),  # local file header
        (b"PK\x01\x02", 28, 46, 24),  # central directory header
    ):
        position = patched.find(signature)
        while position >= 0:
            length = struct.unpack_from("<H", patched, position + name_len_at)[0]
            if patched[position + name_at : position + name_at + length] == name:
                struct.pack_into("<I", patched, position + size_at, declared)
            position = patched.find(signature, position + 4)
    return bytes(patched)


TEN_MIB = 10 * 1024 * 1024


def test_zip_bomb_declared_honestly_is_refused_by_its_declared_size() -> None:
    data = package_zip(script=EMAIL_SCRIPT + "#" + " " * TEN_MIB)
    assert len(data) < 64 * 1024  # compresses to almost nothing
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(data)
    ((where, message),) = problems_of(excinfo)
    assert where == "module.py"
    assert "more than the limit" in message


def test_zip_bomb_declaring_a_small_size_is_cut_not_inflated() -> None:
    """The header claims 1,000 bytes; the stream inflates to 10 MiB. The reader stops at the
    cap and reports the entry, whatever the header says."""
    bomb = _patch_declared_size(
        package_zip(script=EMAIL_SCRIPT + "#" + " " * TEN_MIB), "module.py", 1000
    )
    assert zipfile.ZipFile(io.BytesIO(bomb)).getinfo("module.py").file_size == 1000
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(bomb)
    ((where, message),) = problems_of(excinfo)
    assert where == "module.py"
    assert "corrupt archive entry" in message


def test_zip_bomb_under_declared_size_but_above_the_cap() -> None:
    bomb = _patch_declared_size(
        package_zip(script=EMAIL_SCRIPT + "#" + " " * TEN_MIB), "module.py", MAX_SCRIPT - 1
    )
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(bomb)
    assert problems_of(excinfo)[0][0] == "module.py"


def test_not_a_zip() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(b"this is plain text, not an archive")
    assert problems_of(excinfo) == [("package", "not a zip archive")]


def test_zip_without_manifest() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(zip_bytes({"module.py": EMAIL_SCRIPT}))
    ((where, message),) = problems_of(excinfo)
    assert where == "package"
    assert "no manifest.json" in message


def test_zip_with_two_top_folders_is_ambiguous() -> None:
    data = zip_bytes({"a/manifest.json": json.dumps(email_manifest()), "b/module.py": EMAIL_SCRIPT})
    with pytest.raises(InvalidInput, match="incomplete"):
        read_zip(data)


def test_directory_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    with pytest.raises(InvalidInput) as excinfo:
        from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT)
    ((where, message),) = problems_of(excinfo)
    assert where.endswith("manifest.json")
    assert message == "file not found"


def test_manifest_naming_a_missing_script_in_zip() -> None:
    data = zip_bytes({"manifest.json": json.dumps(email_manifest(script="missing.py"))})
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(data)
    assert problems_of(excinfo) == [("missing.py", "script file named by the manifest is missing")]


def test_manifest_naming_a_missing_script_in_directory(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg")
    (tmp_path / "pkg" / "manifest.json").write_text(json.dumps(email_manifest(script="missing.py")))
    with pytest.raises(InvalidInput) as excinfo:
        from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT)
    ((where, message),) = problems_of(excinfo)
    assert where.endswith("missing.py")
    assert "missing" in message


def test_script_symlink_in_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(EMAIL_SCRIPT)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "manifest.json").write_text(json.dumps(email_manifest()))
    (pkg / "module.py").symlink_to(outside)
    with pytest.raises(InvalidInput):
        from_directory(pkg, max_script_bytes=MAX_SCRIPT)


def test_non_utf8_script_in_zip() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(package_zip(script=b"# caf\xe9\n" + EMAIL_SCRIPT.encode()))
    assert problems_of(excinfo) == [("module.py", "not UTF-8 text (byte 5)")]


def test_non_utf8_script_in_directory(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg", script=b"\xff\xfe" + EMAIL_SCRIPT.encode())
    with pytest.raises(InvalidInput) as excinfo:
        from_directory(tmp_path / "pkg", max_script_bytes=MAX_SCRIPT)
    ((where, message),) = problems_of(excinfo)
    assert where.endswith("module.py")
    assert "not UTF-8" in message


@pytest.mark.parametrize(
    ("body", "locations"),
    [
        ([], ["body"]),
        ({}, ["body.manifest", "body.script"]),
        ({"manifest": "{}", "script": 3}, ["body.manifest", "body.script"]),
        ({"manifest": email_manifest()}, ["body.script"]),
    ],
)
def test_malformed_json_bodies(body, locations) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        from_json_body(body, max_script_bytes=MAX_SCRIPT)
    assert [loc for loc, _ in problems_of(excinfo)] == locations


# ------------------------------------------------------ through the API: nothing is stored


BAD_ARCHIVES = {
    "traversal": zip_bytes({"manifest.json": "{}", "module.py": "", "../x": "x"}),
    "symlink": symlink_zip(),
    "not-a-zip": b"hello",
    "no-manifest": zip_bytes({"module.py": EMAIL_SCRIPT}),
    "missing-script": zip_bytes({"manifest.json": json.dumps(email_manifest())}),
    "non-utf8": package_zip(script=b"\xe9"),
    "bomb": _patch_declared_size(
        package_zip(script=EMAIL_SCRIPT + "#" + " " * TEN_MIB), "module.py", 1000
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_ARCHIVES))
def test_bad_archive_upload_is_422_and_stores_nothing(name, host, client, admin) -> None:
    before = table_dump(host)
    response = client.post(
        "/api/v1/modules",
        headers=admin,
        files={"package": ("module.zip", BAD_ARCHIVES[name], "application/zip")},
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["problems"] and all(p["location"] for p in body["problems"])
    assert table_dump(host) == before


def test_oversize_archive_upload_is_413(host, client, admin) -> None:
    cap = host.settings.max_archive_bytes
    before = table_dump(host)
    response = client.post(
        "/api/v1/modules",
        headers=admin,
        files={"package": ("module.zip", b"PK" + b"\0" * cap, "application/zip")},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert response.json()["problems"][0]["location"] == "package"
    assert table_dump(host) == before


def test_zip_upload_good_path(client, admin) -> None:
    response = client.post(
        "/api/v1/modules",
        headers=admin,
        files={"package": ("m.zip", package_zip(folder="sendmail"), "application/zip")},
    )
    assert response.status_code == 201, response.text
    assert response.json()["functions"] == EMAIL_FUNCTIONS


def test_duplicate_entries_are_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(email_manifest()))
        archive.writestr("module.py", EMAIL_SCRIPT)
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("module.py", "def CRM_Marketing_X(): pass\n")
    with pytest.raises(InvalidInput) as excinfo:
        read_zip(buffer.getvalue())
    assert problems_of(excinfo) == [("module.py", "appears more than once in the archive")]
