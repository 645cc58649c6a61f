"""What the host keeps per tenant, stood in for on the integrator's machine: the tenant's
contacts (served to ``crm.contacts(ids)``) and the module's storage.

Why stand-ins and not a database: ``crm-host module run`` and ``module test`` must run every
function offline — ExportContacts reads contacts, CreateCampaign reads what PrepareCampaign
stored — with nothing but files. The stand-ins answer exactly as the server does:

* ``crm.contacts(ids)`` refuses what the server refuses (:func:`requested_ids`), returns the
  known contacts among ``ids`` in the order asked, each ``{id, name, email, phone, status}``,
  and leaves unknown ids out.
* storage starts from the stored snapshot; a successful call's changes are applied after
  its return value is validated, a failed call keeps none of them, and a
  ``storage.set(key, value, durable=True)`` is kept at once even if the call fails later.

A storage file is written atomically (a temporary file beside it, then a rename), so an
interrupted run leaves the previous state, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from host.contract.enforce import describe_validation_error
from host.contract.types import Contact
from host.errors import InvalidInput, Problem
from host.marketing.contacts import requested_ids
from host.module_storage import StorageChanges
from sandbox.capabilities import DURABLE_STORAGE_CALLBACK
from sandbox.errors import ScriptError

HostCallback = Callable[[list[Any]], Any]
CONTACT_FIELDS = ("id", "name", "email", "phone", "status")


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file's data; InvalidInput naming the file (and line) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{what} not found", [Problem(str(path), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidInput(f"{what} is not readable", [Problem(str(path), reason)]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{what} is not JSON", [Problem(f"{path}:{exc.lineno}", exc.msg)]
        ) from None
    except RecursionError:
        raise InvalidInput(
            f"{what} is not JSON", [Problem(str(path), "nested too deeply")]
        ) from None


@dataclass(frozen=True)
class OfflineContacts:
    """A tenant's contacts from a fixture: a JSON list of ``{id, name, email?, phone?,
    status?}`` (``status`` defaults to Subscribed, as for a contact the API creates)."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Any, where: str) -> OfflineContacts:
        """Every problem at once, each located as ``where[i].field``."""
        if not isinstance(data, list):
            raise InvalidInput(
                "contacts are invalid", [Problem(where, "must be a list of contact objects")]
            )
        problems: list[Problem] = []
        contacts: dict[str, dict[str, Any]] = {}
        for i, item in enumerate(data):
            at = f"{where}[{i}]"
            if not isinstance(item, dict):
                problems.append(Problem(at, "a contact must be a JSON object"))
                continue
            unknown = [k for k in item if k not in CONTACT_FIELDS]
            problems += [Problem(f"{at}.{k}", "unknown key") for k in unknown]
            known = {k: v for k, v in item.items() if k in CONTACT_FIELDS}
            row = {"email": None, "phone": None, "status": "Subscribed", **known}
            try:
                contact = Contact.model_validate(row).model_dump(mode="json")
            except ValidationError as exc:
                problems.append(Problem(at, describe_validation_error(exc)))
                continue
            if contact["id"] in contacts:
                problems.append(Problem(f"{at}.id", f"{contact['id']!r} appears twice"))
            contacts[contact["id"]] = contact
        if problems:
            raise InvalidInput("contacts are invalid", problems)
        return cls(contacts)

    @classmethod
    def load(cls, path: Path) -> OfflineContacts:
        return cls.from_data(read_json_file(path, "contacts file"), str(path))

    def callback(self) -> HostCallback:
        """``crm.contacts`` as the server lends it (:meth:`ContactService.script_callback`)."""

        def contacts(args: list[Any]) -> list[dict[str, Any]]:
            if len(args) != 1:
                raise ScriptError("crm.contacts(ids) takes one argument")
            return [dict(self.by_id[i]) for i in requested_ids(args[0]) if i in self.by_id]

        return contacts


@dataclass
class OfflineStorage:
    """A module's storage for offline runs; ``path`` set means it lives in a file."""

    data: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_data(cls, data: Any, where: str, path: Path | None = None) -> OfflineStorage:
        if not isinstance(data, dict):
            raise InvalidInput(
                "storage is invalid", [Problem(where, "must be a JSON object of stored keys")]
            )
        return cls(dict(data), path)

    @classmethod
    def load(cls, path: Path) -> OfflineStorage:
        """The storage kept in ``path``; a missing file is an empty storage (created on the
        first write)."""
        if not path.exists():
            return cls({}, path)
        return cls.from_data(read_json_file(path, "storage file"), str(path), path)

    def snapshot(self) -> dict[str, Any]:
        """What the call starts from (a copy: the run never changes it in place)."""
        return json.loads(json.dumps(self.data))

    def durable_callback(self) -> HostCallback:
        """``storage.durable``: the one write a script asks to keep at once."""

        def write(args: list[Any]) -> None:
            if len(args) != 2 or not isinstance(args[0], str) or not args[0]:
                raise ScriptError("storage keys must be non-empty strings")
            self.data[args[0]] = args[1]
            self.save()

        return write

    def apply(self, changes: StorageChanges | None) -> None:
        """A successful call's changes, kept (and written, for a file)."""
        if changes is None:
            return
        for key in changes.removed:
            self.data.pop(key, None)
        self.data.update(changes.changed)
        self.save()

    def save(self) -> None:
        """Write the file atomically; nothing to do for storage that lives in a case."""
        if self.path is None:
            return
        text = json.dumps(self.data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        folder = self.path.parent
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def offline_callbacks(
    contacts: OfflineContacts, storage: OfflineStorage
) -> dict[str, HostCallback]:
    """The host callbacks of an offline run besides the attribution map: ``crm.contacts``
    (no fixture is a tenant without contacts: every id is unknown) and ``storage.durable``."""
    return {
        "crm.contacts": contacts.callback(),
        DURABLE_STORAGE_CALLBACK: storage.durable_callback(),
    }
