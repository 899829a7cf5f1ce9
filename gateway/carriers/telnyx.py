"""Telnyx media streaming adapter (WebSocket, bidirectional ``rtp`` mode).

Source: https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming
(also the AsyncAPI page https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket).

Wire protocol (JSON text frames; Twilio-like, snake_case):

* In: ``connected``; ``start`` (top-level ``stream_id``; ``start.call_control_id``,
  ``start.call_session_id``, ``start.from``, ``start.to``, ``start.client_state``,
  ``start.media_format{encoding, sample_rate, channels}``); ``media`` (``media.track``,
  ``media.chunk``, ``media.timestamp``, ``media.payload`` = base64 RTP payload without headers;
  top-level ``sequence_number``; numbers are strings); ``dtmf`` (``dtmf.digit``); ``mark``
  (``mark.name``); ``error`` (``payload{code, title, detail}``, codes 100002–100005); ``stop``.
* Out: ``{"event":"media","media":{"payload":…}}`` (20 ms to 30 s per message),
  ``{"event":"mark","mark":{"name":…}}``, ``{"event":"clear"}`` (``clear`` also returns every
  queued mark). No stream id is sent back.

**Order is not guaranteed** (Telnyx docs): :attr:`Media.sequence` carries ``media.chunk`` (else
``sequence_number``), and the adapter puts media back in order (:class:`MediaReorderer`).

Encodings: ``media_format.encoding`` is ``PCMU`` / ``PCMA`` / ``L16`` (older pages show
``audio/x-mulaw``: accepted too). G722 / OPUS / AMR-WB give ``ProtocolError("bad_field")``:
the gateway has no codec for them. Rates: 8,000 Hz for PCMU / PCMA; 8,000, 16,000, 22,050,
24,000 or 48,000 Hz for L16 (the ``stream_bidirectional_sampling_rate`` values of
https://developers.telnyx.com/api-reference/call-commands/streaming-start); anything else
is a fatal ``ProtocolError("bad_field", "start.media_format.sample_rate")``. The inbound codec is the one the call leg negotiated
(PCMA in Europe and India); the outbound codec is the one requested with
``bidirectionalCodec`` / ``stream_bidirectional_codec`` — keep them equal.

UNCERTAIN: Telnyx does not document the byte order of ``L16`` payloads. RTP L16 is big-endian
(RFC 3551 §4.5.11) and pipecat's Telnyx serializer (PR #3419) byte-swaps, so by default this
adapter converts L16 between big-endian on the wire and the project's little-endian
(``TelnyxAdapter(l16_big_endian=False)`` turns that off).

Lifecycle: ``AWAITING_START --start--> STREAMING --stop--> STOPPED`` as for Twilio: media before
``start`` is ``before_start``; a second ``start`` or anything after ``stop`` is
``unexpected_event``; ``error`` becomes ``ProtocolError("carrier_error", "<code> <title>")``.
"""

from __future__ import annotations

import array

import orjson
import pybase64

from gateway.carriers._wire import (
    check_started,
    JsonEventStream,
    StreamState,
    decode_payload,
    dtmf_event,
    field_error,
    mark_ack,
    media_position,
    stream_format,
)
from gateway.carriers.events import (
    CarrierEvent,
    Connected,
    Frame,
    Media,
    ProtocolError,
    Started,
    Stopped,
)
from gateway.carriers.reorder import MediaReorderer
from gateway.formats import AudioFormat, Encoding

__all__ = ["TelnyxAdapter", "TelnyxState", "DOC_URL"]

DOC_URL = "https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming"

_ENCODINGS = {
    "pcmu": Encoding.PCMU,
    "audio/x-mulaw": Encoding.PCMU,
    "pcma": Encoding.PCMA,
    "audio/x-alaw": Encoding.PCMA,
    "l16": Encoding.L16,
    "audio/l16": Encoding.L16,
}
#: Sample rates per encoding: G.711 is 8 kHz; L16 takes the rates Telnyx lists for
#: ``stream_bidirectional_sampling_rate`` (streaming_start reference: 8000, 16000, 22050,
#: 24000, 48000).
_RATES = {
    Encoding.PCMU: frozenset({8000}),
    Encoding.PCMA: frozenset({8000}),
    Encoding.L16: frozenset({8000, 16000, 22050, 24000, 48000}),
}
_MEDIA_HEAD = '{"event":"media","media":{"payload":"'
_CLEAR = '{"event":"clear"}'


