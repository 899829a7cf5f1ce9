"""``POST /webrtc/{callId}/{token}/offer``: a browser's SDP offer in, the answer out; the call runs on.

No API key: the one-use token in the path is the credential, as for stream URLs (and it is
redacted from every log line, :mod:`gateway.logs`). The request is admitted by the stream
rules of :func:`gateway.streams.admit` (carrier ``webrtc``), answered in the API's error
envelope when refused (:data:`REFUSAL_STATUS`: ``unknown_call`` 404, ``bad_token`` 401,
``token_expired`` 410, ``not_connectable`` 409, ``bad_carrier`` 400, ``at_capacity`` 503 with
``Retry-After``). A body that does not arrive within :data:`READ_S` is a 408
``request_timeout``. A body that is not a usable offer is a 422 ``validation_error`` naming the
field (``body``, ``type`` or ``sdp``), and leaves the token unused. Then the peer connection is
made and answered (:func:`gateway.webrtc.peer.answer_offer`), and :class:`WebRtcCalls` runs the
call in a task of its own through :func:`gateway.streams.serve`: the call is claimed (the token
is used up), the ``200 {"type": "answer", "sdp"}`` goes back, and the session starts once ICE
and DTLS connect (else the call is finalised ``failed`` with ``webrtc_connect_timeout`` or
``webrtc_connect_failed``). At shutdown, live WebRTC sessions end with the others
(``Services.end_live_calls``) and :meth:`WebRtcCalls.aclose` ends the ones still connecting
(``shutdown``) and waits for every task, bounded.

aiortc is imported on the first offer, not when the app starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from gateway.api.errors import error_response
from gateway.api.routing import RETRY_AFTER_S
from gateway.streams import Refusal, StreamRequest, admit, serve

if TYPE_CHECKING:
    from gateway.app import Services
    from gateway.store import CallRecord
    from gateway.webrtc.peer import WebRtcPeer

__all__ = ["offer_endpoint", "WebRtcCalls", "REFUSAL_STATUS", "CLAIM_S"]

log = logging.getLogger("gateway.webrtc")

#: Refusal key (:data:`gateway.streams.CLOSE_CODES`) → HTTP status of the offer's answer.
REFUSAL_STATUS = {
    "unknown_call": 404, "bad_token": 401, "token_expired": 410, "not_connectable": 409, "bad_carrier": 400,
    "bad_signature": 403, "at_capacity": 503,
}  # fmt: skip
#: Longest wait (s) for the call's claim in the store before the offer is answered.
CLAIM_S = 10.0
#: Longest wait (s) for the offer's body once the request was admitted (its slot is held).
READ_S = 10.0
#: Longest wait (s) for the answer (aiortc gathers its candidates; with STUN/TURN servers, a
#: server round trip).
ANSWER_S = 10.0


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A refusal in the API's error envelope (code: the refusal's key)."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if refusal.key == "at_capacity" else None
    return error_response(REFUSAL_STATUS.get(refusal.key, 400), refusal.key, refusal.reason, headers=headers)


class _Channel:
    """:class:`gateway.streams.StreamChannel` of one offer: the HTTP answer waits on
    :attr:`claimed` (``None``: claimed, answer now; a :class:`Refusal`: refused)."""

    def __init__(self, peer: WebRtcPeer, timeout_s: float, closing: asyncio.Event) -> None:
        self.peer, self.timeout_s, self.closing = peer, timeout_s, closing
        self.claimed: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()

    async def refuse(self, refusal: Refusal) -> None:
        if not self.claimed.done():
            self.claimed.set_result(refusal)
        await self.peer.close()

    async def accept(self) -> Any:
        if not self.claimed.done():
            self.claimed.set_result(None)  # the call is ours: the answer goes back now
        return await self.peer.connected(self.timeout_s, self.closing)


class WebRtcCalls:
    """The WebRTC calls' tasks, owned by the app's services (``Services.webrtc``)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.tasks: dict[asyncio.Task, str] = {}  # task → its call id
        self.closing = asyncio.Event()

    async def start(self, call: CallRecord, peer: WebRtcPeer) -> Refusal | None:
        """Run admitted ``call`` over ``peer`` in a task of its own; once the store claimed it,
        ``None`` (answer the offer), else the :class:`Refusal`. The admission slot is released
        when the task ends (here, when the gateway began shutting down while the offer was
        being answered: :meth:`aclose` no longer waits for new tasks)."""
        if self.closing.is_set():
            await peer.close()
            self.services.admitting.discard(call.id)
            return Refusal("at_capacity", "the gateway is shutting down")
        channel = _Channel(peer, self.services.settings.webrtc_connect_timeout_s, self.closing)
        task = asyncio.create_task(self._run(call, channel), name=f"webrtc-{call.id}")
        self.tasks[task] = call.id
        task.add_done_callback(lambda t: self.tasks.pop(t, None))
        try:
            async with asyncio.timeout(CLAIM_S):
                return await asyncio.shield(channel.claimed)
        except TimeoutError:  # the page is told to retry: its answer never goes out, so no peer can
            task.cancel()  # connect; the call ends now (finalised once claimed) rather than at the connect timeout
            return Refusal("at_capacity", "the call could not be claimed in time; try again later")

    async def _run(self, call: CallRecord, channel: _Channel) -> None:
        from gateway.webrtc.peer import ConnectFailed

        services = self.services
        try:
            await serve(services, call, "webrtc", channel)
        except ConnectFailed as exc:  # serve finalised the call with its reason
            log.info("webrtc call %s: %s (%s)", call.id, exc.end_reason, exc)
        except Exception:  # noqa: BLE001 - a bug: serve finalised the call; this task ends here
            log.exception("webrtc call %s failed", call.id)
        finally:
            services.admitting.discard(call.id)
            if not channel.claimed.done():
                channel.claimed.set_result(Refusal("not_connectable", "call already streaming or ended"))
            await channel.peer.close()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """End the calls still connecting (``shutdown``) and wait for every task (bounded by
        ``timeout_s``; what is left is cancelled, its record finalised by the session)."""
        self.closing.set()
        for call_id in list(self.tasks.values()):
            session = self.services.live.get(call_id)
            if session is not None:
                session.request_end("shutdown")
        if self.tasks:
            _, left = await asyncio.wait(list(self.tasks), timeout=timeout_s)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=timeout_s)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes (a longer one is cut there, and
    :func:`~gateway.webrtc.peer.check_offer` refuses it as too long)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


