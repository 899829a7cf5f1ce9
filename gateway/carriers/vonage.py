"""Vonage Voice API WebSocket adapter (NCCO ``connect`` with a ``websocket`` endpoint).

Source: https://developer.vonage.com/en/voice/voice-api/concepts/websockets
(NCCO: https://developer.vonage.com/en/voice/voice-api/ncco-reference).

Wire protocol:

* In, first: a **text** frame ``{"event":"websocket:connected","content-type":"audio/l16;rate=16000",
  …}`` where ``…`` are the NCCO endpoint's ``headers``, flattened to the top level. It yields
  :class:`Connected` then :class:`Started` (custom parameters = those headers; no call or stream
  id is sent unless the NCCO put one in its headers).
* In, then: **binary** frames of 16-bit little-endian mono PCM at the negotiated rate, 20 ms each
  (320 bytes at 8 kHz, 640 at 16 kHz) → :class:`Media`; text frames
  ``{"event":"websocket:dtmf","digit":"5","duration":260}`` → :class:`Dtmf`,
  ``{"event":"websocket:notify","payload":{"name":…}}`` → :class:`MarkAck`,
  ``{"event":"websocket:cleared"}`` → :class:`Cleared`. There is no stop message: the socket closes.
* Out: binary frames of **exactly** 20 ms (other sizes get the socket closed; Vonage buffers
  about 60 s); ``{"action":"notify","payload":{"name":…}}`` is echoed as ``websocket:notify`` when
  playback reaches it (our mark); ``{"action":"clear"}`` empties the buffer → ``websocket:cleared``.

UNCERTAIN: the DTMF message shape differs between Vonage pages (top-level ``digit`` in the
WebSocket guide, ``dtmf.digit`` elsewhere): both are accepted. The ``notify`` payload is any
JSON object that Vonage echoes back; this adapter puts the mark name in ``payload.name``.
Rates: 8,000 and 16,000 Hz are documented for the socket, 24,000 in newer NCCO pages.

Lifecycle: ``AWAITING_CONNECTED --websocket:connected--> STREAMING``; audio or events before the
first text frame are ``before_start``; a second ``websocket:connected`` is ``unexpected_event``.
A refused ``websocket:connected`` (no content-type, a rate not listed above) is a fatal
``ProtocolError``: the stream has no usable format.
"""

from __future__ import annotations

import enum

import orjson

from gateway.carriers._wire import (
    check_started,
    Refused,
    check_depth,
    decimal_int,
    dtmf_event,
    field_error,
    frame_type_error,
    internal_error,
    mark_ack,
    parse_text,
    refuse_start,
    text_values,
)
from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Cleared,
    Connected,
    Frame,
    Media,
    ProtocolError,
    Started,
    Unhandled,
)
from gateway.formats import AudioFormat, Encoding

__all__ = ["VonageAdapter", "VonageState", "DOC_URL", "parse_content_type"]

DOC_URL = "https://developer.vonage.com/en/voice/voice-api/concepts/websockets"

_RATES = frozenset({8000, 16000, 24000})
_CLEAR = '{"action":"clear"}'


class VonageState(enum.Enum):
    """Where the stream is in its lifecycle (Vonage has no stop message)."""

    AWAITING_CONNECTED = "awaiting_connected"
    STREAMING = "streaming"


def parse_content_type(value: str) -> int | None:
    """Sample rate of ``audio/l16;rate=16000`` (case and spaces ignored); None if not L16.

    The rate must be ASCII digits (``rate=１６０００`` or ``rate=²`` is None, not an error).
    """
    kind, _, params = value.replace(" ", "").lower().partition(";")
    if kind != "audio/l16":
        return None
    for param in params.split(";"):
        key, _, rate = param.partition("=")
        if key == "rate":
            return decimal_int(rate)
    return None


