"""Twilio Media Streams adapter (bidirectional streams, TwiML ``<Connect><Stream>``).

Source: https://www.twilio.com/docs/voice/media-streams/websocket-messages

Wire protocol (all frames are JSON text):

* In: ``connected`` → :class:`Connected`; ``start`` → :class:`Started` (``start.streamSid``,
  ``start.callSid``, ``start.accountSid``, ``start.tracks``, ``start.mediaFormat{encoding:
  "audio/x-mulaw", sampleRate: 8000, channels: 1}``, ``start.customParameters``); ``media`` →
  :class:`Media` (``media.payload`` base64 μ-law; ``media.timestamp`` = ms since stream start and
  ``media.chunk`` are **strings**); ``dtmf`` (``dtmf.digit``) → :class:`Dtmf`; ``mark``
  (``mark.name``) → :class:`MarkAck`; ``stop`` → :class:`Stopped`.
* Out: ``{"event":"media","streamSid":…,"media":{"payload":…}}`` (any size, no file header),
  ``{"event":"mark","streamSid":…,"mark":{"name":…}}``, ``{"event":"clear","streamSid":…}``.

Twilio echoes a ``mark`` once the audio queued before it has played, at once if nothing is
queued, and for every pending mark when it receives ``clear``: an echoed mark means "played or
cleared", so the session keeps its own generation counter.

Formats: ``audio/x-mulaw`` (and ``audio/x-alaw``, not documented) at 8,000 Hz only; any other
``sampleRate`` is a fatal ``ProtocolError("bad_field", "start.mediaFormat.sampleRate")``.

Lifecycle: ``AWAITING_START --start--> STREAMING --stop--> STOPPED``. ``media``/``dtmf``/``mark``
before ``start`` give ``ProtocolError("before_start")``; a second ``start`` or anything after
``stop`` gives ``ProtocolError("unexpected_event")``.
"""

from __future__ import annotations

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
    Media,
    ProtocolError,
    Started,
    Stopped,
)
from gateway.formats import AudioFormat, Encoding

__all__ = ["TwilioAdapter", "TwilioState", "DOC_URL"]

DOC_URL = "https://www.twilio.com/docs/voice/media-streams/websocket-messages"

#: Keys Twilio may use for ``start.mediaFormat.encoding`` (it documents only ``audio/x-mulaw``).
_ENCODINGS = {"audio/x-mulaw": Encoding.PCMU, "audio/x-alaw": Encoding.PCMA}
#: Sample rates per encoding: Twilio documents ``sampleRate: 8000`` only (G.711 is 8 kHz).
_RATES = {Encoding.PCMU: frozenset({8000}), Encoding.PCMA: frozenset({8000})}

#: The stream's lifecycle states (the carriers' shared :class:`StreamState`, under its old name).
TwilioState = StreamState

#: Transition table: (state, event) → next state. Pairs not listed are refused (see module doc).
_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (TwilioState.AWAITING_START, "connected"): TwilioState.AWAITING_START,
    (TwilioState.AWAITING_START, "start"): TwilioState.STREAMING,
    (TwilioState.AWAITING_START, "stop"): TwilioState.STOPPED,
    (TwilioState.STREAMING, "connected"): TwilioState.STREAMING,
    (TwilioState.STREAMING, "media"): TwilioState.STREAMING,
    (TwilioState.STREAMING, "dtmf"): TwilioState.STREAMING,
    (TwilioState.STREAMING, "mark"): TwilioState.STREAMING,
    (TwilioState.STREAMING, "stop"): TwilioState.STOPPED,
}


