"""Generate the checked-in files derived from the contract's one definition: the typed SDK
(``crm_module_sdk/__init__.py``) and the reference sections of ``docs/writing-modules.md``
(between ``<!-- contract:NAME -->`` and ``<!-- /contract:NAME -->`` markers).

Run ``python -m host.contract.generate`` after changing anything in :mod:`host.contract`;
``tests/host/test_contract_generate.py`` regenerates into memory and fails when a checked-in
file differs, so a stale copy cannot be merged. The SDK imports nothing from ``host``: it is
installed with the host but describes the script's world for editors and mypy only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from host.contract.reference import reference_sections
from host.contract.sdk_source import sdk_source

ROOT = Path(__file__).resolve().parents[2]
SDK_PATH = ROOT / "crm_module_sdk" / "__init__.py"
GUIDE_PATH = ROOT / "docs" / "writing-modules.md"


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- contract:{name} -->\n).*?(<!-- /contract:{name} -->)", re.S)


def with_sections(guide: str, sections: dict[str, str]) -> str:
    """``guide`` with each marked section replaced; a missing marker is an error (a guide
    edit that dropped one would silently stop the section being kept in step)."""
    for name, body in sections.items():
        pattern = _marked(name)
        if not pattern.search(guide):
            raise ValueError(f"docs/writing-modules.md has no <!-- contract:{name} --> section")
        guide = pattern.sub(_replacement(body), guide)
    return guide


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + body + match.group(2)


def generated_files() -> dict[Path, str]:
    """Every derived file with the content the definition gives it."""
    guide = GUIDE_PATH.read_text(encoding="utf-8")
    return {SDK_PATH: sdk_source(), GUIDE_PATH: with_sections(guide, reference_sections())}


def main() -> None:
    for path, text in generated_files().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