class VonageAdapter:
    """Sans-I/O adapter for one Vonage WebSocket call leg (one instance per call).

    Attributes:
        name: ``"vonage"``.
        audio_format: L16 at the ``content-type`` rate; ``None`` before ``websocket:connected``.
        frame_ms: 20 (Vonage accepts nothing else).
        max_message_ms: 20: exactly one frame per binary message (640 bytes at 16 kHz).
        state: the :class:`VonageState`.
    """

    name = "vonage"
    has_marks = True  # ``notify`` is echoed as ``websocket:notify`` when playback reaches it
    frame_ms = 20
    max_message_ms = 20  # other sizes get the socket closed

    def __init__(self) -> None:
        self.audio_format: AudioFormat | None = None
        self.state = VonageState.AWAITING_CONNECTED
        self._frame_bytes = 0

    # ------------------------------------------------------------------ inbound

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one WebSocket message into events. Never raises (see module doc for errors).

        A bug in this parser surfaces as ``ProtocolError("internal", <exception type>)``.
        """
        try:
            if type(frame) is bytes:  # hot path: caller audio
                if self.state is VonageState.STREAMING and len(frame) == self._frame_bytes:
                    return [Media(frame)]
                return [self._binary(frame)]
            if isinstance(frame, (bytearray, memoryview)):
                return [self._binary(bytes(frame))]
            if type(frame) is not str:
                return [frame_type_error(frame)]
            return self._text(frame)
        except Refused as exc:  # a bad text frame
            return [exc.error]
        except Exception as exc:  # a parser bug must not end the call
            return [internal_error(exc)]

    def _binary(self, frame: bytes) -> CarrierEvent:
        if len(frame) > MAX_FRAME_BYTES:
            return ProtocolError("oversize", f"{len(frame)} bytes > {MAX_FRAME_BYTES}")
        if self.state is not VonageState.STREAMING:
            return ProtocolError("before_start", f"audio ({len(frame)} bytes)")
        if len(frame) & 1:
            return ProtocolError("bad_field", f"audio: odd L16 length {len(frame)}")
        return Media(frame)  # not exactly 20 ms: accepted, the length says how long

    def _text(self, frame: str) -> list[CarrierEvent]:
        msg = parse_text(frame)
        event = msg.get("event")
        if type(event) is not str:
            return [field_error("event", event)]
        if event == "websocket:connected":
            if self.state is not VonageState.AWAITING_CONNECTED:
                return [ProtocolError("unexpected_event", "websocket:connected again")]
            try:
                check_depth(msg)
                return self._on_connected(msg)
            except Refused as exc:
                return [refuse_start(exc.error)]
        if event not in _KNOWN:
            return [Unhandled(event[:64])]
        if self.state is not VonageState.STREAMING:
            return [ProtocolError("before_start", event)]
        check_depth(msg)
        if event == "websocket:dtmf":
            return [self._on_dtmf(msg)]
        if event == "websocket:notify":
            return [self._on_notify(msg)]
        return [Cleared()]  # websocket:cleared

    def _on_connected(self, msg: dict) -> list[CarrierEvent]:
        content_type = msg.get("content-type")
        if type(content_type) is not str:
            raise Refused(field_error("content-type", content_type))
        rate = parse_content_type(content_type)
        if rate not in _RATES:
            raise Refused(ProtocolError("bad_field", "content-type"))
        params = text_values({k: v for k, v in msg.items() if k not in ("event", "content-type")})
        self.audio_format = AudioFormat(Encoding.L16, rate)  # type: ignore[arg-type]
        self._frame_bytes = self.audio_format.bytes_for_ms(self.frame_ms)
        self.state = VonageState.STREAMING
        started = check_started(Started(stream_id="", call_id="", audio_format=self.audio_format, custom_parameters=params))
        return [Connected("websocket:connected"), started]

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        digit = msg.get("digit")
        if digit is None:
            dtmf = msg.get("dtmf")
            digit = dtmf.get("digit") if type(dtmf) is dict else dtmf
        if type(digit) is int and 0 <= digit <= 9:
            digit = str(digit)
        return dtmf_event(digit, "digit")

    def _on_notify(self, msg: dict) -> CarrierEvent:
        payload = msg.get("payload")
        if type(payload) is not dict:
            return field_error("payload", payload)
        return mark_ack(payload.get("name"), "payload.name")

    # ----------------------------------------------------------------- outbound

    def media(self, payload: bytes) -> bytes:
        """One binary frame: exactly 20 ms of L16 at the stream's rate.

        Raises:
            RuntimeError: before ``websocket:connected`` (the rate is unknown).
            ValueError: ``payload`` is not exactly 20 ms (Vonage would close the socket).
        """
        if self._frame_bytes == 0:
            raise RuntimeError("vonage: no content-type yet; send frames only after Started")
        if len(payload) != self._frame_bytes:
            raise ValueError(f"vonage: frame of {len(payload)} bytes; need exactly {self._frame_bytes}")
        return payload if type(payload) is bytes else bytes(payload)

    def mark(self, name: str) -> str:
        """``{"action":"notify","payload":{"name":name}}`` → ``websocket:notify`` when played."""
        return orjson.dumps({"action": "notify", "payload": {"name": name}}).decode()

    def clear(self) -> str:
        """``{"action":"clear"}`` → ``websocket:cleared``."""
        return _CLEAR


_KNOWN = frozenset({"websocket:dtmf", "websocket:notify", "websocket:cleared"})