#: The stream's lifecycle states (the carriers' shared :class:`StreamState`, under its old name).
TelnyxState = StreamState

_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (TelnyxState.AWAITING_START, "connected"): TelnyxState.AWAITING_START,
    (TelnyxState.AWAITING_START, "start"): TelnyxState.STREAMING,
    (TelnyxState.AWAITING_START, "error"): TelnyxState.AWAITING_START,
    (TelnyxState.AWAITING_START, "stop"): TelnyxState.STOPPED,
    (TelnyxState.STREAMING, "connected"): TelnyxState.STREAMING,
    (TelnyxState.STREAMING, "media"): TelnyxState.STREAMING,
    (TelnyxState.STREAMING, "dtmf"): TelnyxState.STREAMING,
    (TelnyxState.STREAMING, "mark"): TelnyxState.STREAMING,
    (TelnyxState.STREAMING, "error"): TelnyxState.STREAMING,
    (TelnyxState.STREAMING, "stop"): TelnyxState.STOPPED,
    (TelnyxState.STOPPED, "error"): TelnyxState.STOPPED,
}


def _swap16(data: bytes) -> bytes:
    """Swap the bytes of every 16-bit sample (big-endian ↔ little-endian). Raises ValueError if odd."""
    samples = array.array("h")
    samples.frombytes(data)
    samples.byteswap()
    return samples.tobytes()