def _calls(services: Services) -> WebRtcCalls:
    if services.webrtc is None:
        services.webrtc = WebRtcCalls(services)
    return services.webrtc


async def offer_endpoint(request: Request) -> Response:
    """Serve one offer (module docstring)."""
    services: Services = request.app.state.services
    call_id, token = request.path_params["call_id"], request.path_params["token"]
    calls = _calls(services)
    if calls.closing.is_set():
        return refusal_response(Refusal("at_capacity", "the gateway is shutting down"))
    admitted = await admit(services, StreamRequest("webrtc", call_id, token, request.headers, str(request.url)))
    if isinstance(admitted, Refusal):
        return refusal_response(admitted)
    started = False
    try:
        from gateway.webrtc.peer import MAX_OFFER_BYTES, BadOffer, answer_offer, check_offer

        try:
            async with asyncio.timeout(READ_S):
                body = await _read_body(request, MAX_OFFER_BYTES + 1)
        except TimeoutError:  # a client dribbling its body must not hold the call's slot
            return error_response(408, "request_timeout", f"the offer did not arrive within {READ_S:g} s")
        except ClientDisconnect:  # the client left: nobody reads the answer
            return Response(status_code=400)
        try:
            sdp = check_offer(body)
            async with asyncio.timeout(ANSWER_S):
                peer = await answer_offer(sdp, services.settings, label=f"webrtc-{call_id}")
        except BadOffer as exc:  # the token stays unused: the page may offer again
            return error_response(422, "validation_error", f"invalid offer: {exc.field}",
                                  fields=[{"field": exc.field, "message": exc.message}])
        except TimeoutError:
            return error_response(503, "unavailable", f"no answer within {ANSWER_S:g} s; try again",
                                  headers={"Retry-After": str(RETRY_AFTER_S)})
        started = True  # from here the call's task releases the admission slot
        refusal = await calls.start(admitted, peer)
    finally:
        if not started:
            services.admitting.discard(call_id)
    if refusal is not None:
        return refusal_response(refusal)
    return JSONResponse({"type": "answer", "sdp": peer.answer})
