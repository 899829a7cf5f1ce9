"""The WebRTC transport's internal stream protocol ("webrtc"), as a sans-I/O carrier adapter.

A browser (or any WebRTC peer) does not speak a carrier protocol: its audio arrives as Opus
over SRTP and its control messages over an SCTP data channel. :mod:`gateway.webrtc` terminates
both (aiortc, PyAV) and hands the call session *frames* in the small protocol below, modelled on
the raw protocol (:mod:`gateway.carriers.raw`), so the session runs a WebRTC call exactly as a
carrier stream: the same typed events, the same playout ledger with marks, the same ``clear``.
Nothing here does I/O or imports aiortc.

**Transport → session** (what :meth:`WebRtcAdapter.receive` parses)

* ``{"event": "start", "streamId": "<peer id>", "sampleRate": 16000}``: the peer connection is
  up (ICE and DTLS connected, the caller's audio track arrived). ``sampleRate`` (Hz) is one of
  :data:`L16_RATES`; the audio is L16 (signed 16-bit little-endian), mono.
* binary frames: caller audio, decoded from Opus and resampled to ``sampleRate``, a whole
  number of samples (the transport sends 20 ms: 640 bytes at 16 kHz).
* ``{"event": "mark", "name": "<name>"}``: the outbound track emitted the audio queued before
  mark ``<name>`` (from the RTP timestamps of the frames it sent), or a ``clear`` dropped it.
* ``{"event": "cleared"}``: a ``clear`` emptied the outbound track's queue.
* ``{"event": "page", "text": "<message>"}``: one text message the page sent on the ``events``
  data channel, passed through as received (the transport wraps it, so a page can never
  forge a ``mark`` or ``start``). Page messages (issue 12's interface, SPEC12 §4):
  ``{"type": "hangup"}`` ends the call as the caller's hang-up (:class:`Stopped` ``hangup``);
  ``{"type": "dtmf", "digit": "5"}`` is a key press (:class:`Dtmf`). A message that is not
  a JSON object with a string ``type`` is a :class:`ProtocolError` (counted, the call goes
  on); another ``type`` is :class:`Unhandled` (``page:<type>``).
* ``{"event": "page", "binary": <bytes>}``: the page sent a binary message (a
  ``ProtocolError("unexpected_binary")``); ``{"event": "page", "chars": <n>}``: a text message
  over :data:`MAX_PAGE_CHARS` (``ProtocolError("oversize")``), its text left out.
* ``{"event": "stop", "reason": "peer_closed"}``: the peer went away (it closed the
  connection, ICE consent or DTLS failed, or its media stopped); the transport closes then.

**Session → transport** (what the adapter's outbound methods return)

* binary frames (:meth:`WebRtcAdapter.media`): agent audio, L16 at ``sampleRate``, whole 20 ms
  frames, queued on the paced outbound track;
* ``{"event": "mark", "name": "<name>"}`` (:meth:`WebRtcAdapter.mark`): acknowledge once the
  track has emitted everything queued before it;
* ``{"event": "clear"}`` (:meth:`WebRtcAdapter.clear`): drop the queued agent audio at once,
  acknowledge every pending mark (as Twilio does), then report ``cleared``.
"""

from __future__ import annotations

import orjson

from gateway.carriers._wire import (
    JsonEventStream,
    StreamState,
    binary_error,
    check_started,
    dtmf_event,
    field_error,
    internal_error,
    on_cleared,
    on_mark,
    on_stop,
)
from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Frame,
    Media,
    ProtocolError,
    Started,
    Stopped,
    Unhandled,
)
from gateway.carriers.raw import L16_RATES as RAW_L16_RATES
from gateway.formats import AudioFormat, Encoding

__all__ = ["WebRtcAdapter", "L16_RATES", "MAX_PAGE_CHARS", "start_frame", "mark_frame", "page_frame",
           "stop_frame", "CLEARED_FRAME"]  # fmt: skip

#: Sample rates (Hz) the transport may decode the caller's audio to (those of the raw protocol).
L16_RATES = RAW_L16_RATES
#: Longest page message read (characters); a longer one is ``oversize`` (a data channel message
#: of the interface is well under 200).
MAX_PAGE_CHARS = 4096

_CLEAR = '{"event":"clear"}'
CLEARED_FRAME = '{"event":"cleared"}'

_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (StreamState.AWAITING_START, "start"): StreamState.STREAMING,
    (StreamState.AWAITING_START, "stop"): StreamState.STOPPED,
    (StreamState.STREAMING, "mark"): StreamState.STREAMING,
    (StreamState.STREAMING, "cleared"): StreamState.STREAMING,
    (StreamState.STREAMING, "page"): StreamState.STREAMING,  # a hangup stops: see receive()
    (StreamState.STREAMING, "stop"): StreamState.STOPPED,
}


def start_frame(stream_id: str, sample_rate: int) -> str:
    """The transport's ``start`` frame (``stream_id``: the peer connection's label)."""
    return orjson.dumps({"event": "start", "streamId": stream_id, "sampleRate": sample_rate}).decode()


