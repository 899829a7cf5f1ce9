"""``POST /calls/{callId}/control``: steer a call while it runs (hang up, send DTMF, say a line,
mute or unmute the agent, transfer).

* ``{"action": "hangup"}``: a call streaming on this gateway ends at its next policy tick
  (≤ 250 ms; reason ``api_hangup``, status ``completed``), and a call placed through a carrier
  account is then hung up through the carrier's REST API. An outbound call still ringing (no
  stream yet) is hung up through the carrier at once; its callbacks then end it ``canceled``.
* ``{"action": "send_dtmf", "digits": "1234#"}`` (``0-9 * # A-D``, 1–32): through the carrier's
  REST API where it has one (Telnyx ``send_dtmf``, Plivo ``DTMF``, Vonage ``dtmf``), otherwise
  as the stream protocol's own DTMF message where it has one (Plivo ``sendDTMF``), otherwise
  as in-band ITU-T Q.23 tones on the call's media stream (Twilio's Media Streams have no DTMF
  message toward the callee). The answer says which: ``via`` ``carrier``, ``stream`` or
  ``in_band``.

* ``{"action": "say", "text": "…"}`` (1–2,000 characters): the model says the line now
  (:meth:`~gateway.session.control.ControlPolicy.say`).
* ``{"action": "mute"}`` / ``{"action": "unmute"}``: the agent's audio stops at once and is
  dropped until unmuted (the model still hears the caller); see
  :meth:`~gateway.session.control.ControlPolicy.mute_agent`.
* ``{"action": "transfer", "to": "+14155550123"}``: an outbound call placed through a carrier
  account leaves the gateway for ``to`` through the carrier's REST API (Twilio ``<Dial>`` TwiML
  update, Telnyx ``transfer``, Plivo ``transfer`` with an ``aleg_url`` serving ``<Dial>``, Vonage
  ``transfer`` to a ``connect`` NCCO; :meth:`gateway.dialer.service.OutboundService.transfer`),
  the new party seeing the call's own number. The session then ends (reason ``transferred``,
  unless the carrier ended the stream first: ``carrier_stop`` / ``carrier_closed``) and the
  carrier's call is not hung up (the transfer is on record, ``transfer {to, at}``, before the
  carrier is asked). Other calls (created with ``/calls/create`` or ``/calls/inline``: the
  gateway holds no carrier credentials for them) answer 409 ``not_transferable``.

A call that is not live here (ended, never streamed, served by another node) answers 409
``not_live``; a DTMF request to a call that already has
:data:`~gateway.session.control.MAX_PENDING` (32) requests waiting (e.g. its stream has not
started yet), or tones asked for reaching :data:`~gateway.session.control.MAX_DTMF_BACKLOG_S`
(60 s) ahead, answers 429 ``too_many_requests``
(:class:`~gateway.session.control.ControlBusy`). A hang-up is always taken.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import Field

from gateway.api.auth import Tenant
from gateway.api.deps import Api, ApiServices
from gateway.api.errors import ApiError, register_union_tags
from gateway.api.responses import BODY, NOT_FOUND, _error
from gateway.api.routing import GatewayRoute
from gateway.api.schemas import _Request, _Response
from gateway.carriers.events import StreamDtmf
from gateway.dialer.base import CarrierError, NotSupported
from gateway.dialer.service import TRANSFERRED
from gateway.session.control import ControlBusy
from gateway.store import TERMINAL_STATUSES, CallRecord

__all__ = [
    "router", "ControlRequest", "HangUpRequest", "SendDtmfRequest", "SayRequest", "MuteRequest", "UnmuteRequest",
    "TransferRequest", "ControlOut",
]  # fmt: skip

router = APIRouter(tags=["calls"], route_class=GatewayRoute)

CallId = Annotated[str, Path(alias="callId", description="Call id (call_…).")]


class HangUpRequest(_Request):
    """``{"action": "hangup"}``."""

    action: Literal["hangup"]


class SendDtmfRequest(_Request):
    """``{"action": "send_dtmf", "digits": "1234#"}``."""

    action: Literal["send_dtmf"]
    digits: str = Field(pattern=r"^[0-9*#A-D]{1,32}$", description="1–32 of 0-9 * # A-D.")


class SayRequest(_Request):
    """``{"action": "say", "text": "One moment, please."}``."""

    action: Literal["say"]
    text: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="What the agent says, 1–2,000 characters.")


class MuteRequest(_Request):
    """``{"action": "mute"}``: the agent stops being heard."""

    action: Literal["mute"]


class UnmuteRequest(_Request):
    """``{"action": "unmute"}``: the agent is heard again."""

    action: Literal["unmute"]


class TransferRequest(_Request):
    """``{"action": "transfer", "to": "+14155550123"}``."""

    action: Literal["transfer"]
    to: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="The new party, E.164.")


#: Body of ``POST /calls/{callId}/control``: one of the actions, told apart by ``action``.
ControlRequest = Annotated[
    HangUpRequest | SendDtmfRequest | SayRequest | MuteRequest | UnmuteRequest | TransferRequest,
    Field(discriminator="action"),
]
register_union_tags("hangup", "send_dtmf", "say", "mute", "unmute", "transfer")  # "digits", not "send_dtmf.digits"


class ControlOut(_Response):
    """What was done."""

    call_id: str
    action: Literal["hangup", "send_dtmf", "say", "mute", "unmute", "transfer"]
    via: Literal["session", "carrier", "stream", "in_band"] = Field(
        description="session: the running call acts on it (a hang-up: it ends, then the carrier "
        "hangs up); carrier: the carrier's REST API (transfer: the call then ends here); stream: the media stream's DTMF message (Plivo "
        "sendDTMF); in_band: Q.23 tones on the media stream."
    )


async def _own(api: ApiServices, call_id: str, tenant: str) -> CallRecord:
    rec = await asyncio.to_thread(api.store.get_call, call_id)
    if rec is None or rec.tenant != tenant:
        raise ApiError(404, "not_found", f"call {call_id!r} not found")
    return rec


def _not_live(call_id: str) -> ApiError:
    return ApiError(409, "not_live", f"call {call_id!r} is not live on this gateway")


def _carrier_error(exc: CarrierError) -> ApiError:
    return ApiError(502, "carrier_error", f"the carrier refused: {exc.code}: {exc.message}"[:300])


async def _hang_up(api: ApiServices, rec: CallRecord, session: object | None) -> str:
    if session is not None:
        session.control.hang_up("api_hangup")  # type: ignore[attr-defined]
        return "session"
    outbound = rec.direction == "outbound" and api.outbound is not None
    if not outbound or rec.status in TERMINAL_STATUSES:
        raise _not_live(rec.id)
    if not rec.carrier_call_id:  # still being placed here: hung up once the carrier answers with its id
        if api.outbound.request_cancel(rec.id):
            return "carrier"
        raise _not_live(rec.id)
    result = await api.outbound.hang_up(rec)
    if not result.get("ok"):
        raise ApiError(502, "carrier_error", f"the carrier refused: {result.get('code')}: {result.get('message')}")
    return "carrier"


async def _send_dtmf(api: ApiServices, rec: CallRecord, session: object | None, digits: str) -> str:
    if session is None:
        raise _not_live(rec.id)
    via = "in_band"
    if api.outbound is not None and rec.direction == "outbound":
        try:
            via = await api.outbound.send_dtmf(rec, digits)
        except CarrierError as exc:
            raise _carrier_error(exc) from None
    if via == "in_band":
        try:
            session.control.play_dtmf(digits)  # type: ignore[attr-defined]
        except ControlBusy as exc:
            raise ApiError(429, "too_many_requests", str(exc)) from None
        if isinstance(getattr(session, "adapter", None), StreamDtmf):
            via = "stream"  # the session sends the carrier's own DTMF message instead of tones
    return via


async def _session_action(rec: CallRecord, session: object | None, body: object) -> str:
    """say / mute / unmute, through the running session's control."""
    if session is None:
        raise _not_live(rec.id)
    control = session.control  # type: ignore[attr-defined]
    try:
        if isinstance(body, SayRequest):
            control.say(body.text)
        elif isinstance(body, MuteRequest):
            control.mute_agent()
        else:
            control.unmute_agent()
    except ControlBusy as exc:
        raise ApiError(429, "too_many_requests", str(exc)) from None
    return "session"


