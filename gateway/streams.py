"""Admitting and serving one carrier media stream, whatever WebSocket stack carries it.

Both media listeners, the app's Starlette route (:func:`gateway.app.stream_endpoint`) and the
picows listener (:mod:`gateway.picows_listener`), hand a :class:`StreamRequest` (the URL's
carrier, call id and token, the upgrade request's headers, the public URL the carrier was given)
and a :class:`StreamChannel` (how to refuse, how to accept) to :func:`run_stream`. The rules
live here once:

* :func:`admit` checks the request, in this order, and refuses with the first rule broken
  (:class:`Refusal`: a key of :data:`CLOSE_CODES`, a reason, the close code):

  ====  ===================  ==================================================================
  4400  ``bad_carrier``      unknown carrier in the path, or not the call's carrier
  4404  ``unknown_call``     no such call
  4401  ``bad_token``        wrong token
  4410  ``token_expired``    the stream token expired
  4409  ``not_connectable``  the call is already streaming, or has ended (an ended outbound
                             call is hung up at its carrier soon after)
  4403  ``bad_signature``    Twilio: missing or invalid ``X-Twilio-Signature`` (when an auth
                             token applies: the carrier account's, else
                             ``GATEWAY_TWILIO_AUTH_TOKEN``)
  1013  ``at_capacity``      ``GATEWAY_MAX_CALLS`` calls are live (RFC 6455 §7.4.2 registry)
  ====  ===================  ==================================================================

  An admitted call holds its slot in ``Services.admitting`` until :func:`run_stream` ends.
* :func:`serve` claims the call for this node, accepts the socket, builds the session
  (:func:`gateway.callsetup.build_session`) on the channel's transport and runs it to its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.callsetup import build_session, recording_path
from gateway.carriers.registry import CARRIERS
from gateway.session.common import Transport
from gateway.store import BadToken, CallNotConnectable, CallRecord, IllegalTransition, TokenExpired, UnknownCall

if TYPE_CHECKING:
    from gateway.app import Services

__all__ = ["CLOSE_CODES", "Refusal", "StreamRequest", "StreamChannel", "admit", "serve", "run_stream",
           "twilio_signature_ok"]

log = logging.getLogger("gateway.app")

#: Refusal key → WebSocket close code (4xxx: application codes, RFC 6455 §7.4.2).
CLOSE_CODES = {
    "bad_carrier": 4400,
    "bad_token": 4401,
    "bad_signature": 4403,
    "unknown_call": 4404,
    "not_connectable": 4409,
    "token_expired": 4410,
    "at_capacity": 1013,
}
#: Longest wait (s) for the store's claim of a call once its stream was cancelled meanwhile
#: (shutdown, the peer's request gone): a claim that lands is finalised, not left ``streaming``.
CLAIM_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream is not served: ``key`` (of :data:`CLOSE_CODES`) and the close ``reason``."""

    key: str
    reason: str

    @property
    def code(self) -> int:
        """The WebSocket close code the socket is closed with."""
        return CLOSE_CODES[self.key]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """One stream's upgrade request, as every listener sees it.

    Attributes:
        carrier, call_id, token: the path's segments (``/stream/{carrier}/{call_id}/{token}``).
        headers: the upgrade request's headers, keys looked up lower-case
            (``x-twilio-signature``); any case-insensitive mapping will do.
        url: the ``ws(s)://`` URL the carrier was given for this socket (what Twilio signs),
            built from operator settings by the listener.
    """

    carrier: str
    call_id: str
    token: str
    headers: Mapping[str, str]
    url: str


class StreamChannel(Protocol):
    """How a listener refuses or accepts the socket of a :class:`StreamRequest`."""

    async def refuse(self, refusal: Refusal) -> None:
        """Close the socket with ``refusal.code`` and ``refusal.reason`` (accepting it first
        if the stack needs to, so the client sees the code)."""
        ...

    async def accept(self) -> Transport:
        """Complete the upgrade if not done; the session's transport.

        Raises:
            Exception: the peer left meanwhile (the claimed call is then finalised as
                ``carrier_closed_before_start``).
        """
        ...


def twilio_signature_ok(headers: Mapping[str, str], url: str, token: str) -> bool:
    """Whether ``X-Twilio-Signature`` in ``headers`` signs ``url`` with auth token ``token``
    (an empty ``token``: True, nothing to check).

    Source: https://www.twilio.com/docs/usage/security#validating-requests (Media Streams
    sign the WebSocket request's URL with the account's auth token, no parameters).
    """
    if not token:
        return True
    from twilio.request_validator import RequestValidator

    signature = headers.get("x-twilio-signature", "")
    return bool(signature) and RequestValidator(token).validate(url, {}, signature)


async def _twilio_token(services: Services, call: CallRecord) -> str | None:
    """The auth token Twilio signs this call's stream with: its carrier account's for a call
    placed through one (``None``: its credentials no longer resolve), else
    ``GATEWAY_TWILIO_AUTH_TOKEN`` (``""``: unset, nothing to check)."""
    if call.carrier_account_id and services.outbound is not None:
        creds = await services.outbound.credentials(call)
        return (creds.get("auth_token") if creds else None) or None
    return services.settings.twilio_auth_token.get_secret_value()


