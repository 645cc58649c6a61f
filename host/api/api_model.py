"""The base of every API model: camelCase JSON names, ISO times, aliases for domain
attributes of another name (the rules are in :mod:`host.api.schemas`, whose models build on it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

IsoTime = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""A time as the API has always written it: ``datetime.isoformat()``."""


class ApiModel(BaseModel):
    """Base of every body and answer: camelCase JSON names, snake_case attributes, built
    from a domain dataclass by attribute (or from a stored JSON answer by name)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        from_attributes=True,
    )


def from_names(*names: str) -> Any:
    """A field read from the domain object's attribute of another name, or from its JSON
    name (a stored answer); the domain name comes first, so that an attribute of the JSON
    name with another meaning (an ORM row's integer ``id``) is not taken instead."""
    return AliasChoices(*names)
