"""Contact rows of an upsert request: validation of each field, JSON bodies, and CSV parsed
incrementally as it streams in. Every bad row is reported at once with where it is
(``rows[17].email`` for JSON, ``line 18: email`` for CSV), so a client fixes a file in one go.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from host.errors import InvalidInput, PayloadTooLarge, Problem
from host.json_values import text_problem

MAX_ROWS = 10_000
"""Rows per upsert request; bigger imports are split by the client."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Bytes per upsert request body (JSON or CSV), checked while the body streams in."""

MAX_PROBLEMS = 200
"""Problems listed in one error answer; the rest are counted, not listed."""

CSV_COLUMNS = ("id", "name", "email", "phone")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
_EMAIL = re.compile(
    r"^[^@\s\"<>(),;:\\\[\]]+"  # local part: no spaces, quotes or separators
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"  # first domain label
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"  # at least one more label
)
_PHONE = re.compile(r"^\+?[0-9 ().-]+$")
_LIMITS = {"id": 64, "name": 300, "email": 320, "phone": 40}


@dataclass(frozen=True)
class ContactRow:
    """One validated input row; ``where`` is how problems name it (``rows[3]``, ``line 4``)."""

    where: str
    name: str
    id: str | None = None
    email: str | None = None
    phone: str | None = None

    @property
    def email_key(self) -> str | None:
        return self.email.lower() if self.email else None


# --- validation ------------------------------------------------------------------------------


def is_email(value: str) -> bool:
    """The address shape contact rows accept (webhook actions that name a contact use it)."""
    return len(value) <= _LIMITS["email"] and bool(_EMAIL.match(value))


def field_location(where: str, name: str) -> str:
    """Where a field's problem points: ``rows[3].email`` (JSON) or ``line 4: email`` (CSV)."""
    return f"{where}.{name}" if where.startswith("rows") else f"{where}: {name}"


