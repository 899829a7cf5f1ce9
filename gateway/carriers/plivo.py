"""Plivo Audio Streams adapter (XML ``<Stream bidirectional="true">``).

Source: https://plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference
(and https://plivo.com/docs/voice/audio-streaming/audio-streaming, the checkpoint page
https://plivo.com/docs/voice/xml/the-stream-element/checkpoint-event).

Wire protocol (JSON text frames; ``sequenceNumber`` and ``media.chunk`` are **numbers**):

* In: ``start`` (``start.callId``, ``start.streamId``, ``start.accountId``, ``start.tracks``,
  ``start.mediaFormat{encoding, sampleRate}``, top-level ``extra_headers`` string from the XML
  ``extraHeaders`` attribute); ``media`` (``media.track``, ``media.timestamp`` = Unix time in ms
  as a string, ``media.chunk``, ``media.payload`` base64, ~20 ms); ``dtmf`` (``dtmf.digit``);
  ``playedStream`` (``name``: the checkpoint was reached) → :class:`MarkAck`; ``clearedAudio`` →
  :class:`Cleared`. There is no ``connected`` and no documented ``stop`` (the socket closes);
  a ``stop`` is accepted anyway.
* Out: ``{"event":"playAudio","media":{"contentType":…,"sampleRate":…,"payload":…}}``,
  ``{"event":"checkpoint","streamId":…,"name":…}``, ``{"event":"clearAudio","streamId":…}``,
  and (extra) ``{"event":"sendDTMF","dtmf":"12#"}`` via :meth:`PlivoAdapter.send_dtmf`.

Formats: ``audio/x-l16`` at 8,000 (Plivo's default) or 16,000 Hz, ``audio/x-mulaw`` at 8,000 Hz;
``playAudio`` must repeat the stream's content type and rate.

UNCERTAIN: one Plivo support article names the checkpoint reply ``played`` instead of
``playedStream``: both are accepted. The byte order of ``audio/x-l16`` is not documented; it is
taken as little-endian (what Plivo's SDK examples pass straight to PCM consumers).
:attr:`Media.timestamp_ms` is made relative to the first media message, since Plivo sends
wall-clock time; :attr:`Media.sequence` is ``media.chunk`` (else ``sequenceNumber``).

Lifecycle: ``AWAITING_START --start--> STREAMING --stop--> STOPPED``; media, dtmf and
acknowledgements before ``start`` are ``before_start``; a second ``start`` is ``unexpected_event``.
"""

from __future__ import annotations

import orjson
import pybase64

from gateway.carriers._wire import (
    check_started,
    DTMF_DIGITS,
    JsonEventStream,
    Refused,
    StreamState,
    decode_payload,
    dtmf_event,
    field_error,
    mark_ack,
    check_depth,
    media_position,
    stream_format,
    text_values,
)
from gateway.carriers.events import (
    CarrierEvent,
    Cleared,
    Media,
    ProtocolError,
    Started,
    Stopped,
)
from gateway.formats import AudioFormat, Encoding

__all__ = ["PlivoAdapter", "PlivoState", "DOC_URL", "parse_extra_headers"]

DOC_URL = "https://plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference"

_ENCODINGS = {
    "audio/x-l16": Encoding.L16,
    "audio/l16": Encoding.L16,
    "l16": Encoding.L16,
    "audio/x-mulaw": Encoding.PCMU,
    "pcmu": Encoding.PCMU,
}
_CONTENT_TYPES = {Encoding.L16: "audio/x-l16", Encoding.PCMU: "audio/x-mulaw"}
#: Documented contentTypes: audio/x-l16;rate=8000 (default), audio/x-l16;rate=16000,
#: audio/x-mulaw;rate=8000.
_RATES = {Encoding.L16: frozenset({8000, 16000}), Encoding.PCMU: frozenset({8000})}

#: The stream's lifecycle states (the carriers' shared :class:`StreamState`, under its old name).
PlivoState = StreamState

_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (PlivoState.AWAITING_START, "start"): PlivoState.STREAMING,
    (PlivoState.AWAITING_START, "stop"): PlivoState.STOPPED,
    (PlivoState.STREAMING, "media"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "dtmf"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "playedStream"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "played"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "clearedAudio"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "stop"): PlivoState.STOPPED,
}


def parse_extra_headers(text: str) -> dict[str, str]:
    """Plivo's ``extra_headers`` string as a dict.

    Accepts ``"a=1;b=2"`` (Plivo's example), ``"a=1,b=2"`` (the XML attribute's own syntax) and a
    JSON object string (``"{}"``; not an object, or nested more than ``MAX_DEPTH`` levels:
    ``{}``). Pieces without ``=`` are skipped.
    """
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return {}
        if type(obj) is not dict:
            return {}
        try:
            check_depth(obj)
        except Refused:
            return {}
        return text_values(obj)
    out: dict[str, str] = {}
    for part in text.replace(",", ";").split(";"):
        key, sep, value = part.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = value.strip()
    return out


