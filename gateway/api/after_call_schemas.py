"""What a call request asks for after the call: the fields to extract and where to send events.

Every call-creating body (``POST /calls/create``, ``/calls/inline``, ``/calls/outbound``)
takes these, through :class:`AfterCallFields`:

* ``fields``: the values the post-call step extracts from the conversation, each with a
  name and a type (``string``, ``boolean``, ``number``, ``integer`` or ``enum`` with its
  ``values``) and an optional description for the model. A value the conversation does
  not support comes back ``null``.
* ``webhookUrl``: where this call's lifecycle events and end-of-call report are POSTed
  (signed with Standard Webhooks, with the tenant's call-URL secret from ``POST
  /webhook-call-secret``); the tenant's endpoints (``/webhook-endpoints``) get them too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.api.context import scope_of
from gateway.api.schema_base import TOOL_URL, _Request
from gateway.netpolicy import OutboundRefused

__all__ = ["FieldSpec", "FieldType", "AfterCallFields", "MAX_FIELDS", "MAX_ENUM_VALUES", "webhook_target"]


def webhook_target(url: str, info: ValidationInfo) -> str:
    """``url`` if it may receive webhooks: its form (:data:`TOOL_URL`), then the outbound policy's
    static check (scheme, literal addresses: :meth:`gateway.netpolicy.OutboundPolicy.check_static`,
    no DNS); the addresses a host name resolves to are checked again at delivery
    (:mod:`gateway.outbound`).

    Raises:
        ValueError: the form, or the policy's refusal (a 422 naming the field).
    """
    if not TOOL_URL.fullmatch(url):
        raise ValueError("must be http(s)://host[:port][/path] with no user name, password or spaces")
    try:
        scope_of(info).outbound.check_static(url)
    except OutboundRefused as exc:
        raise ValueError(str(exc)) from None
    return url

FieldType = Literal["string", "boolean", "number", "integer", "enum"]

#: At most this many fields per call (a JSON-schema response format stays small).
MAX_FIELDS = 50
#: At most this many values per ``enum`` field.
MAX_ENUM_VALUES = 50


class FieldSpec(_Request):
    """One value to extract after the call, e.g. ``{"name": "callback_time", "type": "string"}``."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Identifier (letters, digits, _; 1–64), the key in extracted.",
    )
    type: FieldType
    description: str = Field("", max_length=1_000, description="What the value means, for the model.")
    values: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ENUM_VALUES,
        description="enum only: the allowed values (1–50 distinct strings of 1–200 characters).",
        json_schema_extra={"uniqueItems": True},
    )

    @model_validator(mode="after")
    def _values_iff_enum(self) -> FieldSpec:
        if self.type == "enum":
            if not self.values:
                raise ValueError("an enum field needs values")
            if any(not v or len(v) > 200 for v in self.values):
                raise ValueError("enum values are strings of 1–200 characters")
            if len(set(self.values)) != len(self.values):
                raise ValueError("enum values must be distinct")
        elif self.values is not None:
            raise ValueError(f"values is for enum fields only, not {self.type}")
        return self

    def stored(self) -> dict[str, Any]:
        """The dict kept on the call record (``calls.post_call_fields``)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "description": self.description}
        if self.values is not None:
            out["values"] = list(self.values)
        return out


class AfterCallFields(_Request):
    """Mixin of the call-creating bodies: ``fields`` and ``webhookUrl``."""

    fields: list[FieldSpec] = Field(
        default_factory=list,
        max_length=MAX_FIELDS,
        description="Values to extract when the call ends (names distinct; at most 50).",
    )
    webhook_url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="Where this call's events and end-of-call report are POSTed: https:// to a "
        "public host; private, loopback and link-local targets (and http://) only when the "
        "operator allows them (GATEWAY_OUTBOUND_ALLOW). Signed (Standard Webhooks) with the "
        "tenant's call-URL secret (POST /webhook-call-secret); retried until the tenant has one.",
        json_schema_extra={"pattern": f"^{TOOL_URL.pattern}$"},
    )

    @field_validator("fields")
    @classmethod
    def _distinct_names(cls, fields: list[FieldSpec]) -> list[FieldSpec]:
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be distinct: {', '.join(dupes)}")
        return fields

    @field_validator("webhook_url")
    @classmethod
    def _url_form(cls, url: str | None, info: ValidationInfo) -> str | None:
        """:func:`webhook_target`."""
        return None if url is None else webhook_target(url, info)

    def post_call_fields(self) -> list[dict[str, Any]]:
        """``fields`` as stored on the call record."""
        return [f.stored() for f in self.fields]
