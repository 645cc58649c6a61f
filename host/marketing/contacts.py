"""CRM contacts: bulk upsert from JSON rows or a CSV stream, one contact with its subscriber
state, and the ``crm.contacts(ids)`` view lent to scripts.

Matching: a row with an ``id`` updates that contact (or creates it under that id); a row
without one updates the contact with the same email (case-insensitively, ``email_key``) or
creates a new contact with a generated id. Rows apply in input order, so a later row of the
same request sees what an earlier one did.

A request is all-or-nothing: every row is validated and matched before anything is written,
every bad row is reported (``rows[17].email`` for JSON, ``line 18: email`` for CSV), and a
single bad row means nothing is stored. Thousands of rows per request are expected; the caps
below keep one request from holding the database (or the process's memory) hostage.
"""

from __future__ import annotations

import codecs
import csv
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from host.db.engine import Database
from host.db.models import Contact, ContactUnsubscription
from host.errors import Conflict, InvalidInput, NotFound, Problem
from sandbox import errors as sandbox_errors

MAX_ROWS = 10_000
"""Rows per upsert request; bigger imports are split by the client."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Bytes per upsert request body (JSON or CSV), checked while the body streams in."""

MAX_SCRIPT_IDS = 1000
"""Ids per ``crm.contacts(ids)`` call; a script asks again for the next chunk."""

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


class RequestTooLarge(InvalidInput):
    """The request is over a size cap (bytes or rows); nothing of it was stored."""

    kind = "too_large"


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


@dataclass(frozen=True)
class UpsertResult:
    ids: list[str]
    created: int
    updated: int

    def as_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "created": self.created, "updated": self.updated}


@dataclass(frozen=True)
class ContactView:
    id: str
    name: str
    email: str | None
    phone: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    unsubscribed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "status": self.status,
            "unsubscribedCategories": self.unsubscribed,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


# --- validation ------------------------------------------------------------------------------


def _at(where: str, name: str) -> str:
    """Where a field's problem points: ``rows[3].email`` (JSON) or ``line 4: email`` (CSV)."""
    return f"{where}.{name}" if where.startswith("rows") else f"{where}: {name}"


