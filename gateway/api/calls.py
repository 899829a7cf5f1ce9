"""``/calls``: create calls (stream URL + carrier instructions) and read their records.

Stream URLs: ``<ws base>/stream/<connectionType>/<callId>/<token>``, built by
:func:`gateway.api.urls.public_url` (the same function the stream endpoint checks Twilio's
signature against). Creating a call answers 503 ``unavailable`` with ``Retry-After`` while
``Settings.max_calls`` calls are live.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse

from gateway.api.after_call_schemas import AfterCallFields
from gateway.api.auth import Tenant
from gateway.api.deps import Api, ApiServices
from gateway.api.errors import ApiError
from gateway.api.responses import AT_CAPACITY, AUTH, BODY, NOT_FOUND, location
from gateway.api.routing import RETRY_AFTER_S, GatewayRoute
from gateway.api.schemas import (
    CallCreate,
    CallCreated,
    CallErrorOut,
    CallOut,
    InlineCallCreate,
    Instructions,
    RecordingOut,
)
from gateway.api.urls import public_url, stream_url
from gateway.api.views import config_out, event_out, transition_out, turn_out
from gateway.store import TERMINAL_STATUSES, CallConfig, CallRecord, UnknownAgent

__all__ = ["router"]

log = logging.getLogger("gateway.api")

router = APIRouter(tags=["calls"], route_class=GatewayRoute)

CallId = Annotated[str, Path(alias="callId", description="Call id (call_…).")]
_CREATED = {201: {"description": "The call was created (status queued).", **location("/calls/{callId}")}}


async def maybe_await(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (hooks may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


def check_capacity(api: ApiServices) -> None:
    """Raises :class:`ApiError` 503 ``unavailable`` (``Retry-After``) while ``max_calls`` are live."""
    if api.live_calls is not None and api.live_calls() >= api.settings.max_calls:
        raise ApiError(
            503, "unavailable", f"the gateway is at its limit of {api.settings.max_calls} live calls",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )  # fmt: skip


async def _issue(
    request: Request, response: Response, api: ApiServices, tenant: str,
    config: CallConfig, connection_type: str, agent_id: str | None, after: AfterCallFields,
) -> CallCreated:  # fmt: skip
    """Store the call (with its post-call ``fields`` and ``webhookUrl``), build its stream URL
    and instructions, run the created hook."""
    try:
        call, token = await asyncio.to_thread(
            api.store.create_call, config, connection_type, agent_id=agent_id,
            ttl_s=api.settings.stream_token_ttl_s, tenant=tenant,
            post_call_fields=after.post_call_fields(), webhook_url=after.webhook_url,
        )  # fmt: skip
    except UnknownAgent:
        raise ApiError(404, "not_found", f"agent {agent_id!r} not found") from None
    url = stream_url(api.settings, request, connection_type, call.id, token)
    doc = api.instruction_document(connection_type, url, parameters=None)
    instructions = None if doc is None else Instructions(content_type=doc[0], body=doc[1])
    log.info("call %s created (%s, agent %s)", call.id, connection_type, agent_id or "inline")
    if api.on_call_created is not None:
        await maybe_await(api.on_call_created(call))
    response.headers["Location"] = f"/calls/{call.id}"
    return CallCreated(
        call_id=call.id, stream_url=url, stream_url_expires_at=call.stream_token_expires_at,
        connection_type=connection_type, instructions=instructions,  # type: ignore[arg-type]
    )  # fmt: skip


@router.post(
    "/calls/create",
    operation_id="createCall",
    summary="Create a call running a stored agent",
    description="Returns a one-time stream URL for the carrier and, for carriers that use one, the "
    "instruction document (TwiML …) that points the carrier at it.",
    status_code=201,
    response_model=CallCreated,
    responses={**_CREATED, **BODY, **AT_CAPACITY, **NOT_FOUND},
)
async def create_call(body: CallCreate, tenant: Tenant, api: Api, request: Request, response: Response) -> CallCreated:
    check_capacity(api)
    agent = await asyncio.to_thread(api.store.get_agent, body.agent_id, tenant=tenant)
    if agent is None:
        raise ApiError(404, "not_found", f"agent {body.agent_id!r} not found")
    return await _issue(request, response, api, tenant, agent.call_config(), body.connection_type, agent.id, body)


@router.post(
    "/calls/inline",
    operation_id="createInlineCall",
    summary="Create a call with its agent configuration inline",
    status_code=201,
    response_model=CallCreated,
    responses={**_CREATED, **BODY, **AT_CAPACITY},
)
async def create_inline_call(
    body: InlineCallCreate, tenant: Tenant, api: Api, request: Request, response: Response
) -> CallCreated:
    check_capacity(api)
    return await _issue(request, response, api, tenant, CallConfig(**body.policy()), body.connection_type, None, body)


async def _own_call(api: ApiServices, call_id: str, tenant: str) -> CallRecord:
    rec = await asyncio.to_thread(api.store.get_call, call_id)
    if rec is None or rec.tenant != tenant:
        raise ApiError(404, "not_found", f"call {call_id!r} not found")
    return rec


def _recording(api: ApiServices, request: Request, rec: CallRecord) -> RecordingOut | None:
    if rec.recording_state is None:
        return None
    done = rec.recording_state == "completed"
    return RecordingOut(
        status=rec.recording_state,  # type: ignore[arg-type]
        path=rec.recording_path,
        url=public_url(api.settings, request, f"/calls/{rec.id}/recording") if done else None,
        error=rec.recording_error,
    )


@router.get(
    "/calls/{callId}",
    operation_id="getCall",
    summary="Get a call: status, outcome, transcript, events",
    response_model=CallOut,
    responses={200: {"description": "The call."}, **AUTH, **NOT_FOUND},
)
async def get_call(call_id: CallId, tenant: Tenant, api: Api, request: Request) -> CallOut:
    rec = await _own_call(api, call_id, tenant)
    transcript = [turn_out(t) for t in rec.turns]
    events = [event_out(e) for e in rec.events]
    duration_ms, live = rec.duration_ms, False
    if api.live_view is not None and rec.status not in TERMINAL_STATUSES:
        view = await maybe_await(api.live_view(call_id))
        if view is not None:
            live = True
            transcript = [turn_out(t) for t in view.get("transcript", ())]
            events = [event_out(e) for e in view.get("events", ())]
            duration_ms = view.get("duration_ms", duration_ms)
    error = None
    if rec.error_code or rec.error_message:
        error = CallErrorOut(code=rec.error_code or "error", message=rec.error_message or "")
    return CallOut(
        id=rec.id, agent_id=rec.agent_id, status=rec.status.value,  # type: ignore[arg-type]
        live=live, direction=rec.direction, connection_type=rec.connection_type,
        created_at=rec.created_at, started_at=rec.started_at, ended_at=rec.ended_at,
        end_reason=rec.end_reason, error=error, duration_ms=duration_ms,
        from_=rec.from_number,  # type: ignore[call-arg]  # alias "from"
        to=rec.to_number, carrier_call_id=rec.carrier_call_id, carrier_account_id=rec.carrier_account_id,
        answered_at=rec.answered_at, carrier_status=rec.carrier_status, stream_id=rec.stream_id,
        transitions=[transition_out(t) for t in rec.transitions], voicemail=rec.voicemail,
        config=config_out(rec.call_config()), transcript=transcript, events=events,
        recording=_recording(api, request, rec), metrics=rec.metrics,
    )  # fmt: skip


@router.get(
    "/calls/{callId}/recording",
    operation_id="getCallRecording",
    summary="Download a call's recording",
    description="Two-channel 16-bit PCM WAV: left the caller, right the agent. Served once the "
    "call's recording.status is completed: 404 while it is still recording, when recording "
    "failed, or when the call was not recorded.",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The WAV file.",
            "content": {"audio/wav": {"schema": {"type": "string", "contentMediaType": "audio/wav"}}},
        },
        **AUTH,
        **NOT_FOUND,
    },
)
async def get_call_recording(call_id: CallId, tenant: Tenant, api: Api) -> FileResponse:
    rec = await _own_call(api, call_id, tenant)
    path = FilePath(rec.recording_path) if rec.recording_path else None
    if path is None or rec.recording_state != "completed" or not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not_found", f"call {call_id!r} has no finished recording")
    return FileResponse(path, media_type="audio/wav", filename=f"{rec.id}.wav")
