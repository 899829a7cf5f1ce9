"""``/calls``: create calls (stream URL + carrier instructions) and read their records.

Stream URLs: ``<ws base>/stream/<connectionType>/<callId>/<token>``, built by
:func:`gateway.api.urls.public_url` (the same function the stream endpoint checks Twilio's
signature against). A ``webrtc`` call gets its offer URL instead
(``<http base>/webrtc/<callId>/<token>/offer``, :func:`gateway.api.urls.offer_url`), as both
``streamUrl`` and ``offerUrl``, and the ``iceServers`` of the operator's settings. Creating a call answers 503 ``unavailable`` with ``Retry-After`` while
``Settings.max_calls`` calls are live.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from gateway.api.after_call_schemas import AfterCallFields
from gateway.api.auth import Tenant
from gateway.api.deps import Api, ApiServices
from gateway.api.errors import ApiError
from gateway.api.responses import AT_CAPACITY, AUTH, BODY, NOT_FOUND, _error, location
from gateway.api.routing import RETRY_AFTER_S, GatewayRoute
from gateway.api.schemas import (
    CallCreate,
    CallCreated,
    CallOut,
    IceServer,
    InlineCallCreate,
    Instructions,
)
from gateway.api.urls import offer_url, stream_url
from gateway.api.call_views import call_out
from gateway.store import CallConfig, CallRecord, UnknownAgent

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


def ice_servers(settings: Any) -> list[IceServer]:
    """The ``iceServers`` of a WebRTC call: ``GATEWAY_WEBRTC_STUN_URLS`` as one entry, and
    ``GATEWAY_WEBRTC_TURN_URLS`` as another with its username and credential (none set: ``[]``,
    host candidates only)."""
    servers = []
    if settings.webrtc_stun_urls:
        servers.append(IceServer(urls=list(settings.webrtc_stun_urls)))
    if settings.webrtc_turn_urls:
        servers.append(IceServer(urls=list(settings.webrtc_turn_urls), username=settings.webrtc_turn_username or None,
                                 credential=settings.webrtc_turn_credential.get_secret_value() or None))
    return servers


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
    webrtc = connection_type == "webrtc"
    if webrtc:  # the browser posts its SDP offer to this URL (gateway.webrtc.offer)
        url = offer_url(api.settings, request, call.id, token)
        instructions = None
    else:
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
        offer_url=url if webrtc else None, ice_servers=ice_servers(api.settings) if webrtc else None,
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


@router.get(
    "/calls/{callId}",
    operation_id="getCall",
    summary="Get a call: status, outcome, transcript, events",
    response_model=CallOut,
    responses={200: {"description": "The call."}, **AUTH, **NOT_FOUND},
)
async def get_call(call_id: CallId, tenant: Tenant, api: Api, request: Request) -> CallOut:
    rec = await _own_call(api, call_id, tenant)
    return await call_out(rec, api, request)


_WAV = {"audio/wav": {"schema": {"type": "string", "contentMediaType": "audio/wav"}}}


@router.get(
    "/calls/{callId}/recording",
    operation_id="getCallRecording",
    summary="Download a call's recording",
    description="Two-channel 16-bit PCM WAV: left the caller, right the agent. Served once the "
    "call's recording.status is completed: 404 while it is still recording, when recording "
    "failed, or when the call was not recorded. Honours Range (RFC 9110 byte ranges, e.g. "
    "bytes=0-1023, bytes=-4096; several give multipart/byteranges) and If-Range: a Range of "
    "another unit than bytes, or one under an If-Range that matches neither the ETag nor "
    "Last-Modified, is ignored (200, the whole file).",
    response_class=FileResponse,
    responses={
        200: {"description": "The WAV file (Accept-Ranges: bytes).", "content": _WAV},
        206: {
            "description": "The byte range asked for (Content-Range: bytes first-last/size).",
            "content": {**_WAV, "multipart/byteranges": {"schema": {"type": "string"}}},
        },
        400: _error("A bytes Range header that is not bytes=first-last[, …] (code invalid_range)."),
        **AUTH,
        **NOT_FOUND,
        416: _error(
            "No range asked for starts inside the file (code range_not_satisfiable).",
            headers={"Content-Range": {"description": "bytes */<size>", "schema": {"type": "string"}}},
        ),
    },
)
async def get_call_recording(call_id: CallId, tenant: Tenant, api: Api, request: Request) -> FileResponse:
    rec = await _own_call(api, call_id, tenant)
    path = FilePath(rec.recording_path) if rec.recording_path else None
    st = await asyncio.to_thread(_file_stat, path) if path is not None else None
    if st is None or rec.recording_state != "completed":
        raise ApiError(404, "not_found", f"call {call_id!r} has no finished recording")
    response = _Recording(path, media_type="audio/wav", filename=f"{rec.id}.wav", stat_result=st)
    if (wanted := request.headers.get("range")) is not None and response.range_applies(wanted, request.headers):
        _check_range(wanted, st.st_size)
    return response


def _file_stat(path: FilePath) -> os.stat_result | None:
    """The ``stat`` of the regular file at ``path``; ``None`` if there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class _Recording(FileResponse):
    """A :class:`FileResponse` that ignores, as RFC 9110 says, a ``Range`` it must not apply:
    one of a unit other than ``bytes`` (§14.2: "MUST ignore a Range header field that
    contains a range unit it does not understand"), or one under an ``If-Range`` matching
    neither its ETag nor its Last-Modified (§13.1.5: send the whole representation). Starlette
    answers the first with a plain-text 400; it ignores the second itself (judged the same way
    here, so the API's 400/416 pre-check is skipped exactly when Starlette skips the range)."""

    def range_applies(self, header: str, request_headers: Mapping[str, str]) -> bool:
        """Whether the ``Range`` value ``header`` is to be applied, given the request's headers."""
        if header.split("=", 1)[0].strip().lower() != "bytes":  # range units are case-insensitive
            return False
        if_range = request_headers.get("if-range")
        return if_range is None or self._should_use_range(if_range)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        wanted = headers.get("range")
        if wanted is not None and not self.range_applies(wanted, headers):
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        await super().__call__(scope, receive, send)


def _check_range(header: str, size: int) -> None:
    """Refuse, in the API's error shape, the ``Range`` headers :class:`FileResponse` would answer
    with a plain-text 400 or 416 (it serves the others: 206, multipart for several ranges).

    Raises:
        ApiError: 400 ``invalid_range`` (``bytes`` but no well-formed range, or a range that
            ends before it starts); 416 ``range_not_satisfiable`` with ``Content-Range: bytes */<size>``.
    """
    try:
        FileResponse._parse_range_header(header, size)  # Starlette's own parser: the same verdict
    except MalformedRangeHeader as exc:
        raise ApiError(400, "invalid_range", f"bad Range header: {exc.content}") from None
    except RangeNotSatisfiable:
        raise ApiError(416, "range_not_satisfiable", f"the recording has {size} bytes: no range starts inside it",
                       headers={"Content-Range": f"bytes */{size}"}) from None  # fmt: skip