def _field_problems(name: str, value: Any, *, required: bool) -> tuple[str | None, str | None]:
    """(cleaned value, problem) of one field; empty strings count as absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ("is required" if required else None)
    if not isinstance(value, str):
        return None, "must be a string"
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
        Problem(_at(where, str(key)), "is not a contact field (id, name, email, phone)")
        for key in raw
        if key not in _LIMITS
    ]
    values: dict[str, str | None] = {}
    for name in CSV_COLUMNS:
        values[name], problem = _field_problems(name, raw.get(name), required=name == "name")
        if problem:
            problems.append(Problem(_at(where, name), problem))
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
        raise RequestTooLarge(
            "too many contacts", [Problem("body", f"at most {MAX_ROWS} rows per request")]
        )
    rows, problems = [], []
    for index, raw in enumerate(body):
        row, found = validate_row(f"rows[{index}]", raw)
        problems.extend(found)
        if row is not None:
            rows.append(row)
    _raise_if(problems)
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
            line = self._line + 1 + chunk[: exc.start].count(b"\n")
            raise InvalidInput(
                "CSV is invalid", [Problem(f"line {line}", "is not UTF-8 text")]
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
        _raise_if(self.problems, "CSV is invalid")
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
            raise RequestTooLarge(
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


def _raise_if(problems: Sequence[Problem], message: str = "contacts are invalid") -> None:
    if not problems:
        return
    listed = list(problems[:MAX_PROBLEMS])
    if len(problems) > MAX_PROBLEMS:
        listed.append(Problem("", f"... and {len(problems) - MAX_PROBLEMS} more problems"))
    raise InvalidInput(f"{message}; nothing was stored", listed)


# --- the service -----------------------------------------------------------------------------


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """IN lists stay under every database's bound-parameter limit."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class ContactService:
    def __init__(self, db: Database):
        self.db = db

    def upsert(self, tenant_id: str, rows: Sequence[ContactRow]) -> UpsertResult:
        """Create or update every row in one transaction, or none (see the module doc)."""
        try:
            with self.db.transaction() as session:
                return self._upsert(session, tenant_id, rows)
        except IntegrityError:
            # another request stored the same email or id between our read and our write
            raise Conflict("contacts changed concurrently; retry the request") from None

    def _upsert(self, session: Session, tenant_id: str, rows: Sequence[ContactRow]) -> UpsertResult:
        contacts: dict[str, Contact] = {}
        ids = sorted({r.id for r in rows if r.id})
        keys = sorted({k for r in rows if (k := r.email_key)})
        for chunk in _chunks(ids):
            contacts.update((c.id, c) for c in self._select(session, tenant_id, Contact.id, chunk))
        for chunk in _chunks(keys):
            found = self._select(session, tenant_id, Contact.email_key, chunk)
            contacts.update((c.id, c) for c in found)
        # Every contact holding an email of the request is loaded, so ``owner`` is complete
        # for the emails that matter; it follows the rows as they move emails around.
        owner = {c.email_key: c.id for c in contacts.values() if c.email_key}
        stored_keys = {c.id: c.email_key for c in contacts.values()}
        final: dict[str, dict[str, Any]] = {}
        problems: list[Problem] = []
        ids_out: list[str] = []
        created = 0
        for row in rows:
            key = row.email_key
            target = row.id or (owner.get(key) if key else None) or uuid.uuid4().hex
            if key and owner.get(key, target) != target:
                problems.append(
                    Problem(_at(row.where, "email"), f"is the email of contact {owner[key]}")
                )
                continue
            values = final.get(target)
            if values is None:
                values = final[target] = {"email_key": stored_keys.get(target)}
                created += target not in contacts
            values["name"] = row.name
            if key:
                if values["email_key"] and values["email_key"] != key:
                    owner.pop(values["email_key"], None)
                owner[key] = target
                values.update(email=row.email, email_key=key)
            if row.phone is not None:
                values["phone"] = row.phone
            ids_out.append(target)
        _raise_if(problems)
        self._write(session, tenant_id, contacts, final)
        return UpsertResult(ids=ids_out, created=created, updated=len(ids_out) - created)

    @staticmethod
    def _write(
        session: Session,
        tenant_id: str,
        contacts: dict[str, Contact],
        final: dict[str, dict[str, Any]],
    ) -> None:
        """Store the final values. Emails that move between contacts are released first:
        the unique (tenant, email_key) index is checked per statement on some databases."""
        moved = [
            contacts[i]
            for i, v in final.items()
            if i in contacts and contacts[i].email_key not in (None, v["email_key"])
        ]
        for contact in moved:
            contact.email_key = None
        if moved:
            session.flush()
        for contact_id, values in final.items():
            contact = contacts.get(contact_id)
            if contact is None:
                session.add(Contact(tenant_id=tenant_id, id=contact_id, **values))
            else:
                for name, value in values.items():
                    setattr(contact, name, value)
        session.flush()

    @staticmethod
    def _select(session: Session, tenant_id: str, column: Any, values: Sequence[str]) -> Any:
        return session.scalars(
            select(Contact).where(Contact.tenant_id == tenant_id, column.in_(values))
        )

    def get(self, tenant_id: str, contact_id: str) -> ContactView:
        """One contact with its subscriber status and the categories it left."""
        with self.db.transaction() as session:
            contact = session.get(Contact, (tenant_id, contact_id))
            if contact is None:
                raise NotFound(f"contact {contact_id} does not exist")
            unsubscribed = session.scalars(
                select(ContactUnsubscription)
                .where(
                    ContactUnsubscription.tenant_id == tenant_id,
                    ContactUnsubscription.contact_id == contact_id,
                )
                .order_by(ContactUnsubscription.created_at, ContactUnsubscription.category)
            )
            return ContactView(
                id=contact.id,
                name=contact.name,
                email=contact.email,
                phone=contact.phone,
                status=contact.status,
                created_at=contact.created_at,
                updated_at=contact.updated_at,
                unsubscribed=[
                    {"category": u.category, "module": u.module_id, "at": u.created_at.isoformat()}
                    for u in unsubscribed
                ],
            )

    def for_script(self, tenant_id: str, ids: Any) -> list[dict[str, Any]]:
        """``crm.contacts(ids)``: this tenant's contacts among ``ids``, in the order asked,
        unknown ids left out. The tenant comes from the call, never from the script."""
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise sandbox_errors.ScriptError("crm.contacts(ids) expects a list of id strings")
        if len(ids) > MAX_SCRIPT_IDS:
            raise sandbox_errors.LimitExceeded(
                f"crm.contacts(ids) takes at most {MAX_SCRIPT_IDS} ids per call; got {len(ids)}"
            )
        wanted = list(dict.fromkeys(ids))
        found: dict[str, dict[str, Any]] = {}
        with self.db.transaction() as session:
            for chunk in _chunks(wanted):
                for c in self._select(session, tenant_id, Contact.id, chunk):
                    found[c.id] = {
                        "id": c.id,
                        "name": c.name,
                        "email": c.email,
                        "phone": c.phone,
                        "status": c.status,
                    }
        return [found[i] for i in wanted if i in found]

    def script_callback(self, tenant_id: str) -> Callable[[list[Any]], Any]:
        """The ``crm.contacts`` host callback of one call, bound to its tenant."""

        def contacts(args: list[Any]) -> list[dict[str, Any]]:
            if len(args) != 1:
                raise sandbox_errors.ScriptError("crm.contacts(ids) takes one argument")
            return self.for_script(tenant_id, args[0])

        return contacts
