"""Carrier callbacks of outbound calls: status callbacks and answer URLs, signature-checked.

Routes (carrier-facing: they take no API key; the carrier's signature is their authentication):

* ``POST /carriers/{kind}/status/{callId}``: Twilio's ``StatusCallback`` (form POST,
  ``X-Twilio-Signature``), Telnyx's Call Control webhooks (JSON, Ed25519
  ``telnyx-signature-ed25519`` + ``telnyx-timestamp``), Plivo's ``ring_url`` / ``hangup_url``
  (form POST, ``X-Plivo-Signature-V3``), Vonage's ``event_url`` (JSON, ``Authorization: Bearer``
  JWT signed with the signature secret). Answers 204.
* ``POST`` / ``GET /carriers/{kind}/answer/{callId}``: Plivo's ``answer_url``; answers the
  ``<Stream>`` XML with a freshly issued stream token (the one given at create is hashed, so
  the answer URL reissues it; the old one stops working).

Every request is checked with the carrier SDK's own validator
(:meth:`gateway.dialer.base.Dialer.verify_callback`) against the URL the carrier was given,
rebuilt with :func:`gateway.api.urls.public_url` (set ``GATEWAY_PUBLIC_URL`` behind a proxy),
with the credentials of the call's carrier account. A missing or bad signature, an unknown
call, a call of another carrier, or credentials that no longer resolve: **403**, and nothing
changes. A verified callback is read into the lifecycle vocabulary
(:meth:`~gateway.dialer.base.Dialer.parse_callback`) and applied idempotently
(:meth:`gateway.store.Store.apply_carrier_status`): duplicates and late, out-of-order
callbacks (carriers retry) change nothing. An unreadable verified callback is a 400.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from gateway.api.deps import Api
from gateway.api.errors import ApiError
from gateway.api.responses import _error
from gateway.api.routing import GatewayRoute
from gateway.api.urls import public_url, stream_url
from gateway.dialer.base import CallbackEvent
from gateway.dialer.service import TRANSFER_URL_KINDS
from gateway.store import TERMINAL_STATUSES, StoreError

__all__ = ["router", "MAX_CALLBACK_BYTES"]

log = logging.getLogger("gateway.api")

router = APIRouter(tags=["carrier callbacks"], route_class=GatewayRoute)

#: Carriers that fetch their instructions from the answer URL when the callee answers.
ANSWER_URL_KINDS = frozenset({"plivo"})
#: Largest callback body read (bytes); carriers send a few hundred.
MAX_CALLBACK_BYTES = 64 * 1024

Kind = Annotated[str, Path(description="Carrier kind: twilio, telnyx, plivo, vonage.")]
CallId = Annotated[str, Path(alias="callId")]


async def _body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            raise ApiError(413, "payload_too_large", f"callback body over {MAX_CALLBACK_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "missing or invalid carrier signature")


async def _signed(api: Api, request: Request, kind: str, call_id: str) -> tuple[object, str, bytes]:
    """The request's target, the URL it was signed for and its body, once its signature is
    checked; else 403."""
    if api.outbound is None:
        raise _forbidden()
    body = await _body(request)
    target = await api.outbound.callback_target(kind, call_id)
    if target is None:
        raise _forbidden()
    query = request.url.query
    url = public_url(api.settings, request, request.url.path + (f"?{query}" if query else ""))
    if not target.dialer.verify_callback(request.method, url, dict(request.headers), body, target.creds):
        log.warning("call %s: %s callback with a bad signature refused", call_id, kind)
        raise _forbidden()
    return target, url, body


async def _verified(api: Api, request: Request, kind: str, call_id: str) -> tuple[object, CallbackEvent]:
    """The callback's target and its event, once its signature is checked; else 403 / 400."""
    target, url, body = await _signed(api, request, kind, call_id)
    headers = dict(request.headers)
    try:
        event = target.dialer.parse_callback(request.method, url, headers, body)
    except ValueError as exc:
        raise ApiError(400, "invalid_callback", f"unreadable {kind} callback: {exc}"[:300]) from None
    return target, event


