"""Request and response bodies of ``/webhook-endpoints`` and ``/webhook-call-secret`` (camelCase).

An endpoint's ``url`` passes the outbound policy's static check at creation (``https://`` to a
public host; private, loopback and link-local targets, and ``http://``, only when
``GATEWAY_OUTBOUND_ALLOW`` names them); the addresses its host resolves to are checked again
at every delivery. Secrets (``whsec_…``) appear only in the creation responses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from gateway.api.after_call_schemas import webhook_target
from gateway.api.schemas import TOOL_URL, _Request, _Response
from gateway.store.webhook_endpoints import WebhookEndpointRecord

__all__ = [
    "EventType", "WebhookEndpointCreate", "WebhookEndpointOut", "WebhookEndpointCreated", "WebhookEndpointList",
    "WebhookCallSecretOut",
]  # fmt: skip

EventType = Literal["call.queued", "call.ringing", "call.answered", "call.voicemail", "call.ended", "call.report"]

_SECRET = "The Standard Webhooks signing secret (whsec_ + base64 of 32 bytes). Shown this once: store it."


class WebhookEndpointCreate(_Request):
    """``POST /webhook-endpoints``: where the tenant's call events go, and which."""

    url: str = Field(
        min_length=1, max_length=2048, json_schema_extra={"pattern": f"^{TOOL_URL.pattern}$"},
        description="Where events are POSTed: https:// to a public host; private, loopback and link-local "
        "targets (and http://) only when the operator allows them (GATEWAY_OUTBOUND_ALLOW).",
    )  # fmt: skip
    events: list[EventType] | None = Field(
        None, min_length=1, max_length=6,
        description="The event types to receive (distinct); omitted or null: every type.",
    )  # fmt: skip

    @field_validator("url")
    @classmethod
    def _url_form(cls, url: str, info: ValidationInfo) -> str:
        """:func:`~gateway.api.after_call_schemas.webhook_target`."""
        return webhook_target(url, info)

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[str] | None) -> list[str] | None:
        if events is not None and len(set(events)) != len(events):
            raise ValueError("event types must be distinct")
        return events


class WebhookEndpointOut(_Response):
    """A webhook endpoint (never its secret)."""

    id: str = Field(description="Endpoint id (whe_…).")
    url: str
    events: list[EventType] | None = Field(description="The event types it receives; null: every type.")
    created_at: datetime
    disabled: bool = Field(description="It answered 410 Gone: nothing more is sent to it.")
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    @classmethod
    def of(cls, rec: WebhookEndpointRecord) -> WebhookEndpointOut:
        """The API form of a stored endpoint."""
        return cls(
            id=rec.id, url=rec.url or "", events=list(rec.events) if rec.events is not None else None,  # type: ignore[arg-type]
            created_at=rec.created_at, disabled=rec.disabled_at is not None, disabled_at=rec.disabled_at,
            disabled_reason=rec.disabled_reason,
        )  # fmt: skip


class WebhookEndpointCreated(WebhookEndpointOut):
    """``POST /webhook-endpoints``'s answer: the endpoint and its secret, shown this once."""

    secret: str = Field(description=_SECRET, pattern=r"^whsec_[A-Za-z0-9+/=]+$")


class WebhookEndpointList(_Response):
    """``GET /webhook-endpoints``: the tenant's endpoints, oldest first (disabled ones too)."""

    data: list[WebhookEndpointOut]


class WebhookCallSecretOut(_Response):
    """``POST /webhook-call-secret``'s answer: the secret signing every delivery to the
    tenant's calls' own ``webhookUrl``, shown this once."""

    secret: str = Field(description=_SECRET, pattern=r"^whsec_[A-Za-z0-9+/=]+$")
    created_at: datetime
