"""The REST API as a FastAPI application: one router per resource, the API's error shape.

:func:`create_api` builds the app (the gateway's :func:`gateway.app.create_app` adds the media
stream WebSocket and ``/metrics`` to it). The OpenAPI document is generated from the routes
(:func:`gateway.api.openapi.openapi_document`) and served at ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.websockets import WebSocket

from gateway.api import agents, calls, calls_list, carrier_accounts, carrier_callbacks, control, meta, outbound, webhooks
from gateway.api.deps import ApiServices, InstructionDocument, LiveCalls, LiveView, OnCallCreated, OnOutboundCall
from gateway.api.errors import exception_handlers, http_exception_handler
from gateway.api.openapi import TITLE, openapi_document
from gateway.carriers.instructions import instruction_document as default_instruction_document
from gateway.config import Settings
from gateway import playground
from gateway.store import Store

__all__ = ["create_api", "ROUTERS"]

#: Every resource's router, in the document's order.
ROUTERS = (
    meta.router, agents.router, calls_list.router, calls.router, outbound.router, control.router, carrier_accounts.router,
    carrier_callbacks.router, webhooks.router,
)


def _with_allow_header(routers: tuple[Any, ...]) -> Callable[..., Any]:
    """:func:`http_exception_handler`, with a 405's ``Allow`` naming every method of the
    resource (path template) matching the path, as Starlette does, but over all its routes:
    each of a resource's methods is a route of its own here. Of several matching templates
    the one with the fewest parameters wins (``/calls/outbound`` over ``/calls/{callId}``)."""
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]

    async def handler(request: Request | WebSocket, exc: Exception) -> Response | None:
        if isinstance(exc, HTTPException) and exc.status_code == 405 and not isinstance(request, WebSocket):
            path = request.scope["path"].removeprefix(request.scope.get("root_path", "")) or "/"
            matching = [r for r in routes if r.path_regex.match(path)]
            # the most specific resource: /calls/outbound, not /calls/{callId}
            first = min(matching, key=lambda r: len(r.param_convertors), default=None)
            methods = sorted({m for r in routes if first and r.path_format == first.path_format for m in r.methods})
            if methods:
                exc = HTTPException(405, exc.detail, headers={**(exc.headers or {}), "Allow": ", ".join(methods)})
        return await http_exception_handler(request, exc)

    return handler


def create_api(
    store: Store,
    settings: Settings,
    *,
    on_call_created: OnCallCreated | None = None,
    live_view: LiveView | None = None,
    live_calls: LiveCalls | None = None,
    instruction_document: InstructionDocument | None = None,
    on_outbound_call: OnOutboundCall | None = None,
    lifespan: Callable[[FastAPI], Any] | None = None,
) -> FastAPI:
    """The REST API app.

    Args:
        store: persistence (its tables must exist: call ``store.create_all()`` first).
        settings: see :class:`gateway.api.deps.ApiServices`.
        on_call_created, live_view, live_calls, instruction_document, on_outbound_call: hooks,
            see :class:`gateway.api.deps.ApiServices` (``live_calls`` at or above
            ``settings.max_calls``: creating a call answers 503 with ``Retry-After``; no
            ``on_outbound_call``: ``POST /calls/outbound`` answers 503).
        lifespan: the app's lifespan context manager factory.

    Returns:
        A FastAPI app serving ``/health``, ``/openapi.json``, ``/agents``, ``/calls/…``
        (``/calls/outbound`` included), ``/carrier-accounts`` and the playground page
        (``/playground``, :mod:`gateway.playground`); every error is ``{"error": {"code", "message", "fields"?}}``.
    """
    app = FastAPI(
        title=TITLE,
        openapi_url=None,  # served by gateway.api.meta, and documented there
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers={**exception_handlers, HTTPException: _with_allow_header(ROUTERS)},
    )
    app.state.api = ApiServices(
        store=store,
        settings=settings,
        on_call_created=on_call_created,
        live_view=live_view,
        live_calls=live_calls,
        instruction_document=instruction_document or default_instruction_document,
        on_outbound_call=on_outbound_call,
    )
    for router in ROUTERS:
        app.include_router(router)
    app.router.routes.extend(playground.routes())  # the browser page (not in the OpenAPI document)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
