"""The request/response base models and the URL form every API schema module shares.

Kept apart from :mod:`gateway.api.schemas` so a schema module that
:mod:`gateway.api.schemas` itself builds on (:mod:`gateway.api.after_call_schemas`) can use
them without a circular import; :mod:`gateway.api.schemas` re-exports all three names.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, field_serializer
from pydantic.alias_generators import to_camel

from gateway.clock import iso_utc

__all__ = ["TOOL_URL", "_Request", "_Response"]

#: A tool URL's form, ``http(s)://host[:port][/path?query#fragment]``: a host name or IPv4
#: literal or bracketed IPv6 literal, no user name or password, no spaces or control
#: characters. Written with explicit ranges so Python and ECMA-262 (the OpenAPI document's
#: regex dialect) read it alike.
TOOL_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?:[/?#][^\x00-\x20\x7f]*)?"
)


class _Request(BaseModel):
    """A request body: camelCase on the wire, strict types, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class _Response(BaseModel):
    """A response body: camelCase on the wire; every instant in JSON as :func:`~gateway.clock.iso_utc`
    writes it (microseconds, ``Z``), so a record's instants sort as text in time order."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    @field_serializer("*", mode="wrap", when_used="json")
    def _instants(self, value: Any, handler: SerializerFunctionWrapHandler):  # noqa: ANN202  (no return type: each field keeps its own schema)
        return iso_utc(value) if isinstance(value, datetime) else handler(value)
