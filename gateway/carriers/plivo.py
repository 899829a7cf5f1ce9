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

import enum

import orjson
import pybase64

from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Cleared,
    Dtmf,
    Frame,
    MarkAck,
    Media,
    ProtocolError,
    Started,
    Stopped,
    Unhandled,
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
_RATES = {Encoding.L16: frozenset({8000, 16000}), Encoding.PCMU: frozenset({8000})}
_DTMF_DIGITS = frozenset("0123456789*#ABCD")


class PlivoState(enum.Enum):
    """Where the stream is in its lifecycle."""

    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


_TRANSITIONS: dict[tuple[PlivoState, str], PlivoState] = {
    (PlivoState.AWAITING_START, "start"): PlivoState.STREAMING,
    (PlivoState.AWAITING_START, "stop"): PlivoState.STOPPED,
    (PlivoState.STREAMING, "media"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "dtmf"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "playedStream"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "played"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "clearedAudio"): PlivoState.STREAMING,
    (PlivoState.STREAMING, "stop"): PlivoState.STOPPED,
}


def _field_error(path: str, value: object) -> ProtocolError:
    return ProtocolError("missing_field" if value is None else "bad_field", path)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is int:
        return value
    if type(value) is str:
        return int(value)
    raise ValueError("not an integer")


