"""The REST API's routes: agents, calls (stream URL + carrier instructions), call records.

:func:`build_api` returns Starlette routes to put in the app's route list (no prefix).
Handlers run store methods in worker threads (``asyncio.to_thread``).

Stream URLs: ``<ws base>/stream/<connectionType>/<callId>/<token>``, built by
:func:`gateway.api.urls.public_url` (the same function the stream endpoint checks Twilio's
signature against).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api.auth import request_tenant, requires_api_key
from gateway.api.context import RequestScope
from gateway.api.errors import ApiError, validation_error_response
from gateway.api.openapi import build_openapi
from gateway.api.schemas import (
    AgentCreate,
    AgentOut,
    CallConfigOut,
    CallCreate,
    CallCreated,
    CallErrorOut,
    CallOut,
    EventOut,
    InlineCallCreate,
    Instructions,
    RecordingOut,
    STORE_NAMES,
    TurnOut,
)
from gateway.api.urls import public_url, stream_path
from gateway.carriers.instructions import instruction_document as default_instruction_document
from gateway.config import Settings
from gateway.store import (
    TERMINAL_STATUSES,
    AgentRecord,
    CallConfig,
    CallRecord,
    Store,
    UnknownAgent,
)
from gateway.tenants import DEFAULT_TENANT

__all__ = [
    "build_api",
    "InstructionDocument",
    "LiveView",
    "OnCallCreated",
    "LiveCalls",
    "RETRY_AFTER_S",
    "MAX_BODY_BYTES",
]

log = logging.getLogger("gateway.api")

#: Largest request body accepted (bytes); larger answers 413.
MAX_BODY_BYTES = 1024 * 1024
#: ``Retry-After`` (s) of the 503 answered while ``Settings.max_calls`` calls are live.
RETRY_AFTER_S = 5

#: ``instruction_document(carrier, stream_url, *, parameters=None)`` →
#: ``(content_type, body)`` or ``None`` (see ``gateway.carriers.instructions``).
InstructionDocument = Callable[..., "tuple[str, str] | None"]
#: ``live_view(call_id)`` → ``None`` (not live here) or a dict with optional keys
#: ``transcript`` (turn dicts: role, text, at_ms, interrupted, heard_ms), ``events``
#: (kind, at_ms, data) and ``duration_ms``. May be sync or async.
LiveView = Callable[[str], "Mapping[str, Any] | None | Awaitable[Mapping[str, Any] | None]"]
#: Called with each created call's record; may be sync or async.
OnCallCreated = Callable[[CallRecord], "None | Awaitable[None]"]
#: ``live_calls()`` → how many calls this process serves now (compared with ``max_calls``).
LiveCalls = Callable[[], int]

M = TypeVar("M", bound=BaseModel)


# -- helpers ---------------------------------------------------------------------------------------


def _require_json(request: Request) -> None:
    """415 unless ``Content-Type`` is ``application/json`` (any case; ``charset`` UTF-8 only)."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8", "utf8"):
        raise ApiError(
            415, "unsupported_media_type", "the request body must be JSON: Content-Type: application/json"
        )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, model: type[M], scope: RequestScope | None = None) -> M:
    _require_json(request)
    raw = await _read_body(request)
    try:
        return model.model_validate_json(raw, context=scope.context() if scope else None)
    except ValidationError as exc:
        raise _ValidationFailed(exc) from None


class _ValidationFailed(Exception):
    def __init__(self, exc: ValidationError) -> None:
        super().__init__(str(exc))
        self.exc = exc


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _json(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        model.model_dump(mode="json", by_alias=True), status_code=status, headers=dict(headers or {})
    )


#: Store field name → API field name (the inverse of :data:`STORE_NAMES`).
_API_NAMES = {store: api for api, store in STORE_NAMES.items()}


def _config_fields(src: CallConfig | AgentRecord) -> dict[str, Any]:
    """Every :class:`CallConfig` field of ``src`` under its API name, containers as JSON."""
    out = {_API_NAMES.get(f.name, f.name): getattr(src, f.name) for f in fields(CallConfig)}
    out["tools"] = [dict(t) for t in src.tools]
    out["secret_refs"] = dict(src.secret_refs)
    return out


def _agent_out(rec: AgentRecord) -> AgentOut:
    return AgentOut(id=rec.id, name=rec.name, created_at=rec.created_at, **_config_fields(rec))


def _config_out(cfg: CallConfig) -> CallConfigOut:
    return CallConfigOut(**_config_fields(cfg))


