"""Form errors: what a refused post shows next to its fields.

A service refuses bad input with :class:`~host.errors.InvalidInput` listing problems by
location (``email``, ``settings.sender_email``, ``module.py:12``). :class:`FormErrors` turns
them into a summary at the top of the form (linked to each field) and a message under each
field; templates use ``errors.summary``, ``errors.for_field(name)`` and the ``field`` macros
of ``_forms.html``, which wire ``aria-invalid`` and ``aria-describedby``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from host.errors import HostError, Problem


@dataclass
class FormErrors:
    message: str = ""
    by_field: dict[str, list[str]] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, error: HostError, fields: Iterable[str] = ()) -> FormErrors:
        """``fields``: the form's field names; a problem at another location is listed in
        the summary only."""
        known = set(fields)
        errors = cls(error.message)
        for problem in error.problems:
            errors.add(problem, known)
        return errors

    def add(self, problem: Problem, known: set[str]) -> None:
        if problem.location in known:
            self.by_field.setdefault(problem.location, []).append(problem.message)
        else:
            where = f"{problem.location}: " if problem.location else ""
            self.other.append(where + problem.message)

    def __bool__(self) -> bool:
        return bool(self.message or self.by_field or self.other)

    def for_field(self, name: str) -> list[str]:
        return self.by_field.get(name, [])