class TwilioAdapter(JsonEventStream):
    """Sans-I/O adapter for one Twilio Media Stream (one instance per call).

    Attributes:
        name: ``"twilio"``.
        audio_format: PCMU at 8,000 Hz once ``start`` arrived, else ``None``.
        frame_ms: 20 (Twilio sends 20 ms / 160-byte chunks; it accepts any size back).
        max_message_ms: 1,000: Twilio documents no limit on an outbound ``media`` payload
            ("any size"); 1 s (8 KB of μ-law) bounds one message.
        stream_sid: ``start.streamSid`` (``""`` before start).
        state: the :class:`TwilioState`.
    """

    name = "twilio"
    frame_ms = 20
    max_message_ms = 1000
    _transitions = _TRANSITIONS

    def __init__(self) -> None:
        super().__init__()
        self.audio_format: AudioFormat | None = None
        self.stream_sid = ""
        self._media_head: str | None = None  # '{"event":"media","streamSid":"MZ…","media":{"payload":"'
        self._clear: str | None = None

    # ------------------------------------------------------------------ inbound
    # receive() comes from JsonEventStream: JSON checks, the table above, then these handlers
    # (the _wire value helpers raise Refused on a bad field; receive returns its error).

    def _on_connected(self, msg: dict) -> CarrierEvent:
        protocol = msg.get("protocol")
        return Connected(protocol if type(protocol) is str else "")

    def _on_start(self, msg: dict) -> CarrierEvent:
        start = msg.get("start")
        if type(start) is not dict:
            return field_error("start", start)
        stream_sid = start.get("streamSid", msg.get("streamSid"))
        if type(stream_sid) is not str or not stream_sid:
            return field_error("start.streamSid", stream_sid)
        call_sid = start.get("callSid")
        if type(call_sid) is not str or not call_sid:
            return field_error("start.callSid", call_sid)
        account_sid = start.get("accountSid", "")
        if type(account_sid) is not str:
            return ProtocolError("bad_field", "start.accountSid")

        fmt = start.get("mediaFormat")
        if fmt is None:  # Twilio always sends it; its documented value is the default
            audio_format = AudioFormat(Encoding.PCMU, 8000)
        elif type(fmt) is not dict:
            return ProtocolError("bad_field", "start.mediaFormat")
        else:  # only what Twilio documents: 8 kHz G.711 (raises Refused otherwise)
            audio_format = stream_format(fmt, _ENCODINGS, _RATES, "start.mediaFormat", encoding_key="encoding",
                                         rate_key="sampleRate", default_encoding="audio/x-mulaw")  # fmt: skip
            if fmt.get("channels", 1) != 1:
                return ProtocolError("bad_field", "start.mediaFormat.channels")

        tracks = start.get("tracks", ["inbound"])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            return ProtocolError("bad_field", "start.tracks")
        params = start.get("customParameters") or {}
        if type(params) is not dict or not all(type(v) is str for v in params.values()):
            return ProtocolError("bad_field", "start.customParameters")

        self.stream_sid = stream_sid
        self.audio_format = audio_format
        sid_json = orjson.dumps(stream_sid).decode()
        self._media_head = '{"event":"media","streamSid":' + sid_json + ',"media":{"payload":"'
        self._clear = '{"event":"clear","streamSid":' + sid_json + "}"
        return check_started(Started(
            stream_id=stream_sid,
            call_id=call_sid,
            audio_format=audio_format,
            account_id=account_sid,
            tracks=tuple(tracks),
            custom_parameters=dict(params),
        ))

    def _on_media(self, msg: dict) -> CarrierEvent:
        media = msg.get("media")
        if type(media) is not dict:
            return field_error("media", media)
        audio = decode_payload(media, "media.payload")
        timestamp, sequence = media_position(media, msg, "sequenceNumber")
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

    def _on_stop(self, msg: dict) -> CarrierEvent:
        return Stopped()

    # ----------------------------------------------------------------- outbound

    def _require_started(self) -> None:
        if self._media_head is None:
            raise RuntimeError("twilio: no streamSid yet; send frames only after Started")

    def media(self, payload: bytes) -> str:
        """``{"event":"media","streamSid":…,"media":{"payload":<base64 payload>}}``.

        Args:
            payload: μ-law bytes at 8,000 Hz, any length, no file header.

        Raises:
            RuntimeError: before :class:`Started` (no streamSid to address).
        """
        head = self._media_head
        if head is None:
            self._require_started()
        return head + pybase64.b64encode_as_string(payload) + '"}}'

    def mark(self, name: str) -> str:
        """``{"event":"mark","streamSid":…,"mark":{"name":name}}``. Raises RuntimeError before start."""
        self._require_started()
        return orjson.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}).decode()

    def clear(self) -> str:
        """``{"event":"clear","streamSid":…}``. Raises RuntimeError before start."""
        self._require_started()
        return self._clear  # type: ignore[return-value]

    #: event → handler (JsonEventStream runs it when _TRANSITIONS allows the event).
    _handlers = {
        "connected": _on_connected,
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "mark": _on_mark,
        "stop": _on_stop,
    }
