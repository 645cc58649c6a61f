"""Key paths of secret settings: where the settings schema marks a value ``writeOnly``, and
where such values sit in a tenant's settings.

Why tuples of keys and not dotted strings: a property may be named ``api.key``, ``a/b``,
``~0``, ``"with spaces"`` or ``ключ``; a dotted string cannot tell ``{"api.key": …}`` from
``{"api": {"key": …}}`` and so sealed, masked and merged the wrong value (or none). A path
here is a tuple whose steps are the property names exactly as the schema spells them.

Two kinds of path:

* A **schema path** (:data:`SchemaPath`) comes from the manifest: property names, plus the
  step :data:`EACH_ITEM` (shown ``[*]``) for "every element of this array" when a ``writeOnly``
  property sits under an array's ``items`` — ``("accounts", EACH_ITEM, "token")`` is the
  ``token`` of every element of ``accounts``. When ``items`` itself is ``writeOnly`` the whole
  array is the secret (its path ends at the array).
* A **data path** (:data:`DataPath`) is one concrete place in a settings object: property names
  and list indices (``int``), e.g. ``("accounts", 2, "token")``. :func:`expand` turns a schema
  path into the data paths present in given settings. Data paths are JSON-friendly (a list of
  strings and integers), which is how secrets are sealed at rest.

Array elements are matched by position: a secret kept across an edit stays with the element
at the same index.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from typing import Any, Final


class Step(enum.Enum):
    """A schema path step that is not a property name."""

    EACH_ITEM = "[*]"

    def __repr__(self) -> str:
        return self.value


EACH_ITEM: Final = Step.EACH_ITEM

SchemaPath = tuple[str | Step, ...]
DataPath = tuple[str | int, ...]

MISSING: Final = object()
"""What :func:`get` answers when a step of the path is absent."""


def secret_schema_paths(schema: Any, prefix: SchemaPath = ()) -> Iterator[SchemaPath]:
    """The schema paths of ``writeOnly`` values, in declaration order, following nested
    objects through ``properties`` and arrays through ``items``."""
    if not isinstance(schema, dict):
        return
    items = schema.get("items")
    if isinstance(items, dict):
        if items.get("writeOnly") is True:
            yield prefix
        else:
            yield from secret_schema_paths(items, (*prefix, EACH_ITEM))
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        path = (*prefix, name)
        if sub.get("writeOnly") is True:
            yield path
        else:
            yield from secret_schema_paths(sub, path)


def expand(data: Any, path: SchemaPath) -> Iterator[DataPath]:
    """The data paths in ``data`` that ``path`` names and that exist (a value, even None)."""

    def walk(node: Any, rest: SchemaPath, done: DataPath) -> Iterator[DataPath]:
        if not rest:
            yield done
            return
        step, tail = rest[0], rest[1:]
        if step is EACH_ITEM:
            if isinstance(node, list):
                for index, item in enumerate(node):
                    yield from walk(item, tail, (*done, index))
        elif isinstance(node, dict) and step in node:
            yield from walk(node[step], tail, (*done, step))

    if path:
        yield from walk(data, path, ())


def get(data: Any, path: DataPath) -> Any:
    """The value at ``path``, or :data:`MISSING`."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or not 0 <= step < len(data):
                return MISSING
        elif not isinstance(data, dict) or step not in data:
            return MISSING
        data = data[step]
    return data


def parent(data: Any, path: DataPath) -> tuple[Any, str | int] | None:
    """The container holding the last step of ``path`` and that step, when it exists."""
    if not path:
        return None
    container = get(data, path[:-1])
    leaf = path[-1]
    if isinstance(leaf, int) and isinstance(container, list) and 0 <= leaf < len(container):
        return container, leaf
    if isinstance(leaf, str) and isinstance(container, dict):
        return container, leaf
    return None


def put(data: dict[str, Any], path: DataPath, value: Any) -> bool:
    """Set ``path`` to ``value``, creating missing objects on the way (never list elements);
    False when the path runs through a value that is not a container of the right kind."""
    node: Any = data
    for step, following in itertools.pairwise(path):
        if isinstance(step, int):
            if not isinstance(node, list) or not 0 <= step < len(node):
                return False
            node = node[step]
            continue
        if not isinstance(node, dict):
            return False
        if step not in node and isinstance(following, str):
            node[step] = {}
        node = node.get(step)
    leaf = path[-1]
    if isinstance(leaf, int):
        if not isinstance(node, list) or not 0 <= leaf < len(node):
            return False
    elif not isinstance(node, dict):
        return False
    node[leaf] = value
    return True


def pop(data: Any, path: DataPath) -> Any:
    """Remove the value at ``path`` from its object and return it (:data:`MISSING` when
    absent). A whole-array secret inside a list is replaced by None, keeping indices."""
    found = parent(data, path)
    if found is None:
        return MISSING
    container, leaf = found
    if isinstance(container, list):
        value = container[leaf]  # type: ignore[index]
        container[leaf] = None  # type: ignore[index]
        return value
    return container.pop(leaf)


def is_data_path(value: Any) -> bool:
    """Whether ``value`` (as read back from JSON) is a non-empty list of keys and indices."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(s, str) or (isinstance(s, int) and not isinstance(s, bool)) for s in value
        )
    )