async def admit(services: Services, req: StreamRequest) -> CallRecord | Refusal:
    """Check a stream request against the store and the gateway's state (rules: module doc).

    Returns:
        The call's record, its slot then held in ``services.admitting`` (the caller releases
        it: :func:`run_stream` does), or the :class:`Refusal` of the first rule broken.
    """
    store = services.store
    if req.carrier not in CARRIERS:
        return Refusal("bad_carrier", f"unknown carrier {req.carrier!r}")
    try:
        call = await asyncio.to_thread(store.check_stream_token, req.call_id, req.token)
    except UnknownCall:
        return Refusal("unknown_call", "unknown call")
    except BadToken:
        return Refusal("bad_token", "invalid stream token")
    except TokenExpired:
        return Refusal("token_expired", "stream token expired")
    except CallNotConnectable:
        if services.outbound is not None:  # an ended outbound call must not stay up at the carrier
            services.outbound.hang_up_ended_soon(req.call_id)
        return Refusal("not_connectable", "call already streaming or ended")
    if call.connection_type != req.carrier:
        return Refusal("bad_carrier", f"this call streams over {call.connection_type}")
    if req.carrier == "twilio":
        token = await _twilio_token(services, call)
        if token is None or not twilio_signature_ok(req.headers, req.url, token):
            return Refusal("bad_signature", "missing or invalid X-Twilio-Signature")
    if req.call_id in services.live or req.call_id in services.admitting:
        return Refusal("not_connectable", "call already streaming")
    if services.live_calls() >= services.settings.max_calls:
        return Refusal("at_capacity", "gateway at its live call limit; try again later")
    services.admitting.add(req.call_id)  # no await since the check: the slot is ours
    return call


async def run_stream(services: Services, req: StreamRequest, channel: StreamChannel,
                     admitted_hook: Callable[[], None] | None = None) -> None:
    """Admit ``req`` and serve it to the call's end, or refuse it on ``channel``.

    ``admitted_hook`` is called once :func:`admit` has decided (either way), before the socket
    is refused or served: a listener that completes the upgrade before admission orders the
    admissions of one call's sockets with it, so the first to connect wins, as on a stack that
    admits before the upgrade.
    """
    admitted = await admit(services, req)
    if admitted_hook is not None:
        admitted_hook()
    if isinstance(admitted, Refusal):
        return await channel.refuse(admitted)
    try:
        await serve(services, admitted, req.carrier, channel)
    finally:
        services.admitting.discard(req.call_id)


async def serve(services: Services, call: CallRecord, carrier: str, channel: StreamChannel) -> None:
    """Start an admitted call and run it to its end (it leaves ``Services.live`` after).

    The call is claimed for this node (``GATEWAY_NODE_ID``) with its recording's path, so that
    if the process dies mid-call its next start-up finalises the call and links the file.
    """
    call_id = call.id
    wav = recording_path(services.settings, call_id) if call.call_config().recording_enabled else None
    claim = asyncio.ensure_future(asyncio.to_thread(
        services.store.mark_call_started, call_id, node_id=services.settings.node_id,
        node_run=services.run_id, lease_s=services.settings.call_lease_s, recording_path=wav,
    ))  # fmt: skip
    try:
        await asyncio.shield(claim)
    except IllegalTransition:
        return await channel.refuse(Refusal("not_connectable", "call already streaming or ended"))
    except asyncio.CancelledError as exc:  # the store's thread goes on: once it claimed the call, finalise it
        await asyncio.wait([claim], timeout=CLAIM_WAIT_S)
        if claim.done() and not claim.cancelled() and claim.exception() is None:
            await _finalise_unserved(services, call_id, exc)
        raise
    try:  # claimed: from here on the record is finalised whatever happens
        transport = await channel.accept()
        session = build_session(services, call, carrier, transport)
    except BaseException as exc:  # the peer left during the handshake, a bug, or cancellation
        await _finalise_unserved(services, call_id, exc)
        raise
    services.live[call_id] = session
    services.admitting.discard(call_id)
    try:
        await session.run()
    finally:
        services.live.pop(call_id, None)
        postcall = getattr(services, "postcall", None)
        if postcall is not None:  # its record is final: its post-call results are due
            postcall.wake()


async def _finalise_unserved(services: Services, call_id: str, exc: BaseException, limit_s: float = 10.0) -> None:
    """Finalise a claimed call whose session never ran (``failed``, ``carrier_closed_before_start``).

    An ``accept`` error that names its own ``end_reason`` (and ``error_code``), such as
    :class:`gateway.webrtc.peer.ConnectFailed` (``webrtc_connect_timeout``), is recorded with
    those and its message. Shielded from a cancellation of the caller and bounded by
    ``limit_s``; a store error is logged (the start-up recovery of this node finalises the call
    then).
    """
    reason = getattr(exc, "end_reason", None)
    if reason is not None:
        code, message = getattr(exc, "error_code", "no_start"), str(exc)[:500]
    else:
        reason, code = "carrier_closed_before_start", "no_start"
        message = f"stream ended during the handshake ({type(exc).__name__})"
    work = asyncio.ensure_future(asyncio.to_thread(
        services.store.finalise_call, call_id, status="failed", end_reason=reason,
        duration_ms=0, error_code=code, error_message=message,
    ))
    try:
        await asyncio.shield(asyncio.wait_for(work, limit_s))
    except asyncio.CancelledError:
        pass  # the shielded write goes on; the caller re-raises its own cancellation
    except Exception:  # noqa: BLE001 - logged; recovery at the next start finalises it
        log.warning("could not finalise call %s after a failed handshake", call_id, exc_info=True)
