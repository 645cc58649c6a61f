"""Actions as comparable records, and the difference between two runs' actions.

A webhook receipt keeps the actions its module returned (:func:`action_records`), so a
shadow run of another version (:mod:`host.marketing.shadow_runs`) can say, per stored
request, whether the new version would do the same thing, and if not, which actions only
one side has. A record is the action's fields as JSON with every secret setting of the
tenant masked; a ``SendEmail`` body is kept as its length and SHA-256 rather than the whole
HTML, so a changed body still differs while the receipt stays small.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from sandbox.invocation import redact_data


def action_record(action: BaseModel, secrets: Sequence[str]) -> dict[str, Any]:
    """One action as stored on a receipt and shown in a diff (see the module docstring)."""
    record: dict[str, Any] = action.model_dump(mode="json", exclude_none=True)
    html = record.pop("html", None)
    if isinstance(html, str):
        digest = hashlib.sha256(html.encode("utf-8", errors="surrogatepass")).hexdigest()
        record["html"] = {"chars": len(html), "sha256": digest}
    masked: dict[str, Any] = redact_data(record, list(secrets)) if secrets else record
    return masked


def action_records(actions: Sequence[BaseModel], secrets: Sequence[str]) -> list[dict[str, Any]]:
    return [action_record(action, secrets) for action in actions]


def _key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ActionDiff:
    """How two lists of action records differ. ``only_current``: actions the current
    version returned that the candidate does not; ``only_candidate``: the reverse (each
    as often as it is extra). ``reordered``: the same actions in another order (they are
    applied in order, so that is a difference too)."""

    only_current: list[dict[str, Any]] = field(default_factory=list)
    only_candidate: list[dict[str, Any]] = field(default_factory=list)
    reordered: bool = False

    @property
    def same(self) -> bool:
        return not (self.only_current or self.only_candidate or self.reordered)


def diff_actions(
    current: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]]
) -> ActionDiff:
    """The multiset difference of the two lists, in each list's order."""
    current_keys = [_key(r) for r in current]
    candidate_keys = [_key(r) for r in candidate]
    extra_current = Counter(current_keys) - Counter(candidate_keys)
    extra_candidate = Counter(candidate_keys) - Counter(current_keys)
    return ActionDiff(
        only_current=_pick(current, current_keys, extra_current),
        only_candidate=_pick(candidate, candidate_keys, extra_candidate),
        reordered=not extra_current and not extra_candidate and current_keys != candidate_keys,
    )


def _pick(records: Sequence[dict[str, Any]], keys: list[str], extra: Counter[str]) -> list[Any]:
    """The records whose key ``extra`` counts, each as many times as counted (the last
    occurrences, so the first ones are those both sides share)."""
    wanted = Counter(extra)
    picked: list[dict[str, Any]] = []
    for record, key in zip(reversed(records), reversed(keys), strict=True):
        if wanted[key] > 0:
            wanted[key] -= 1
            picked.append(record)
    picked.reverse()
    return picked