def _field_problems(name: str, value: Any, *, required: bool) -> tuple[str | None, str | None]:
    """(cleaned value, problem) of one field; empty strings count as absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ("is required" if required else None)
    if not isinstance(value, str):
        return None, "must be a string"
    unstorable = text_problem(value)
    if unstorable is not None:
        return None, unstorable
    value = value.strip()
    if len(value) > _LIMITS[name]:
        return None, f"is longer than {_LIMITS[name]} characters"
    if name == "id" and not _ID.match(value):
        return None, "must start with a letter or digit and use only letters, digits and ._:@-"
    if name == "email" and not _EMAIL.match(value):
        return None, "is not a valid email address"
    if name == "phone" and (not _PHONE.match(value) or sum(c.isdigit() for c in value) < 3):
        return None, "may contain only digits, spaces, ( ) . - and a leading +"
    return value, None


def validate_row(where: str, raw: Any) -> tuple[ContactRow | None, list[Problem]]:
    """A row as a ContactRow, or every problem with it (``rows[3].email: ...``)."""
    if not isinstance(raw, Mapping):
        return None, [Problem(where, "must be an object with name, and id, email, phone")]
    problems = [
        Problem(field_location(where, str(key)), "is not a contact field (id, name, email, phone)")
        for key in raw
        if key not in _LIMITS
    ]
    values: dict[str, str | None] = {}
    for column in CSV_COLUMNS:
        values[column], problem = _field_problems(
            column, raw.get(column), required=column == "name"
        )
        if problem:
            problems.append(Problem(field_location(where, column), problem))
    if problems:
        return None, problems
    name = values.pop("name")
    assert name is not None
    return ContactRow(where=where, name=name, **values), []


def rows_from_json(body: Any) -> list[ContactRow]:
    """Validated rows of a JSON body (a list of objects); raises InvalidInput with every
    bad row."""
    if not isinstance(body, list):
        raise InvalidInput("contacts are invalid", [Problem("body", "must be a JSON array")])
    if len(body) > MAX_ROWS:
        raise PayloadTooLarge(
            "too many contacts", [Problem("body", f"at most {MAX_ROWS} rows per request")]
        )
    rows, problems = [], []
    for index, raw in enumerate(body):
        row, found = validate_row(f"rows[{index}]", raw)
        problems.extend(found)
        if row is not None:
            rows.append(row)
    raise_if_problems(problems)
    return rows


class CsvContactReader:
    """Parses a CSV body pushed in chunks (``feed``/``close``) as it streams in, so a large
    upload is never held as one string. The header row names the columns (id, name, email,
    phone; any order, name required). Lines are numbered as a spreadsheet shows them: the
    header is line 1, and a record spanning lines (a quoted newline) is named by its first."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._pending = ""  # text after the last complete line
        self._record: list[str] = []  # lines of a record still inside quotes
        self._record_line = 0
        self._quotes = 0  # quotes in the record so far; odd means inside a quoted field
        self._line = 0
        self._header: list[str] | None = None
        self.rows: list[ContactRow] = []
        self.problems: list[Problem] = []
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        try:
            text = self._pending + self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            number = self._line + 1 + chunk[: exc.start].count(b"\n")
            raise InvalidInput(
                "CSV is invalid", [Problem(f"line {number}", "is not UTF-8 text")]
            ) from None
        # only "\n" ends a line ("\r\n" too: csv drops the "\r"); str.splitlines would
        # also split on form feeds and Unicode separators inside a name
        *lines, self._pending = text.split("\n")
        for line in lines:
            self._take_line(line + "\n")

    def close(self) -> list[ContactRow]:
        """Every validated row; raises InvalidInput with every problem found."""
        try:
            self._pending += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            self.problems.append(Problem(f"line {self._line + 1}", "is not UTF-8 text"))
        if self._pending:
            self._take_line(self._pending)
            self._pending = ""
        if self._record:
            self.problems.append(
                Problem(f"line {self._record_line}", "a quoted field is never closed")
            )
        if self._header is None and not self.problems:
            self.problems.append(
                Problem("line 1", "the header row (id,name,email,phone) is missing")
            )
        raise_if_problems(self.problems, "CSV is invalid")
        return self.rows

    def _take_line(self, line: str) -> None:
        self._line += 1
        if not self._record:
            self._record_line = self._line
        self._record.append(line)
        self._quotes += line.count('"')
        if self._quotes % 2:  # inside a quoted field: the record goes on
            return
        text = "".join(self._record)
        self._record, self._quotes = [], 0
        try:
            fields = next(csv.reader([text]), [])
        except csv.Error as exc:
            self.problems.append(Problem(f"line {self._record_line}", f"is not CSV ({exc})"))
            return
        if not any(f.strip() for f in fields):
            return  # blank line
        if self._header is None:
            self._set_header(fields)
        else:
            self._take_record(fields)

    def _set_header(self, fields: list[str]) -> None:
        header = [f.strip().lower() for f in fields]
        unknown = [f for f in header if f not in CSV_COLUMNS]
        if unknown or "name" not in header or len(set(header)) != len(header):
            self.problems.append(
                Problem(
                    f"line {self._record_line}",
                    "the header must name the columns id, name, email, phone (name required, "
                    f"each once); got {','.join(fields)}",
                )
            )
            header = []
        self._header = header

    def _take_record(self, fields: list[str]) -> None:
        self.count += 1
        if self.count > MAX_ROWS:
            raise PayloadTooLarge(
                "too many contacts", [Problem("body", f"at most {MAX_ROWS} rows per request")]
            )
        where = f"line {self._record_line}"
        if not self._header:
            return  # the header was bad; already reported
        if len(fields) != len(self._header):
            self.problems.append(
                Problem(where, f"has {len(fields)} fields, the header has {len(self._header)}")
            )
            return
        row, found = validate_row(where, dict(zip(self._header, fields, strict=True)))
        self.problems.extend(found)
        if row is not None:
            self.rows.append(row)


def rows_from_csv(chunks: Iterable[bytes]) -> list[ContactRow]:
    reader = CsvContactReader()
    for chunk in chunks:
        reader.feed(chunk)
    return reader.close()


def raise_if_problems(problems: Sequence[Problem], message: str = "contacts are invalid") -> None:
    if not problems:
        return
    listed = list(problems[:MAX_PROBLEMS])
    if len(problems) > MAX_PROBLEMS:
        listed.append(Problem("", f"... and {len(problems) - MAX_PROBLEMS} more problems"))
    raise InvalidInput(f"{message}; nothing was stored", listed)
