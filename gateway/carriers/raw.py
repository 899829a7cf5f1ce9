"""The gateway's own stream protocol for custom clients ("raw"): JSON control, binary audio.

A client (a softphone, a browser, a test harness, another PBX) opens a WebSocket to its
per-call stream URL and speaks this protocol. It is deliberately small:

**Client → gateway**

1. The first frame is a text frame::

       {"event": "start", "sampleRate": 16000, "encoding": "l16",
        "customParameters": {"lang": "en"}, "callId": "my-own-id"}

   * ``encoding`` (optional, default ``"l16"``): ``"l16"`` — signed 16-bit little-endian PCM;
     ``"pcmu"`` — G.711 μ-law; ``"pcma"`` — G.711 A-law. Case is ignored.
   * ``sampleRate`` (Hz): required for ``l16``, one of 8000, 16000, 24000, 48000; for
     ``pcmu``/``pcma`` it may be omitted and must be 8000 if given.
   * ``customParameters`` (optional): an object of string values, handed to the agent.
   * ``callId`` (optional): the client's own label for the call, echoed in logs.

2. Then **binary** frames carry the caller's audio: mono, in the encoding and rate of
   ``start``, any length up to 64 KiB that is a whole number of samples (an even number of
   bytes for ``l16``). 20 ms per frame is typical (640 bytes of ``l16`` at 16 kHz).

3. Text frames the client may send at any time after ``start``:

   * ``{"event": "mark", "name": "<name>"}`` — acknowledges the gateway's mark ``<name>``: send it
     once every byte of audio received *before* that mark has been played to the caller, or
     has been discarded by a ``clear``. Marks are acknowledged in the order received.
   * ``{"event": "dtmf", "digit": "5"}`` — a key press: ``0``–``9``, ``*``, ``#``, ``A``–``D``.
   * ``{"event": "cleared"}`` (optional) — the client has emptied its playback buffer.
   * ``{"event": "stop", "reason": "hangup"}`` — the caller is gone (``reason`` optional); the
     client then closes the socket. Closing the socket without ``stop`` means the same.

**Gateway → client**

* **Binary** frames: the agent's audio, in the client's encoding and rate, a whole number of
  20 ms frames per message (20 to 500 ms; ``GATEWAY_CARRIER_MESSAGE_MS`` sets the size the
  gateway sends). Play them in order, buffering as needed.
* ``{"event": "mark", "name": "<name>"}`` — acknowledge it as described above. The gateway uses
  the acknowledgements to know how much of its audio the caller actually heard.
* ``{"event": "clear"}`` — the caller interrupted: stop playback at once, discard every buffered
  frame, then acknowledge every pending mark (as Twilio does) and optionally send ``cleared``.

Anything the gateway cannot parse (bad JSON, a bad ``start``, audio before ``start``, an odd
``l16`` length …) is reported to the session as a :class:`ProtocolError` naming the field and
the frame is skipped; after an invalid ``start`` the gateway ends the call (``bad_start``)
and closes the socket (policy violation, close code 1008). Unknown ``event`` values are ignored (reported as
:class:`Unhandled`), so clients may add their own.
"""

from __future__ import annotations

import orjson

from gateway.carriers._wire import (
    binary_error,
    check_started,
    on_cleared,
    on_mark,
    on_stop,
    JsonEventStream,
    StreamState,
    dtmf_event,
    internal_error,
)
from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Frame,
    Media,
    ProtocolError,
    Started,
)
from gateway.formats import AudioFormat, Encoding

__all__ = ["RawAdapter", "RawState", "L16_RATES"]

#: Sample rates a client may ask for with ``l16`` (G.711 is always 8,000 Hz).
L16_RATES = frozenset({8000, 16000, 24000, 48000})

_ENCODINGS = {"l16": Encoding.L16, "pcmu": Encoding.PCMU, "pcma": Encoding.PCMA}
_CLEAR = '{"event":"clear"}'

#: The stream's lifecycle states (the carriers' shared :class:`StreamState`, under its old name).
RawState = StreamState

