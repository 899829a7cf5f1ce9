"""What the API's routes need from the gateway, as FastAPI dependencies.

:func:`gateway.api.factory.create_api` puts one :class:`ApiServices` on ``app.state.api``;
routes take it as a parameter typed :data:`Api`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from gateway.api.context import RequestScope
from gateway.carriers.instructions import instruction_document as default_instruction_document
from gateway.config import Settings
from gateway.store import CallRecord, Store
from gateway.tenants import DEFAULT_TENANT

__all__ = [
    "ApiServices",
    "Api",
    "api_services",
    "InstructionDocument",
    "LiveView",
    "OnCallCreated",
    "OnOutboundCall",
    "LiveCalls",
]

#: ``instruction_document(carrier, stream_url, *, parameters=None)`` →
#: ``(content_type, body)`` or ``None`` (see ``gateway.carriers.instructions``).
InstructionDocument = Callable[..., "tuple[str, str] | None"]
#: ``live_view(call_id)`` → ``None`` (not live here) or a dict with optional keys
#: ``transcript`` (turn dicts: role, text, at_ms, interrupted, heard_ms), ``events``
#: (kind, at_ms, data) and ``duration_ms``. May be sync or async.
LiveView = Callable[[str], "Mapping[str, Any] | None | Awaitable[Mapping[str, Any] | None]"]
#: Called with each created call's record; may be sync or async.
OnCallCreated = Callable[[CallRecord], "None | Awaitable[None]"]
#: ``on_outbound_call(call, token, request)``: place a stored outbound call (``call.status``
#: queued; ``token`` its plaintext stream token; ``request`` the API request, for public URLs).
#: Must return at once (the carrier is called in the background).
OnOutboundCall = Callable[[CallRecord, str, Request], Awaitable[None]]
#: ``live_calls()`` → how many calls this process serves now (compared with ``max_calls``).
LiveCalls = Callable[[], int]


@dataclass
class ApiServices:
    """The store, settings and hooks the routes use.

    Attributes:
        store: persistence (its tables must exist: ``store.create_all()``).
        settings: uses ``public_url`` (stream URL base), ``stream_token_ttl_s``,
            ``max_calls``, and the tenant grants / outbound policy / model endpoints
            request validation checks against.
        on_call_created: called with each new call's record after it is stored.
        live_view: overlays the running call's transcript and events on ``GET /calls/{id}``.
        live_calls: how many calls are live (``None``: no limit here).
        instruction_document: carrier instruction builder (default
            :func:`gateway.carriers.instructions.instruction_document`).
        on_outbound_call: places each call ``POST /calls/outbound`` stored
            (:data:`OnOutboundCall`); ``None``: that route answers 503 ``unavailable``.
    """

    store: Store
    settings: Settings
    on_call_created: OnCallCreated | None = None
    live_view: LiveView | None = None
    live_calls: LiveCalls | None = None
    instruction_document: InstructionDocument = default_instruction_document
    on_outbound_call: OnOutboundCall | None = None
    #: The outbound-call service (:class:`gateway.dialer.service.OutboundService`): the carrier
    #: callback routes verify and apply callbacks through it. ``None``: no outbound calls.
    outbound: Any = None
    #: ``live_session(call_id)`` → the running :class:`gateway.session.CallSession` of a call
    #: served by this process, or ``None`` (``POST /calls/{id}/control`` acts through it).
    live_session: Callable[[str], Any] | None = None
    base_scope: RequestScope = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_scope = RequestScope.from_settings(self.settings, DEFAULT_TENANT)

    def scope(self, tenant: str) -> RequestScope:
        """The validation scope of a request by a key of ``tenant``."""
        return dataclasses.replace(self.base_scope, tenant=tenant)


def api_services(request: Request) -> ApiServices:
    """Dependency: the app's :class:`ApiServices`."""
    return request.app.state.api


#: A route parameter typed ``Api`` receives the app's :class:`ApiServices`.
Api = Annotated[ApiServices, Depends(api_services)]
