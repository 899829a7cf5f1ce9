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
    text_values,
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
#: L16 at 8 kHz (default) or 16 / 24 kHz (``?sample-rate=`` on the stream URL); μ-law is 8 kHz.
_RATES = {Encoding.L16: frozenset({8000, 16000, 24000}), Encoding.PCMU: frozenset({8000})}

#: The stream's lifecycle states (the carriers' shared :class:`StreamState`, under its old name).
ExotelState = StreamState

_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (ExotelState.AWAITING_START, "connected"): ExotelState.AWAITING_START,
    (ExotelState.AWAITING_START, "start"): ExotelState.STREAMING,
    (ExotelState.AWAITING_START, "stop"): ExotelState.STOPPED,
    (ExotelState.STREAMING, "connected"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "media"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "dtmf"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "mark"): ExotelState.STREAMING,
    (ExotelState.STREAMING, "stop"): ExotelState.STOPPED,
}


def chunk_ms(audio_format: AudioFormat) -> int:
    """Shortest multiple of 20 ms whose byte size is a multiple of 320 and at least 3,200."""
    ms = 20
    while True:
        n = audio_format.bytes_for_ms(ms)
        if n >= MIN_CHUNK and n % CHUNK_ALIGN == 0:
            return ms
        ms += 20


class ExotelAdapter(JsonEventStream):
    """Sans-I/O adapter for one Exotel Voicebot stream (one instance per call).

    Attributes:
        name: ``"exotel"``.
        audio_format: from ``start.media_format`` (L16 at 8 kHz if absent); ``None`` before start.
        frame_ms: outbound chunk duration (see module doc); 200 until start says otherwise.
        max_message_ms: ``frame_ms``: one chunk per message (it already carries ≥ 3.2 KB,
            80–200 ms, the documented minimum).
        stream_sid: ``stream_sid`` of ``start``.
        state: the :class:`ExotelState`.
    """

    name = "exotel"
    _transitions = _TRANSITIONS

    def __init__(self) -> None:
        super().__init__()
        self.audio_format: AudioFormat | None = None
        self.frame_ms = chunk_ms(AudioFormat(Encoding.L16, 8000))
        self.max_message_ms = self.frame_ms
        self.stream_sid = ""
        self._media_head: str | None = None
        self._clear: str | None = None

    # ------------------------------------------------------------------ inbound

    # receive() comes from JsonEventStream: JSON checks, the table above, then these handlers
    # (the _wire value helpers raise Refused on a bad field; receive returns its error).

    def _on_connected(self, msg: dict) -> CarrierEvent:
        return Connected()

    def _on_start(self, msg: dict) -> CarrierEvent:
        start = msg.get("start")
        if type(start) is not dict:
            return field_error("start", start)
        stream_sid = msg.get("stream_sid", start.get("stream_sid"))
        if type(stream_sid) is not str or not stream_sid:
            return field_error("stream_sid", stream_sid)
        call_sid = start.get("call_sid")
        if type(call_sid) is not str or not call_sid:
            return field_error("start.call_sid", call_sid)

        fmt = start.get("media_format")
        if fmt is None:
            audio_format = AudioFormat(Encoding.L16, 8000)
        elif type(fmt) is not dict:
            return ProtocolError("bad_field", "start.media_format")
        else:  # only the documented formats (raises Refused otherwise)
            audio_format = stream_format(fmt, _ENCODINGS, _RATES, "start.media_format", encoding_key="encoding",
                                         rate_key="sample_rate", default_encoding="audio/x-raw")  # fmt: skip

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
        custom = text_values(params)

        self.stream_sid = stream_sid
        self.audio_format = audio_format
        self.frame_ms = self.max_message_ms = chunk_ms(audio_format)
        sid_json = orjson.dumps(stream_sid).decode()
        self._media_head = '{"event":"media","stream_sid":' + sid_json + ',"media":{"payload":"'
        self._clear = '{"event":"clear","stream_sid":' + sid_json + "}"
        return check_started(Started(
            stream_id=stream_sid,
            call_id=call_sid,
            audio_format=audio_format,
            account_id=texts["account_sid"],
            from_number=texts["from"],
            to_number=texts["to"],
            custom_parameters=custom,
        ))

    def _on_media(self, msg: dict) -> CarrierEvent:
        media = msg.get("media")
        if type(media) is not dict:
            return field_error("media", media)
        audio = decode_payload(media, "media.payload")
        if len(audio) & 1 and self.audio_format is not None and self.audio_format.encoding is Encoding.L16:
            return ProtocolError("bad_field", f"media.payload: odd L16 length {len(audio)}")
        timestamp, sequence = media_position(media, msg, "sequence_number")
        return Media(audio, timestamp, sequence)

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        dtmf = msg.get("dtmf")
        if type(dtmf) is not dict:
            return field_error("dtmf", dtmf)
        digit = dtmf.get("digit")
        if type(digit) is int and 0 <= digit <= 9:  # tolerate a number
            digit = str(digit)
        return dtmf_event(digit, "dtmf.digit")

    def _on_mark(self, msg: dict) -> CarrierEvent:
        mark = msg.get("mark")
        if type(mark) is not dict:
            return field_error("mark", mark)
        return mark_ack(mark.get("name"), "mark.name")

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

    #: event → handler (JsonEventStream runs it when _TRANSITIONS allows the event).
    _handlers = {
        "connected": _on_connected,
        "start": _on_start,
        "media": _on_media,
        "dtmf": _on_dtmf,
        "mark": _on_mark,
        "stop": _on_stop,
    }
