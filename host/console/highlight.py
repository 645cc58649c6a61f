"""Server-side Python highlighting for the script editor: Pygments turns the script into
one HTML fragment per source line, so the page can number the lines and show each
validation or run problem right under the line it names (the console's "inline markers";
the optional rich editor is a later npm build, ``docs/console.md``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

CSS_SCOPE = ".code"
_FORMATTER = HtmlFormatter(nowrap=True)


@dataclass(frozen=True)
class Marker:
    """A problem shown at a line: ``severity`` is ``error`` or ``warning``."""

    severity: str
    message: str


@dataclass
class CodeLine:
    number: int
    html: Markup
    markers: list[Marker] = field(default_factory=list)


def stylesheet() -> str:
    """Pygments' CSS for the highlighted code, served as a file (the console's CSP allows
    no inline style)."""
    return str(_FORMATTER.get_style_defs(CSS_SCOPE))


def line_of(location: str, script_name: str) -> int | None:
    """``module.py:12`` (or ``module.py:12:5``) → 12 when it names ``script_name``."""
    match = re.fullmatch(rf"{re.escape(script_name)}:(\d+)(?::\d+)?", location)
    return int(match.group(1)) if match else None


def highlighted_lines(source: str, markers: Iterable[tuple[int, Marker]] = ()) -> list[CodeLine]:
    """``source`` as highlighted lines, each with the markers at its number; a marker past
    the last line is shown at the last line."""
    # HtmlFormatter closes and reopens its spans at every newline, so the output splits
    # into whole, well-formed lines
    fragments = highlight(source, PythonLexer(stripnl=False, ensurenl=True), _FORMATTER)
    lines = [
        CodeLine(number, Markup(html))
        for number, html in enumerate(fragments.split("\n")[: max(len(source.splitlines()), 1)], 1)
    ]
    for number, marker in markers:
        lines[min(max(number, 1), len(lines)) - 1].markers.append(marker)
    return lines
