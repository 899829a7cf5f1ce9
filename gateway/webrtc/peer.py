"""One call's aiortc ``RTCPeerConnection``: the offer checked, the answer made, the connect wait.

:func:`check_offer` reads the offer route's body (errors: :class:`BadOffer`, the route's 422);
:func:`answer_offer` makes the peer connection, sets the offer, adds the paced outbound track
(Opus preferred, then what the browser offers that aiortc has: PCMU, PCMA), and returns a
:class:`WebRtcPeer` whose local description is a complete answer (aiortc gathers every
candidate in ``setLocalDescription``: no trickle). :meth:`WebRtcPeer.connected` waits for ICE
and DTLS (``GATEWAY_WEBRTC_CONNECT_TIMEOUT_S``) and raises :class:`ConnectFailed` with the
call's end reason otherwise; after that a failed or closed connection is the peer gone
(:meth:`gateway.webrtc.transport.WebRtcTransport.peer_gone`).

Sources: RFC 8829 (JSEP: offer/answer), RFC 8835 (WebRTC transports), aiortc
``rtcpeerconnection.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from gateway.webrtc.ice import ice_servers, include_loopback
from gateway.webrtc.tracks import set_jitter_frames
from gateway.webrtc.transport import WebRtcTransport, close_peer

__all__ = ["BadOffer", "ConnectFailed", "WebRtcPeer", "check_offer", "answer_offer", "MAX_OFFER_BYTES",
           "MAX_CANDIDATES"]

log = logging.getLogger("gateway.webrtc")

#: Largest offer body read (bytes): a browser's audio + data channel offer is 2 to 6 KB.
MAX_OFFER_BYTES = 64 * 1024
#: Most ICE candidates an offer may name (all its m-sections): a browser names a few per
#: network interface and section. The gateway checks every one (STUN binding requests to the
#: address it names, an mDNS query for a ``.local`` name: inherent to ICE, RFC 8445 §6.1.2),
#: so the bound caps what one offer makes the gateway send.
MAX_CANDIDATES = 100


class BadOffer(ValueError):
    """The body is not a usable SDP offer: ``field`` (``body``, ``type``, ``sdp``) and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class ConnectFailed(Exception):
    """ICE or DTLS did not complete: ``end_reason`` for the call's record
    (``webrtc_connect_timeout``, ``webrtc_connect_failed``, ``shutdown``), ``error_code``
    (``no_start``) and the message."""

    error_code = "no_start"

    def __init__(self, end_reason: str, message: str) -> None:
        super().__init__(message)
        self.end_reason = end_reason


def check_offer(body: bytes) -> str:
    """The SDP of an offer body ``{"type": "offer", "sdp": "<SDP>"}``.

    The SDP must start ``v=0`` and have one audio m-line (RFC 8866 §5, §5.14), and besides it
    at most the data channel's ``application`` m-line: aiortc starts a decoder thread for every
    media section it receives, and the call uses one.

    Raises:
        BadOffer: not JSON, not an object, ``type`` not ``offer``, ``sdp`` missing, empty, too
            long, without an audio m-line, with other media sections than one audio and one
            application, or with over :data:`MAX_CANDIDATES` candidates.
    """
    if len(body) > MAX_OFFER_BYTES:
        raise BadOffer("body", f"over {MAX_OFFER_BYTES} bytes")
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadOffer("body", "not valid JSON") from None
    if type(msg) is not dict:
        raise BadOffer("body", "must be a JSON object")
    if msg.get("type") != "offer":
        raise BadOffer("type", "must be \"offer\"")
    sdp = msg.get("sdp")
    if type(sdp) is not str or not sdp.strip():
        raise BadOffer("sdp", "field required" if sdp is None else "must be a non-empty string")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if lines[0].strip() != "v=0":
        raise BadOffer("sdp", "not an SDP session description (no v=0 line)")
    media = [line[2:].split(" ", 1)[0] for line in lines if line.startswith("m=")]
    if "audio" not in media:
        raise BadOffer("sdp", "no audio m-line")
    if media.count("audio") > 1 or media.count("application") > 1 or set(media) - {"audio", "application"}:
        raise BadOffer("sdp", "one audio m-line and at most one data channel (application) m-line")
    if sum(line.startswith("a=candidate:") for line in lines) > MAX_CANDIDATES:
        raise BadOffer("sdp", f"over {MAX_CANDIDATES} ICE candidates")
    return sdp