def mark_frame(name: str) -> str:
    """A mark frame: from the adapter, a mark to place; from the transport, its acknowledgement."""
    return orjson.dumps({"event": "mark", "name": name}).decode()


def page_frame(message: str | bytes) -> str:
    """One data channel message of the page, wrapped for the adapter (text as is; binary, and
    text over :data:`MAX_PAGE_CHARS`, by size only: what waits for the session stays small)."""
    if not isinstance(message, str):
        return orjson.dumps({"event": "page", "binary": len(message)}).decode()
    if len(message) > MAX_PAGE_CHARS:
        return orjson.dumps({"event": "page", "chars": len(message)}).decode()
    return orjson.dumps({"event": "page", "text": message}).decode()


def stop_frame(reason: str) -> str:
    """The transport's ``stop``: the peer went away (``reason``: ``peer_closed``, ``ice_failed`` …)."""
    return orjson.dumps({"event": "stop", "reason": reason}).decode()


class WebRtcAdapter(JsonEventStream):
    """Sans-I/O adapter for the WebRTC transport's internal protocol (module docstring).

    Attributes:
        name: ``"webrtc"``.
        audio_format: L16 at the ``start``'s rate (``None`` before it).
        frame_ms: 20 (the outbound track's frame).
        max_message_ms: 500 (the track's queue takes any whole number of frames).
        state: the :class:`~gateway.carriers._wire.StreamState`.
    """

    name = "webrtc"
    frame_ms = 20
    max_message_ms = 500
    _transitions = _TRANSITIONS

    def __init__(self) -> None:
        super().__init__()
        self.audio_format: AudioFormat | None = None

    # ------------------------------------------------------------------ inbound

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one frame of the transport into events. Never raises (errors: module doc)."""
        try:
            if type(frame) is bytes:
                n = len(frame)
                if self.state is StreamState.STREAMING and n <= MAX_FRAME_BYTES and n % 2 == 0:
                    return [Media(frame)]  # the hot path: 20 ms of caller audio
                return [binary_error(n, self.state)]
            events = super().receive(frame)
            if events and type(events[0]) is Stopped:
                self.state = StreamState.STOPPED  # a page's hangup ends the stream too
            return events
        except Exception as exc:  # a parser bug must not end the call
            return [internal_error(exc)]

    def _on_start(self, msg: dict) -> CarrierEvent:
        rate = msg.get("sampleRate")
        if type(rate) is not int or rate not in L16_RATES:
            return field_error("sampleRate", rate)
        stream_id = msg.get("streamId", "")
        if type(stream_id) is not str:
            return field_error("streamId", stream_id)
        self.audio_format = AudioFormat(Encoding.L16, rate)
        return check_started(Started(stream_id=stream_id, call_id="", audio_format=self.audio_format))

    def _on_page(self, msg: dict) -> CarrierEvent:
        text = msg.get("text")
        if type(text) is not str:
            if "chars" in msg:  # cut by the transport (page_frame)
                return ProtocolError("oversize", f"page: {msg['chars']} chars > {MAX_PAGE_CHARS}")
            return ProtocolError("unexpected_binary", f"page: {msg.get('binary')} bytes")
        if len(text) > MAX_PAGE_CHARS:
            return ProtocolError("oversize", f"page: {len(text)} chars > {MAX_PAGE_CHARS}")
        try:
            page = orjson.loads(text)
        except orjson.JSONDecodeError:
            return ProtocolError("malformed_json", f"page: {len(text)} chars")
        if type(page) is not dict:
            return ProtocolError("malformed_json", "page: not a JSON object")
        kind = page.get("type")
        if type(kind) is not str:
            return field_error("page.type", kind)
        if kind == "hangup":
            return Stopped("hangup")
        if kind == "dtmf":
            return dtmf_event(page.get("digit"), "page.digit")
        return Unhandled(f"page:{kind[:48]}")

    # ----------------------------------------------------------------- outbound

    def media(self, payload: bytes) -> bytes:
        """One binary frame of agent audio (L16 at the stream's rate), queued on the track as is.

        Raises:
            RuntimeError: before :class:`Started`.
            ValueError: ``payload`` is not a whole number of samples.
        """
        if self.audio_format is None:
            raise RuntimeError("webrtc: no start yet; send frames only after Started")
        if len(payload) % 2:
            raise ValueError(f"webrtc: {len(payload)} bytes is not a whole number of samples")
        return payload if type(payload) is bytes else bytes(payload)

    def mark(self, name: str) -> str:
        """``{"event":"mark","name":name}``: acknowledged once the track emitted the audio before it."""
        return mark_frame(name)

    def clear(self) -> str:
        """``{"event":"clear"}``: the track drops its queue and acknowledges every pending mark."""
        return _CLEAR

    #: event → handler (JsonEventStream runs it when _TRANSITIONS allows the event).
    _handlers = {
        "start": _on_start,
        "mark": on_mark,
        "cleared": on_cleared,
        "page": _on_page,
        "stop": on_stop,
    }