class PlivoAdapter(JsonEventStream):
    """Sans-I/O adapter for one Plivo audio stream (one instance per call).

    Attributes:
        name: ``"plivo"``.
        audio_format: from ``start.mediaFormat`` (L16 at 8 kHz if absent); ``None`` before start.
        frame_ms: 20.
        max_message_ms: 1,000: Plivo documents no size limit on ``playAudio`` (base64 raw
            audio of any length); 1 s bounds one message.
        stream_id: ``start.streamId``.
        state: the :class:`PlivoState`.
    """

    name = "plivo"
    frame_ms = 20
    max_message_ms = 1000
    _transitions = _TRANSITIONS

    def __init__(self) -> None:
        super().__init__()
        self.audio_format: AudioFormat | None = None
        self.stream_id = ""
        self._play_head: str | None = None  # '{"event":"playAudio","media":{…,"payload":"'
        self._clear: str | None = None
        self._first_ts: int | None = None

    # ------------------------------------------------------------------ inbound

    # receive() comes from JsonEventStream: JSON checks, the table above, then these handlers
    # (the _wire value helpers raise Refused on a bad field; receive returns its error).

    def _on_start(self, msg: dict) -> CarrierEvent:
        start = msg.get("start")
        if type(start) is not dict:
            return field_error("start", start)
        stream_id = start.get("streamId", msg.get("streamId"))
        if type(stream_id) is not str or not stream_id:
            return field_error("start.streamId", stream_id)
        call_id = start.get("callId")
        if type(call_id) is not str or not call_id:
            return field_error("start.callId", call_id)
        account_id = start.get("accountId", "")
        if type(account_id) is not str:
            return ProtocolError("bad_field", "start.accountId")

        fmt = start.get("mediaFormat")
        if fmt is None:  # Plivo's documented default contentType
            audio_format = AudioFormat(Encoding.L16, 8000)
        elif type(fmt) is not dict:
            return ProtocolError("bad_field", "start.mediaFormat")
        else:  # only the documented contentTypes (raises Refused otherwise)
            audio_format = stream_format(fmt, _ENCODINGS, _RATES, "start.mediaFormat", encoding_key="encoding",
                                         rate_key="sampleRate", default_encoding="audio/x-l16")  # fmt: skip

        tracks = start.get("tracks", ["inbound"])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            return ProtocolError("bad_field", "start.tracks")
        extra = msg.get("extra_headers", "")
        if type(extra) is dict:
            params = text_values(extra)
        elif type(extra) is str:
            params = parse_extra_headers(extra)
        else:
            return ProtocolError("bad_field", "extra_headers")

        self.stream_id = stream_id
        self.audio_format = audio_format
        head = orjson.dumps(
            {
                "event": "playAudio",
                "media": {
                    "contentType": _CONTENT_TYPES[audio_format.encoding],
                    "sampleRate": audio_format.sample_rate,
                    "payload": "",
                },
            }
        ).decode()
        self._play_head = head[: -len('"}}')]  # ends with "payload":"
        self._clear = orjson.dumps({"event": "clearAudio", "streamId": stream_id}).decode()
        return check_started(Started(
            stream_id=stream_id,
            call_id=call_id,
            audio_format=audio_format,
            account_id=account_id,
            tracks=tuple(tracks),
            custom_parameters=params,
        ))

    def _on_media(self, msg: dict) -> CarrierEvent:
        media = msg.get("media")
        if type(media) is not dict:
            return field_error("media", media)
        audio = decode_payload(media, "media.payload")
        if len(audio) & 1 and self.audio_format is not None and self.audio_format.encoding is Encoding.L16:
            return ProtocolError("bad_field", f"media.payload: odd L16 length {len(audio)}")
        ts, sequence = media_position(media, msg, "sequenceNumber")
        if ts is not None:  # wall-clock ms: made relative to the first media message
            if self._first_ts is None:
                self._first_ts = ts
            ts -= self._first_ts
        track = media.get("track", "inbound")
        return Media(audio, ts, sequence, track if type(track) is str else "inbound")

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if type(dtmf) is dict else msg.get("digit")
        return dtmf_event(digit, "dtmf.digit")

    def _on_played(self, msg: dict) -> CarrierEvent:
        return mark_ack(msg.get("name"), "name")

    def _on_cleared(self, msg: dict) -> CarrierEvent:
        return Cleared()

    def _on_stop(self, msg: dict) -> CarrierEvent:
        stop = msg.get("stop")
        reason = stop.get("reason", "") if type(stop) is dict else ""
        return Stopped(reason[:64] if type(reason) is str else "")

    # ----------------------------------------------------------------- outbound

    def _require_started(self) -> None:
        if self._play_head is None:
            raise RuntimeError("plivo: no stream yet; send frames only after Started")

    def media(self, payload: bytes) -> str:
        """``{"event":"playAudio","media":{"contentType":…,"sampleRate":…,"payload":<base64>}}``.

        Args:
            payload: audio in ``audio_format`` (content type and rate repeat the stream's).

        Raises:
            RuntimeError: before :class:`Started`.
        """
        head = self._play_head
        if head is None:
            self._require_started()
        return head + pybase64.b64encode_as_string(payload) + '"}}'

    def mark(self, name: str) -> str:
        """``{"event":"checkpoint","streamId":…,"name":name}``; Plivo answers ``playedStream``."""
        self._require_started()
        return orjson.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name}).decode()

    def clear(self) -> str:
        """``{"event":"clearAudio","streamId":…}``; Plivo answers ``clearedAudio``."""
        self._require_started()
        return self._clear  # type: ignore[return-value]

    def send_dtmf(self, digits: str) -> str:
        """``{"event":"sendDTMF","dtmf":digits}``: Plivo plays the tones into the call.

        Raises:
            ValueError: ``digits`` is empty or holds a character that is not a DTMF key.
        """
        if not digits or any(d not in DTMF_DIGITS for d in digits):
            raise ValueError("plivo: DTMF digits must be 0-9, *, #, A-D")
        return orjson.dumps({"event": "sendDTMF", "dtmf": digits}).decode()

    #: event → handler (JsonEventStream runs it when _TRANSITIONS allows the event).
    _handlers = {
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "playedStream": _on_played,
        "played": _on_played,
        "clearedAudio": _on_cleared,
        "stop": _on_stop,
    }