#: Carriers whose signature covers the URL (so the call id in the path is signed too). Telnyx
#: and Vonage sign only the body: their callbacks are tied to the call by their content.
URL_SIGNED = frozenset({"twilio", "plivo"})
#: Statuses that say the carrier's call is still up.
_ALIVE = frozenset({"initiated", "ringing", "in_progress"})
_FINAL = frozenset(str(s) for s in TERMINAL_STATUSES)


async def _bound(api: Api, target: object, event: CallbackEvent) -> bool:
    """Whether a verified callback is about the call its URL names: always for URL-signed
    carriers; otherwise its carrier id must be the call's (waiting for a placement in flight),
    or, for Telnyx, its signed ``client_state`` must name the call."""
    call = target.call  # type: ignore[attr-defined]
    if call.connection_type in URL_SIGNED or event.detail.get("gatewayCallId") == call.id:
        return True
    carrier_id = await api.outbound.placed_id(call, api.settings.dialer_timeout_s + 1.0)
    return bool(carrier_id) and event.carrier_call_id == carrier_id


async def _apply(api: Api, target: object, event: CallbackEvent) -> str:
    """Apply a verified event to the call's lifecycle; returns what happened.

    ``unbound``: not this call's (a replay of another call's signed body, or another leg of
    this one: a Vonage websocket leg has its own uuid); nothing changes. A carrier saying the
    call is still up when the record has ended has it hung up (a placement that timed out but
    went through). A terminal word while a stream serves the call ends the session (the
    carrier hung up). ``completed`` for a call no stream ever claimed is ``failed`` /
    ``no_stream`` (the carrier connected it, the gateway never got its media).
    """
    call = target.call  # type: ignore[attr-defined]
    if event.status is None:
        return "ignored"
    if not await _bound(api, target, event):
        return "unbound"
    status, detail = event.status, {str(k): str(v) for k, v in event.detail.items()}
    if status == "completed" and call.started_at is None and call.status not in TERMINAL_STATUSES:
        status, detail = "failed", {**detail, "errorCode": "no_stream",
                                    "errorMessage": "the carrier connected the call but no media stream came"}
    at = datetime.fromtimestamp(event.at, timezone.utc) if event.at is not None else None
    try:
        result = await asyncio.to_thread(
            api.store.apply_carrier_status, call.id, status, raw_status=event.raw_status, at=at, detail=detail,
        )  # fmt: skip
    except (StoreError, ValueError) as exc:
        log.warning("call %s: %s callback %s not applied: %s", call.id, call.connection_type, event.raw_status, exc)
        return "refused"
    carrier_ended = call.carrier_status is not None or any(
        t["source"] == "carrier" and t["to"] in _FINAL for t in call.transitions)
    if status in _ALIVE and call.status in TERMINAL_STATUSES and not carrier_ended:
        await api.outbound.hang_up(call, carrier_call_id=event.carrier_call_id)
        return "hung_up"
    session = api.live_session(call.id) if api.live_session is not None else None
    if result == "noted" and session is not None and status not in _ALIVE:
        session.control.hang_up("carrier_stop")  # the carrier ended it: no hang-up goes back
    return result


_REFUSED = {
    400: _error("A verified callback that cannot be read (code invalid_callback)."),
    403: _error("Missing or invalid carrier signature, an unknown call, or a call of another carrier "
                "(code forbidden); nothing changes."),
    413: _error(f"Body over {MAX_CALLBACK_BYTES // 1024} KiB (code payload_too_large)."),
}