_TRANSITIONS: dict[tuple[StreamState, str], StreamState] = {
    (RawState.AWAITING_START, "start"): RawState.STREAMING,
    (RawState.AWAITING_START, "stop"): RawState.STOPPED,
    (RawState.STREAMING, "mark"): RawState.STREAMING,
    (RawState.STREAMING, "dtmf"): RawState.STREAMING,
    (RawState.STREAMING, "cleared"): RawState.STREAMING,
    (RawState.STREAMING, "stop"): RawState.STOPPED,
}


class RawAdapter(JsonEventStream):
    """Sans-I/O adapter for the raw protocol described in the module docstring.

    Attributes:
        name: ``"raw"``.
        audio_format: from ``start`` (``None`` before it).
        frame_ms: 20.
        max_message_ms: 500 (binary messages of 20 to 500 ms, ≤ 48 KB at 48 kHz: the module doc).
        state: the :class:`RawState`.
    """

    name = "raw"
    frame_ms = 20
    max_message_ms = 500
    _transitions = _TRANSITIONS

    def __init__(self) -> None:
        super().__init__()
        self.audio_format: AudioFormat | None = None
        self._sample_bytes = 2

    # ------------------------------------------------------------------ inbound

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one WebSocket message into events. Never raises (see module doc for errors).

        A bug in this parser surfaces as ``ProtocolError("internal", <exception type>)``.
        """
        try:
            if type(frame) is bytes:
                n = len(frame)
                # Hot path: caller audio of a sane size.
                if self.state is RawState.STREAMING and n <= MAX_FRAME_BYTES and n % self._sample_bytes == 0:
                    return [Media(frame)]
                return [binary_error(n, self.state)]
            if isinstance(frame, (bytearray, memoryview)):
                return self.receive(bytes(frame))
            return super().receive(frame)  # text: JSON checks, the table, the handlers
        except Exception as exc:  # a parser bug must not end the call
            return [internal_error(exc)]

    def _on_start(self, msg: dict) -> CarrierEvent:
        raw_encoding = msg.get("encoding", "l16")
        encoding = _ENCODINGS.get(raw_encoding.lower()) if type(raw_encoding) is str else None
        if encoding is None:
            return ProtocolError("bad_field", "encoding")
        rate = msg.get("sampleRate")
        if encoding is Encoding.L16:
            if rate is None:
                return ProtocolError("missing_field", "sampleRate")
            if type(rate) is not int or rate not in L16_RATES:
                return ProtocolError("bad_field", "sampleRate")
        else:
            if rate is None:
                rate = 8000
            elif type(rate) is not int or rate != 8000:
                return ProtocolError("bad_field", "sampleRate")
        params = msg.get("customParameters") or {}
        if type(params) is not dict or not all(type(v) is str for v in params.values()):
            return ProtocolError("bad_field", "customParameters")
        call_id = msg.get("callId", "")
        if type(call_id) is not str:
            return ProtocolError("bad_field", "callId")
        self.audio_format = AudioFormat(encoding, rate)
        self._sample_bytes = encoding.bytes_per_sample
        return check_started(Started(stream_id="", call_id=call_id, audio_format=self.audio_format, custom_parameters=params))

    def _on_dtmf(self, msg: dict) -> CarrierEvent:
        return dtmf_event(msg.get("digit"), "digit")

    # ----------------------------------------------------------------- outbound

    def media(self, payload: bytes) -> bytes:
        """One binary frame of audio in the client's format (sent as is).

        Raises:
            RuntimeError: before :class:`Started` (the client's format is unknown).
            ValueError: ``payload`` is not a whole number of samples.
        """
        if self.audio_format is None:
            raise RuntimeError("raw: no start yet; send frames only after Started")
        if len(payload) % self._sample_bytes:
            raise ValueError(f"raw: {len(payload)} bytes is not a whole number of samples")
        return payload if type(payload) is bytes else bytes(payload)

    def mark(self, name: str) -> str:
        """``{"event":"mark","name":name}``; the client echoes it once the audio before it played."""
        return orjson.dumps({"event": "mark", "name": name}).decode()

    def clear(self) -> str:
        """``{"event":"clear"}``: the client drops its buffer and acknowledges pending marks."""
        return _CLEAR

    #: event → handler (JsonEventStream runs it when _TRANSITIONS allows the event).
    _handlers = {
        "start": _on_start,
        "mark": on_mark,
        "dtmf": _on_dtmf,
        "cleared": on_cleared,
        "stop": on_stop,
    }