def parse_extra_headers(text: str) -> dict[str, str]:
    """Plivo's ``extra_headers`` string as a dict.

    Accepts ``"a=1;b=2"`` (Plivo's example), ``"a=1,b=2"`` (the XML attribute's own syntax) and a
    JSON object string (``"{}"``). Pieces without ``=`` are skipped.
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
        return {k: v if type(v) is str else orjson.dumps(v).decode() for k, v in obj.items()}
    out: dict[str, str] = {}
    for part in text.replace(",", ";").split(";"):
        key, sep, value = part.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = value.strip()
    return out


class PlivoAdapter:
    """Sans-I/O adapter for one Plivo audio stream (one instance per call).

    Attributes:
        name: ``"plivo"``.
        audio_format: from ``start.mediaFormat`` (L16 at 8 kHz if absent); ``None`` before start.
        frame_ms: 20.
        stream_id: ``start.streamId``.
        state: the :class:`PlivoState`.
    """

    name = "plivo"
    frame_ms = 20

    def __init__(self) -> None:
        self.audio_format: AudioFormat | None = None
        self.stream_id = ""
        self.state = PlivoState.AWAITING_START
        self._play_head: str | None = None  # '{"event":"playAudio","media":{…,"payload":"'
        self._clear: str | None = None
        self._first_ts: int | None = None

    # ------------------------------------------------------------------ inbound

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one WebSocket message into events. Never raises (see module doc for errors).

        A bug in this parser surfaces as ``ProtocolError("internal", <exception type>)``.
        """
        try:
            return [self._receive(frame)]
        except Exception as exc:  # a parser bug must not end the call
            return [ProtocolError("internal", f"{type(exc).__name__} while parsing")]

    def _receive(self, frame: Frame) -> CarrierEvent:
        if type(frame) is not str:
            if isinstance(frame, (bytes, bytearray, memoryview)):
                return ProtocolError("unexpected_binary", f"{len(frame)} bytes")
            return ProtocolError("bad_field", f"frame of type {type(frame).__name__}")
        if len(frame) > MAX_FRAME_BYTES:
            return ProtocolError("oversize", f"{len(frame)} chars > {MAX_FRAME_BYTES}")
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return ProtocolError("malformed_json", f"{len(frame)} chars")
        if type(msg) is not dict:
            return ProtocolError("malformed_json", "not a JSON object")
        event = msg.get("event")
        if type(event) is not str:
            return _field_error("event", event)
        if event == "media" and self.state is PlivoState.STREAMING:
            return self._on_media(msg)
        handler = _HANDLERS.get(event)
        if handler is None:
            return Unhandled(event[:64])
        next_state = _TRANSITIONS.get((self.state, event))
        if next_state is None:
            if self.state is PlivoState.AWAITING_START:
                return ProtocolError("before_start", event)
            return ProtocolError("unexpected_event", f"{event} in state {self.state.value}")
        result = handler(self, msg)
        if not isinstance(result, ProtocolError):
            self.state = next_state
        return result

    def _on_start(self, msg: dict) -> CarrierEvent:
        start = msg.get("start")
        if type(start) is not dict:
            return _field_error("start", start)
        stream_id = start.get("streamId", msg.get("streamId"))
        if type(stream_id) is not str or not stream_id:
            return _field_error("start.streamId", stream_id)
        call_id = start.get("callId")
        if type(call_id) is not str or not call_id:
            return _field_error("start.callId", call_id)
        account_id = start.get("accountId", "")
        if type(account_id) is not str:
            return ProtocolError("bad_field", "start.accountId")

        fmt = start.get("mediaFormat")
        if fmt is None:  # Plivo's documented default contentType
            audio_format = AudioFormat(Encoding.L16, 8000)
        elif type(fmt) is not dict:
            return ProtocolError("bad_field", "start.mediaFormat")
        else:
            encoding = _ENCODINGS.get(str(fmt.get("encoding", "audio/x-l16")).lower())
            if encoding is None:
                return ProtocolError("bad_field", "start.mediaFormat.encoding")
            try:
                rate = _opt_int(fmt.get("sampleRate", 8000))
            except ValueError:
                rate = None
            if rate not in _RATES[encoding]:
                return ProtocolError("bad_field", "start.mediaFormat.sampleRate")
            audio_format = AudioFormat(encoding, rate)  # type: ignore[arg-type]

        tracks = start.get("tracks", ["inbound"])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            return ProtocolError("bad_field", "start.tracks")
        extra = msg.get("extra_headers", "")
        if type(extra) is dict:
            params = {k: v if type(v) is str else orjson.dumps(v).decode() for k, v in extra.items()}
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
        return Started(
            stream_id=stream_id,
            call_id=call_id,
            audio_format=audio_format,
            account_id=account_id,
            tracks=tuple(tracks),
            custom_parameters=params,
        )

    def _on_media(self, msg: dict) -> CarrierEvent:
        media = msg.get("media")
        if type(media) is not dict:
            return _field_error("media", media)
        payload = media.get("payload")
        if type(payload) is not str:
            return _field_error("media.payload", payload)
        try:
            audio = pybase64.b64decode(payload, validate=True)
        except ValueError:
            return ProtocolError("bad_base64", f"media.payload ({len(payload)} chars)")
        if len(audio) & 1 and self.audio_format is not None and self.audio_format.encoding is Encoding.L16:
            return ProtocolError("bad_field", f"media.payload: odd L16 length {len(audio)}")
        try:
            ts = _opt_int(media.get("timestamp"))
        except ValueError:
            return ProtocolError("bad_field", "media.timestamp")
        if ts is not None:
            if self._first_ts is None:
                self._first_ts = ts
            ts -= self._first_ts
        try:
            chunk = _opt_int(media.get("chunk"))
            sequence = chunk if chunk is not None else _opt_int(msg.get("sequenceNumber"))
        except ValueError:
            return ProtocolError("bad_field", "media.chunk")
        track = media.get("track", "inbound")
        return Media(audio, ts, sequence, track if type(track) is str else "inbound")

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if type(dtmf) is dict else msg.get("digit")
        if type(digit) is not str or digit not in _DTMF_DIGITS:
            return _field_error("dtmf.digit", digit)
        return Dtmf(digit)

    def _on_played(self, msg: dict) -> CarrierEvent:
        name = msg.get("name")
        if type(name) is not str:
            return _field_error("name", name)
        return MarkAck(name)

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
        if not digits or any(d not in _DTMF_DIGITS for d in digits):
            raise ValueError("plivo: DTMF digits must be 0-9, *, #, A-D")
        return orjson.dumps({"event": "sendDTMF", "dtmf": digits}).decode()


_HANDLERS = {
    "start": PlivoAdapter._on_start,
    "media": PlivoAdapter._on_media,
    "dtmf": PlivoAdapter._on_dtmf,
    "playedStream": PlivoAdapter._on_played,
    "played": PlivoAdapter._on_played,
    "clearedAudio": PlivoAdapter._on_cleared,
    "stop": PlivoAdapter._on_stop,
}