class WebRtcPeer:
    """A negotiated peer connection and the session transport over it.

    Attributes:
        pc: the ``RTCPeerConnection``; ``transport``: its
            :class:`~gateway.webrtc.transport.WebRtcTransport`; ``answer``: the answer's SDP.
    """

    def __init__(self, pc: Any, transport: WebRtcTransport) -> None:
        self.pc = pc
        self.transport = transport
        self.answer = pc.localDescription.sdp
        self._state = asyncio.get_running_loop().create_future()  # "connected" or "failed"
        pc.on("connectionstatechange", self._changed)

    def _changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._state.done():
            self._state.set_result("connected")
        elif state in ("failed", "closed"):
            if not self._state.done():
                self._state.set_result(state)
            else:
                self.transport.peer_gone("peer_failed" if state == "failed" else "peer_closed")

    async def connected(self, timeout_s: float, closing: asyncio.Event | None = None) -> WebRtcTransport:
        """Wait for ICE and DTLS and the caller's audio track; the transport, started.

        Raises:
            ConnectFailed: not within ``timeout_s`` (``webrtc_connect_timeout``), ICE or DTLS
                failed (``webrtc_connect_failed``), or ``closing`` was set (``shutdown``).
        """
        waits = [asyncio.ensure_future(asyncio.shield(self._state))]
        if closing is not None:
            waits.append(asyncio.ensure_future(closing.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not self._state.done():
            if closing is not None and closing.is_set():
                raise ConnectFailed("shutdown", "the gateway shut down before the peer connected")
            raise ConnectFailed("webrtc_connect_timeout", f"ICE and DTLS did not complete within {timeout_s:g} s")
        if self._state.result() != "connected":
            raise ConnectFailed("webrtc_connect_failed", f"the peer connection {self._state.result()} before it connected")
        if not self.transport.has_audio:
            raise ConnectFailed("webrtc_connect_failed", "the peer sent no audio track")
        self.transport.start()
        return self.transport

    async def close(self) -> None:
        """Close the peer connection (bounded; idempotent)."""
        await close_peer(self.pc)


async def answer_offer(sdp: str, settings: Any, *, label: str = "") -> WebRtcPeer:
    """Make the call's peer connection for offer ``sdp`` and its complete answer.

    Args:
        sdp: the offer (:func:`check_offer`'s result).
        settings: the gateway's settings (ICE servers).
        label: the stream id of the call's ``start`` (for the record).

    Raises:
        BadOffer: aiortc refused the offer (``sdp``: the reason), or it sends no audio.
    """
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    include_loopback()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(settings)))
    transport = WebRtcTransport(pc, label=label)
    pc.on("track", transport.remote_track)
    pc.on("datachannel", transport.data_channel)
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc's refusals are ValueError, InvalidAccessError …
            raise BadOffer("sdp", f"refused: {str(exc)[:200] or type(exc).__name__}") from None
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio or audio[0].direction not in ("sendrecv", "recvonly") or not transport.has_audio:
            raise BadOffer("sdp", "the audio m-line must send and receive audio (sendrecv)")
        if not set_jitter_frames(audio[0].receiver, settings.webrtc_jitter_frames):
            log.warning("webrtc: this aiortc has no receiver jitter buffer to set; keeping its own")
        codecs = RTCRtpSender.getCapabilities("audio").codecs
        audio[0].setCodecPreferences(sorted(codecs, key=lambda c: c.mimeType.lower() != "audio/opus"))
        pc.addTrack(transport.track)
        await pc.setLocalDescription(await pc.createAnswer())
        return WebRtcPeer(pc, transport)
    except BaseException:
        await close_peer(pc)
        raise