def _turn_out(t: Mapping[str, Any]) -> TurnOut:
    return TurnOut(
        role=t["role"],
        text=str(t.get("text", "")),
        at_ms=int(t.get("at_ms", 0)),
        interrupted=bool(t.get("interrupted", False)),
        heard_ms=t.get("heard_ms"),
    )


def _event_out(e: Mapping[str, Any]) -> EventOut:
    return EventOut(kind=str(e["kind"]), at_ms=int(e.get("at_ms", 0)), data=dict(e.get("data") or {}))


# -- the API ---------------------------------------------------------------------------------------


def build_api(
    store: Store,
    settings: Settings,
    *,
    on_call_created: OnCallCreated | None = None,
    live_view: LiveView | None = None,
    live_calls: LiveCalls | None = None,
    instruction_document: InstructionDocument | None = None,
) -> list[BaseRoute]:
    """The REST API's routes, to include in the app's routes (no prefix).

    Args:
        store: persistence (its tables must exist: call ``store.create_all()`` first).
        settings: uses ``public_url`` (stream URL base), ``stream_token_ttl_s`` and
            ``max_calls``.
        on_call_created: called with each new call's record after it is stored.
        live_view: overlays the running call's transcript and events on ``GET /calls/{id}``
            for calls that are not final yet.
        live_calls: how many calls are live; while it is ``settings.max_calls`` or more,
            creating a call answers 503 ``unavailable`` with ``Retry-After``
            (:data:`RETRY_AFTER_S`). ``None``: no limit here.
        instruction_document: carrier instruction builder; default
            :func:`gateway.carriers.instructions.instruction_document`.

    Returns:
        Routes for ``/health``, ``/openapi.json``, ``/agents``, ``/agents/{agent_id}``,
        ``/calls/create``, ``/calls/inline``, ``/calls/{call_id}``,
        ``/calls/{call_id}/recording``. Pair with
        :data:`gateway.api.errors.exception_handlers` for JSON 404/405 on unknown paths.
    """
    guard = requires_api_key(store.authenticate_api_key)
    base_scope = RequestScope.from_settings(settings, DEFAULT_TENANT)

    def scope(request: Request) -> RequestScope:
        """The validation scope of a request: its key's tenant, the operator's policies."""
        return dataclasses.replace(base_scope, tenant=request_tenant(request))
    openapi_doc = build_openapi()
    make_document: InstructionDocument = instruction_document or default_instruction_document

    def check_capacity() -> None:
        if live_calls is not None and live_calls() >= settings.max_calls:
            raise ApiError(
                503, "unavailable", f"the gateway is at its limit of {settings.max_calls} live calls",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip

    def handles_errors(endpoint: Callable[[Request], Awaitable[Response]]):  # type: ignore[no-untyped-def]
        async def wrapped(request: Request) -> Response:
            try:
                return await endpoint(request)
            except ApiError as exc:
                return exc.response()
            except _ValidationFailed as exc:
                return validation_error_response(exc.exc)

        wrapped.__name__ = endpoint.__name__
        wrapped.__doc__ = endpoint.__doc__
        return guard(wrapped)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_doc)

    async def create_agent(request: Request) -> Response:
        body = await _parse(request, AgentCreate, scope(request))
        rec = await asyncio.to_thread(
            store.create_agent, name=body.name, tenant=request_tenant(request), **body.policy()
        )
        log.info("agent %s created", rec.id)
        return _json(_agent_out(rec), 201, {"Location": f"/agents/{rec.id}"})

    async def get_agent(request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        rec = await asyncio.to_thread(store.get_agent, agent_id, tenant=request_tenant(request))
        if rec is None:
            raise ApiError(404, "not_found", f"agent {agent_id!r} not found")
        return _json(_agent_out(rec))

    async def _issue(
        request: Request, config: CallConfig, connection_type: str, agent_id: str | None
    ) -> Response:
        try:
            call, token = await asyncio.to_thread(
                store.create_call,
                config,
                connection_type,
                agent_id=agent_id,
                ttl_s=settings.stream_token_ttl_s,
                tenant=request_tenant(request),
            )
        except UnknownAgent:
            raise ApiError(404, "not_found", f"agent {agent_id!r} not found") from None
        url = public_url(settings, request, stream_path(connection_type, call.id, token), websocket=True)
        instructions = None
        doc = make_document(connection_type, url, parameters=None)
        if doc is not None:
            instructions = Instructions(content_type=doc[0], body=doc[1])
        log.info("call %s created (%s, agent %s)", call.id, connection_type, agent_id or "inline")
        if on_call_created is not None:
            await _maybe_await(on_call_created(call))
        out = CallCreated(
            call_id=call.id,
            stream_url=url,
            stream_url_expires_at=call.stream_token_expires_at,
            connection_type=connection_type,  # type: ignore[arg-type]
            instructions=instructions,
        )
        return _json(out, 201, {"Location": f"/calls/{call.id}"})

    async def create_call(request: Request) -> Response:
        check_capacity()
        body = await _parse(request, CallCreate)
        agent = await asyncio.to_thread(store.get_agent, body.agent_id, tenant=request_tenant(request))
        if agent is None:
            raise ApiError(404, "not_found", f"agent {body.agent_id!r} not found")
        return await _issue(request, agent.call_config(), body.connection_type, agent.id)

    async def create_inline_call(request: Request) -> Response:
        check_capacity()
        body = await _parse(request, InlineCallCreate, scope(request))
        return await _issue(request, CallConfig(**body.policy()), body.connection_type, None)

    async def get_call(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        rec = await asyncio.to_thread(store.get_call, call_id)
        if rec is None or rec.tenant != request_tenant(request):
            raise ApiError(404, "not_found", f"call {call_id!r} not found")
        transcript = [
            TurnOut(role=t.role, text=t.text, at_ms=t.at_ms, interrupted=t.interrupted,
                    heard_ms=t.heard_ms)  # fmt: skip
            for t in rec.turns
        ]
        events = [EventOut(kind=e.kind, at_ms=e.at_ms, data=e.data) for e in rec.events]
        duration_ms = rec.duration_ms
        live = False
        if live_view is not None and rec.status not in TERMINAL_STATUSES:
            view = await _maybe_await(live_view(call_id))
            if view is not None:
                live = True
                transcript = [_turn_out(t) for t in view.get("transcript", ())]
                events = [_event_out(e) for e in view.get("events", ())]
                duration_ms = view.get("duration_ms", duration_ms)
        recording = None
        if rec.recording_state is not None:
            done = rec.recording_state == "completed"
            recording = RecordingOut(
                status=rec.recording_state,  # type: ignore[arg-type]
                path=rec.recording_path,
                url=public_url(settings, request, f"/calls/{rec.id}/recording") if done else None,
                error=rec.recording_error,
            )
        error = None
        if rec.error_code or rec.error_message:
            error = CallErrorOut(code=rec.error_code or "error", message=rec.error_message or "")
        out = CallOut(
            id=rec.id,
            agent_id=rec.agent_id,
            status=rec.status.value,  # type: ignore[arg-type]
            live=live,
            direction=rec.direction,
            connection_type=rec.connection_type,
            created_at=rec.created_at,
            started_at=rec.started_at,
            ended_at=rec.ended_at,
            end_reason=rec.end_reason,
            error=error,
            duration_ms=duration_ms,
            from_=rec.from_number,  # type: ignore[call-arg]  # alias "from"
            to=rec.to_number,
            carrier_call_id=rec.carrier_call_id,
            stream_id=rec.stream_id,
            config=_config_out(rec.call_config()),
            transcript=transcript,
            events=events,
            recording=recording,
            metrics=rec.metrics,
        )
        return _json(out)

    async def get_recording(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        rec = await asyncio.to_thread(store.get_call, call_id)
        if rec is None or rec.tenant != request_tenant(request):
            raise ApiError(404, "not_found", f"call {call_id!r} not found")
        path = Path(rec.recording_path) if rec.recording_path else None
        if path is None or rec.recording_state != "completed" or not await asyncio.to_thread(path.is_file):
            raise ApiError(404, "not_found", f"call {call_id!r} has no finished recording")
        return FileResponse(path, media_type="audio/wav", filename=f"{rec.id}.wav")

    return [
        Route("/health", health, methods=["GET"], name="health"),
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/agents", handles_errors(create_agent), methods=["POST"], name="create_agent"),
        Route("/agents/{agent_id}", handles_errors(get_agent), methods=["GET"], name="get_agent"),
        Route("/calls/create", handles_errors(create_call), methods=["POST"], name="create_call"),
        Route(
            "/calls/inline",
            handles_errors(create_inline_call),
            methods=["POST"],
            name="create_inline_call",
        ),
        Route("/calls/{call_id}", handles_errors(get_call), methods=["GET"], name="get_call"),
        Route(
            "/calls/{call_id}/recording",
            handles_errors(get_recording),
            methods=["GET"],
            name="get_call_recording",
        ),
    ]