class TelnyxAdapter(JsonEventStream):
    """Sans-I/O adapter for one Telnyx media stream (one instance per call).

    Args:
        l16_big_endian: L16 payloads are big-endian on the wire (see module doc); converted.

    Attributes:
        name: ``"telnyx"``.
        audio_format: from ``start.media_format`` (``None`` before start).
        frame_ms: 20 (the smallest chunk Telnyx accepts back in rtp mode).
        max_message_ms: 1,000 (Telnyx takes 20 ms to 30 s per ``media`` message; 1 s bounds one).
        stream_id: top-level ``stream_id`` of ``start``.
        state: the :class:`TelnyxState`.
    """

    name = "telnyx"
    frame_ms = 20
    max_message_ms = 1000
    _transitions = _TRANSITIONS

    def __init__(self, *, l16_big_endian: bool = True) -> None:
        super().__init__()
        self.audio_format: AudioFormat | None = None
        self.stream_id = ""
        self._l16_big_endian = l16_big_endian
        self._swap = False  # True once start says L16 and the wire is big-endian
        self._reorder = MediaReorderer()

    # ------------------------------------------------------------------ inbound

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one WebSocket message into events. Never raises (see module doc for errors).

        A bug in this parser surfaces as ``ProtocolError("internal", <exception type>)``.
        """
        # One event, never raises; called directly, as super() costs ~0.1 µs a frame.
        events = JsonEventStream.receive(self, frame)
        event = events[0]
        if type(event) is Media:
            return self._reorder.push(event)
        if type(event) is Stopped:
            return [*self._reorder.flush(), event]
        return events

    def _on_connected(self, msg: dict) -> CarrierEvent:
        return Connected()  # {"event":"connected","version":"1.0.0"}: nothing to keep

    def _on_start(self, msg: dict) -> CarrierEvent:
        start = msg.get("start")
        if type(start) is not dict:
            return field_error("start", start)
        stream_id = msg.get("stream_id", start.get("stream_id"))
        if type(stream_id) is not str or not stream_id:
            return field_error("stream_id", stream_id)
        call_id = start.get("call_control_id")
        if type(call_id) is not str or not call_id:
            return field_error("start.call_control_id", call_id)
        fmt = start.get("media_format")
        if type(fmt) is not dict:
            return field_error("start.media_format", fmt)
        audio_format = stream_format(fmt, _ENCODINGS, _RATES, "start.media_format", encoding_key="encoding",
                                     rate_key="sample_rate", default_encoding=None)  # fmt: skip
        if fmt.get("channels", 1) not in (1, "1"):
            return ProtocolError("bad_field", "start.media_format.channels")

        texts = {}
        for key in ("from", "to", "call_session_id", "user_id"):
            value = start.get(key, "")
            if type(value) is not str:
                return ProtocolError("bad_field", f"start.{key}")
            texts[key] = value
        params: dict[str, str] = {}
        # Twilio-style custom parameters (TeXML <Parameter>) where Telnyx sends them: UNCERTAIN.
        extra = start.get("custom_parameters", start.get("customParameters"))
        if type(extra) is dict:
            params.update({k: v for k, v in extra.items() if type(v) is str})
        client_state = start.get("client_state")
        if type(client_state) is str:
            params["client_state"] = client_state  # base64, as given to dial/answer
        if texts["call_session_id"]:
            params.setdefault("call_session_id", texts["call_session_id"])

        self.stream_id = stream_id
        self.audio_format = audio_format
        self._swap = audio_format.encoding is Encoding.L16 and self._l16_big_endian
        return check_started(Started(
            stream_id=stream_id,
            call_id=call_id,
            audio_format=self.audio_format,
            account_id=texts["user_id"],
            from_number=texts["from"],
            to_number=texts["to"],
            custom_parameters=params,
        ))

    def _on_media(self, msg: dict) -> CarrierEvent:
        media = msg.get("media")
        if type(media) is not dict:
            return field_error("media", media)
        audio = decode_payload(media, "media.payload")
        if self._swap:
            if len(audio) & 1:
                return ProtocolError("bad_field", f"media.payload: odd L16 length {len(audio)}")
            audio = _swap16(audio)
        timestamp, sequence = media_position(media, msg, "sequence_number")
        track = media.get("track", "inbound")
        return Media(audio, timestamp, sequence, track if type(track) is str else "inbound")

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        dtmf = msg.get("dtmf")
        if type(dtmf) is not dict:
            return field_error("dtmf", dtmf)
        return dtmf_event(dtmf.get("digit"), "dtmf.digit")

    def _on_mark(self, msg: dict) -> CarrierEvent:
        mark = msg.get("mark")
        if type(mark) is not dict:
            return field_error("mark", mark)
        return mark_ack(mark.get("name"), "mark.name")

    def _on_error(self, msg: dict) -> CarrierEvent:
        payload = msg.get("payload")
        if type(payload) is not dict:
            return ProtocolError("carrier_error", "no payload")
        code = payload.get("code")
        title = payload.get("title")
        code_text = str(code) if type(code) in (int, str) else "?"
        title_text = title[:64] if type(title) is str else ""
        return ProtocolError("carrier_error", f"{code_text[:16]} {title_text}".strip())

    def _on_stop(self, msg: dict) -> CarrierEvent:
        return Stopped()

    # ----------------------------------------------------------------- outbound

    def media(self, payload: bytes) -> str:
        """``{"event":"media","media":{"payload":<base64>}}`` — 20 ms to 30 s of ``audio_format``.

        L16 is byte-swapped to big-endian when the adapter was made with ``l16_big_endian``.
        """
        if self._swap:
            payload = _swap16(payload)
        return _MEDIA_HEAD + pybase64.b64encode_as_string(payload) + '"}}'

    def mark(self, name: str) -> str:
        """``{"event":"mark","mark":{"name":name}}``; Telnyx echoes it when the audio before it played."""
        return orjson.dumps({"event": "mark", "mark": {"name": name}}).decode()

    def clear(self) -> str:
        """``{"event":"clear"}``: stops playback, empties the queue and returns queued marks."""
        return _CLEAR

    #: event → handler (JsonEventStream runs it when _TRANSITIONS allows the event).
    _handlers = {
        "connected": _on_connected,
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "mark": _on_mark,
        "error": _on_error,
        "stop": _on_stop,
    }