async def _transfer(api: ApiServices, rec: CallRecord, session: object | None, to: str, request: Request) -> str:
    if session is None:
        raise _not_live(rec.id)
    if api.outbound is None or rec.direction != "outbound" or not rec.carrier_account_id or not rec.carrier_call_id:
        raise ApiError(409, "not_transferable", f"call {rec.id!r} was not placed through a carrier account here: "
                       "transfer it through its carrier")  # fmt: skip
    # recorded first: the stream may end (and the session with it) before the carrier answers,
    # and a call with a transfer on record is never hung up through the carrier
    await asyncio.to_thread(api.store.mark_transferred, rec.id, to)
    try:
        await api.outbound.transfer(rec, to, request)
    except CarrierError as exc:
        await asyncio.to_thread(api.store.mark_transferred, rec.id, None)
        if isinstance(exc, NotSupported):
            raise ApiError(409, "not_transferable", exc.message) from None
        raise _carrier_error(exc) from None
    session.control.hang_up(TRANSFERRED)  # type: ignore[attr-defined]  # no hang-up goes to the carrier
    return "carrier"


@router.post(
    "/calls/{callId}/control",
    operation_id="controlCall",
    summary="Steer a live call: hang up, send DTMF, say, mute / unmute the agent, transfer",
    status_code=202,
    response_model=ControlOut,
    responses={
        202: {"description": "Accepted: the call acts on it at once (hang-up within 250 ms)."},
        **BODY,
        **NOT_FOUND,
        409: _error("The call is not live on this gateway (code not_live), or a transfer of a call not "
                    "placed through a carrier account (code not_transferable)."),
        429: _error("The call already has 32 control requests waiting, or 60 s of DTMF ahead "
                    "(code too_many_requests)."),
        502: _error("The carrier's API refused (code carrier_error)."),
    },
)
async def control_call(call_id: CallId, body: ControlRequest, tenant: Tenant, api: Api, request: Request) -> ControlOut:
    rec = await _own(api, call_id, tenant)
    session = api.live_session(call_id) if api.live_session is not None else None
    if isinstance(body, HangUpRequest):
        via = await _hang_up(api, rec, session)
    elif isinstance(body, SendDtmfRequest):
        via = await _send_dtmf(api, rec, session, body.digits)
    elif isinstance(body, TransferRequest):
        via = await _transfer(api, rec, session, body.to, request)
    else:
        via = await _session_action(rec, session, body)
    return ControlOut(call_id=rec.id, action=body.action, via=via)  # type: ignore[arg-type]
