"""Exotel AgentStream adapter (Voicebot applet: bidirectional WebSocket stream).

Source: https://developer.exotel.com/docs/agentstream/websocket-protocol and
https://developer.exotel.com/docs/agentstream/stream-voicebot-applet (chunk-size rules).

Wire protocol (JSON text frames; Twilio-like, snake_case):

* In: ``connected``; ``start`` (``stream_sid`` at the top level and in ``start``,
  ``start.call_sid``, ``start.account_sid``, ``start.from``, ``start.to``,
  ``start.custom_parameters``, ``start.media_format{encoding, sample_rate, bit_rate}``);
  ``media`` (``media.chunk``, ``media.timestamp``, ``media.payload`` = base64 audio);
  ``dtmf`` (``dtmf.digit``, ``dtmf.duration``); ``mark`` (``mark.name``, echoed once the audio
  before it played); ``stop`` (``stop.reason``: ``stopped`` or ``callended``).
* Out: ``{"event":"media","stream_sid":…,"media":{"payload":…}}``,
  ``{"event":"mark","stream_sid":…,"mark":{"name":…}}``, ``{"event":"clear","stream_sid":…}``.

Audio: raw/slin — 16-bit little-endian mono PCM, 8 kHz by default (``?sample-rate=16000`` or
``24000`` on the stream URL). UNCERTAIN: Exotel pages disagree (some mention μ-law); this adapter
trusts ``start.media_format.encoding`` and defaults to L16. ``sequence_number``, ``chunk`` and
``sample_rate`` arrive as strings on some pages and numbers on others: both are accepted.

Outbound chunks must be a **multiple of 320 bytes**, at least 3.2 KB (smaller ones risk jitter)
and at most 100 KB. :attr:`ExotelAdapter.frame_ms` is therefore the shortest multiple of 20 ms
meeting both rules for the negotiated format: 200 ms for L16 at 8 kHz, 100 ms at 16 kHz, 80 ms
at 24 kHz.

Lifecycle as for Twilio: ``AWAITING_START --start--> STREAMING --stop--> STOPPED``.
"""

from __future__ import annotations

import enum

import orjson
import pybase64

from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Connected,
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

__all__ = ["ExotelAdapter", "ExotelState", "DOC_URL", "CHUNK_ALIGN", "MIN_CHUNK", "MAX_CHUNK", "chunk_ms"]

DOC_URL = "https://developer.exotel.com/docs/agentstream/websocket-protocol"

CHUNK_ALIGN = 320  #: outbound payload bytes must be a multiple of this
MIN_CHUNK = 3200  #: recommended smallest outbound payload (bytes)
MAX_CHUNK = 100_000  #: largest outbound payload (bytes)

_ENCODINGS = {
    "audio/x-raw": Encoding.L16,
    "raw": Encoding.L16,
    "slin": Encoding.L16,
    "pcm16": Encoding.L16,
    "l16": Encoding.L16,
    "audio/x-l16": Encoding.L16,
    "audio/l16": Encoding.L16,
    "linear16": Encoding.L16,
    "audio/x-mulaw": Encoding.PCMU,
    "mulaw": Encoding.PCMU,
    "ulaw": Encoding.PCMU,
    "pcmu": Encoding.PCMU,
}
_RATES = frozenset({8000, 16000, 24000})
_DTMF_DIGITS = frozenset("0123456789*#ABCD")


class ExotelState(enum.Enum):
    """Where the stream is in its lifecycle."""

    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