@router.post(
    "/carriers/{kind}/status/{callId}",
    operation_id="carrierStatusCallback",
    summary="A carrier's call-progress callback (signed by the carrier; no API key)",
    description="Twilio StatusCallback, Telnyx Call Control webhook, Plivo ring/hangup URL, Vonage "
    "event URL, each checked with the carrier SDK's signature validator against the call's carrier "
    "account. Applied idempotently to the call's lifecycle.",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Verified (and applied, or a duplicate / late callback)."}, **_REFUSED},
)
async def carrier_status(kind: Kind, call_id: CallId, request: Request, api: Api) -> Response:
    target, event = await _verified(api, request, kind, call_id)
    outcome = await _apply(api, target, event)
    log.info("call %s: %s callback %s (%s): %s", call_id, kind, event.raw_status, event.status, outcome)
    return Response(status_code=204)


_ANSWER = dict(
    summary="A carrier's answer URL (Plivo): the <Stream> XML for the answered call",
    description="Signed by the carrier (no API key). Answers the stream document with a freshly "
    "issued stream token.",
    response_class=Response,
    responses={
        200: {"description": "The carrier's instruction document.",
              "content": {"application/xml": {"schema": {"type": "string"}}}},
        **_REFUSED,
        404: _error("The carrier takes no answer document (code not_found)."),
        409: _error("The call has already started or ended (code not_connectable)."),
    },
)


@router.post("/carriers/{kind}/answer/{callId}", operation_id="carrierAnswerUrl", **_ANSWER)
@router.get("/carriers/{kind}/answer/{callId}", operation_id="carrierAnswerUrlGet", **_ANSWER)
async def carrier_answer(kind: Kind, call_id: CallId, request: Request, api: Api) -> Response:
    if kind not in ANSWER_URL_KINDS:  # others get their instructions at dial: nothing to hand out
        raise ApiError(404, "not_found", f"{kind} calls have no answer URL")
    target, event = await _verified(api, request, kind, call_id)
    await _apply(api, target, event)
    ttl_s = api.settings.stream_token_ttl_s
    try:
        token = await asyncio.to_thread(api.store.reissue_stream_token, call_id, ttl_s)
    except StoreError as exc:
        log.warning("call %s: answer URL fetched for a call that cannot stream: %s", call_id, exc)
        raise ApiError(409, "not_connectable", "the call has already started or ended") from None
    url = stream_url(api.settings, request, kind, call_id, token)
    doc = api.instruction_document(kind, url, parameters=None)  # the call id is in the URL
    if doc is None:
        raise ApiError(404, "not_found", f"{kind} calls have no answer document")
    return Response(doc[1], media_type=doc[0])


@router.post(
    "/carriers/{kind}/transfer/{callId}",
    operation_id="carrierTransferUrl",
    summary="A carrier's transfer URL (Plivo aleg_url): the <Dial> XML of a transfer",
    description="Signed by the carrier (no API key): fetched when POST /calls/{callId}/control "
    "transfers a call; dials `to` with the call's own number as caller ID.",
    response_class=Response,
    responses={
        200: {"description": "The <Dial> document.", "content": {"application/xml": {"schema": {"type": "string"}}}},
        403: _REFUSED[403],
        413: _REFUSED[413],
        404: _error("The carrier takes no transfer document (code not_found)."),
        422: _error("`to` is not an E.164 number (code validation_error)."),
    },
)
async def carrier_transfer(
    kind: Kind, call_id: CallId, request: Request, api: Api,
    to: Annotated[str, Query(pattern=r"^\+[1-9][0-9]{6,14}$", description="The new party, E.164.")],
) -> Response:  # fmt: skip
    if kind not in TRANSFER_URL_KINDS:  # the others are told where to go in the transfer request
        raise ApiError(404, "not_found", f"{kind} calls have no transfer URL")
    target, _url, _body = await _signed(api, request, kind, call_id)
    from gateway.dialer.plivo import dial_xml  # the SDK is imported when first used

    call = target.call  # type: ignore[attr-defined]
    log.info("call %s: %s fetched its transfer instructions", call_id, kind)
    return Response(dial_xml(to, call.from_number), media_type="application/xml")