_TRANSITIONS: dict[tuple[ExotelState, str], ExotelState] = {
    (ExotelState.AWAITING_START, "connected"): ExotelState.AWAITING_START,
    (ExotelState.AWAITING_START, "start"): ExotelState.STREAMING,
    (ExotelState.AWAITING_START, "stop"): ExotelState.STOPPED,
    (ExotelState.STREAMING, "connected"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "media"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "dtmf"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "mark"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "stop"): ExotelState.STOPPED,
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


def chunk_ms(audio_format: AudioFormat) -> int:
    """Shortest multiple of 20 ms whose byte size is a multiple of 320 and at least 3,200."""
    ms = 20
    while True:
        n = audio_format.bytes_for_ms(ms)
        if n >= MIN_CHUNK and n % CHUNK_ALIGN == 0:
            return ms
        ms += 20


class ExotelAdapter:
    """Sans-I/O adapter for one Exotel Voicebot stream (one instance per call).

    Attributes:
        name: ``"exotel"``.
        audio_format: from ``start.media_format`` (L16 at 8 kHz if absent); ``None`` before start.
        frame_ms: outbound chunk duration (see module doc); 200 until start says otherwise.
        stream_sid: ``stream_sid`` of ``start``.
        state: the :class:`ExotelState`.
    """

    name = "exotel"

    def __init__(self) -> None:
        self.audio_format: AudioFormat | None = None
        self.frame_ms = chunk_ms(AudioFormat(Encoding.L16, 8000))
        self.stream_sid = ""
        self.state = ExotelState.AWAITING_START
        self._media_head: str | None = None
        self._clear: str | None = None

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
        if event == "media" and self.state is ExotelState.STREAMING:
            return self._on_media(msg)
        handler = _HANDLERS.get(event)
        if handler is None:
            return Unhandled(event[:64])
        next_state = _TRANSITIONS.get((self.state, event))
        if next_state is None:
            if self.state is ExotelState.AWAITING_START:
                return ProtocolError("before_start", event)
            return ProtocolError("unexpected_event", f"{event} in state {self.state.value}")
        result = handler(self, msg)
        if not isinstance(result, ProtocolError):
            self.state = next_state
        return result

    def _on_connected(self, msg: dict) -> CarrierEvent:
        return Connected()

    def _on_start(self, msg: dict) -> CarrierEvent:
        start = msg.get("start")
        if type(start) is not dict:
            return _field_error("start", start)
        stream_sid = msg.get("stream_sid", start.get("stream_sid"))
        if type(stream_sid) is not str or not stream_sid:
            return _field_error("stream_sid", stream_sid)
        call_sid = start.get("call_sid")
        if type(call_sid) is not str or not call_sid:
            return _field_error("start.call_sid", call_sid)

        fmt = start.get("media_format")
        if fmt is None:
            audio_format = AudioFormat(Encoding.L16, 8000)
        elif type(fmt) is not dict:
            return ProtocolError("bad_field", "start.media_format")
        else:
            encoding = _ENCODINGS.get(str(fmt.get("encoding", "audio/x-raw")).lower())
            if encoding is None:
                return ProtocolError("bad_field", "start.media_format.encoding")
            try:
                rate = _opt_int(fmt.get("sample_rate", 8000))
            except ValueError:
                rate = None
            if rate not in _RATES:
                return ProtocolError("bad_field", "start.media_format.sample_rate")
            audio_format = AudioFormat(encoding, rate)  # type: ignore[arg-type]

        texts = {}
        for key in ("account_sid", "from", "to"):
            value = start.get(key, "")
            if type(value) is not str:
                return ProtocolError("bad_field", f"start.{key}")
            texts[key] = value
        params = start.get("custom_parameters") or {}
        if type(params) is not dict:
            return ProtocolError("bad_field", "start.custom_parameters")
        # Values should be strings (they come from the stream URL's query); keep numbers as text.
        custom = {k: v if type(v) is str else orjson.dumps(v).decode() for k, v in params.items()}

        self.stream_sid = stream_sid
        self.audio_format = audio_format
        self.frame_ms = chunk_ms(audio_format)
        sid_json = orjson.dumps(stream_sid).decode()
        self._media_head = '{"event":"media","stream_sid":' + sid_json + ',"media":{"payload":"'
        self._clear = '{"event":"clear","stream_sid":' + sid_json + "}"
        return Started(
            stream_id=stream_sid,
            call_id=call_sid,
            audio_format=audio_format,
            account_id=texts["account_sid"],
            from_number=texts["from"],
            to_number=texts["to"],
            custom_parameters=custom,
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
            timestamp = _opt_int(media.get("timestamp"))
        except ValueError:
            return ProtocolError("bad_field", "media.timestamp")
        try:
            chunk = _opt_int(media.get("chunk"))
            sequence = chunk if chunk is not None else _opt_int(msg.get("sequence_number"))
        except ValueError:
            return ProtocolError("bad_field", "media.chunk")
        return Media(audio, timestamp, sequence)

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        dtmf = msg.get("dtmf")
        if type(dtmf) is not dict:
            return _field_error("dtmf", dtmf)
        digit = dtmf.get("digit")
        if type(digit) is int and 0 <= digit <= 9:  # tolerate a number
            digit = str(digit)
        if type(digit) is not str or digit not in _DTMF_DIGITS:
            return _field_error("dtmf.digit", digit)
        return Dtmf(digit)

    def _on_mark(self, msg: dict) -> CarrierEvent:
        mark = msg.get("mark")
        if type(mark) is not dict:
            return _field_error("mark", mark)
        name = mark.get("name")
        if type(name) is not str:
            return _field_error("mark.name", name)
        return MarkAck(name)

    def _on_stop(self, msg: dict) -> CarrierEvent:
        stop = msg.get("stop")
        reason = stop.get("reason", "") if type(stop) is dict else ""
        return Stopped(reason[:64] if type(reason) is str else "")

    # ----------------------------------------------------------------- outbound

    def _require_started(self) -> None:
        if self._media_head is None:
            raise RuntimeError("exotel: no stream_sid yet; send frames only after Started")

    def media(self, payload: bytes) -> str:
        """``{"event":"media","stream_sid":…,"media":{"payload":<base64>}}``.

        Args:
            payload: audio in ``audio_format``; a multiple of 320 bytes, at most 100 KB
                (``frame_ms`` worth is the intended size).

        Raises:
            RuntimeError: before :class:`Started`.
            ValueError: the size breaks Exotel's chunk rules (pad the last chunk with silence).
        """
        head = self._media_head
        if head is None:
            self._require_started()
        n = len(payload)
        if n % CHUNK_ALIGN or n > MAX_CHUNK or n == 0:
            raise ValueError(f"exotel: chunk of {n} bytes; need a multiple of {CHUNK_ALIGN}, ≤ {MAX_CHUNK}")
        return head + pybase64.b64encode_as_string(payload) + '"}}'

    def mark(self, name: str) -> str:
        """``{"event":"mark","stream_sid":…,"mark":{"name":name}}``. Raises RuntimeError before start."""
        self._require_started()
        return orjson.dumps({"event": "mark", "stream_sid": self.stream_sid, "mark": {"name": name}}).decode()

    def clear(self) -> str:
        """``{"event":"clear","stream_sid":…}``: drops audio Exotel has not played yet."""
        self._require_started()
        return self._clear  # type: ignore[return-value]


_HANDLERS = {
    "connected": ExotelAdapter._on_connected,
    "start": ExotelAdapter._on_start,
    "media": ExotelAdapter._on_media,
    "dtmf": ExotelAdapter._on_dtmf,
    "mark": ExotelAdapter._on_mark,
    "stop": ExotelAdapter._on_stop,
}
