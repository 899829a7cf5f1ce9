"""Typed events and the adapter contract shared by every carrier adapter.

A carrier adapter is sans-I/O (no asyncio, no sockets): the session feeds it each WebSocket
message it receives and gets typed events back, and asks it for the frames to send. Events
are frozen, slotted dataclasses. Nothing is silently dropped: a message the adapter does not
know becomes :class:`Unhandled`, a message it cannot parse becomes :class:`ProtocolError`; the
session counts and logs both and the call goes on.

A *frame* is one WebSocket message: ``str`` for a text frame, ``bytes`` for a binary frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Union, runtime_checkable

from gateway.formats import AudioFormat

__all__ = [
    "Frame",
    "Connected",
    "Started",
    "Media",
    "Dtmf",
    "MarkAck",
    "Cleared",
    "Stopped",
    "ProtocolError",
    "Unhandled",
    "CarrierEvent",
    "CarrierAdapter",
    "StreamDtmf",
    "MAX_FRAME_BYTES",
]

Frame = Union[str, bytes]

#: Largest inbound WebSocket message an adapter accepts (bytes). 20 ms of 48 kHz L16 is 1,920
#: bytes and a base64 JSON media message for it about 2.7 KB; 64 KiB leaves room for carriers
#: that batch, and refuses anything that is plainly not a media stream.
MAX_FRAME_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Connected:
    """The carrier's first hello (Twilio ``connected``, Vonage ``websocket:connected`` …)."""

    protocol: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    """The stream's metadata: ids, negotiated audio format and custom parameters.

    ``audio_format`` is what the carrier sends and expects back (e.g. PCMU at 8,000 Hz).
    ``custom_parameters`` holds the carrier's per-call parameters (Twilio ``<Parameter>``,
    Telnyx ``client_state``, Vonage NCCO headers …).
    """

    stream_id: str
    call_id: str
    audio_format: AudioFormat
    account_id: str = ""
    from_number: str = ""
    to_number: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    """One chunk of caller audio, already base64-decoded, in the stream's ``audio_format``.

    ``timestamp_ms`` is ms since stream start where the carrier says it; ``sequence`` orders
    chunks for carriers that do not guarantee order (Telnyx). Both are ``None`` when absent.
    """

    payload: bytes
    timestamp_ms: int | None = None
    sequence: int | None = None
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A DTMF key the caller pressed: ``0``–``9``, ``*``, ``#``, ``A``–``D``."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkAck:
    """The carrier reached (played, or cleared past) the mark ``name`` we sent."""

    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """The carrier confirms a ``clear`` (Plivo ``clearedAudio``, Vonage ``websocket:cleared``)."""


@dataclass(frozen=True, slots=True)
class Stopped:
    """The carrier ended the stream (``stop``); ``reason`` where the carrier gives one."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A message the adapter could not parse: counted, logged (without payload), skipped.

    ``kind`` is a short stable label for metrics: ``malformed_json``, ``bad_base64``,
    ``oversize``, ``too_deep``, ``missing_field``, ``bad_field``, ``unexpected_binary``,
    ``unexpected_text``, ``before_start``, ``unexpected_event``, ``carrier_error``,
    ``internal`` (a bug in a parser). The session counts two more under the same metric for
    audio it drops unparsed: ``audio_oversize`` and ``audio_too_fast``
    (:class:`gateway.audio.budget.AudioBudget`).

    ``fatal`` is True when the stream cannot go on: the carrier's ``start`` (Vonage
    ``websocket:connected``) was refused, e.g. for a sample rate the carrier does not
    document, so there is no usable audio format. The session ends such a call (``bad_start``)
    instead of waiting for another start.
    """

    kind: str
    detail: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A well-formed message of a kind this adapter does not act on (counted and logged)."""

    event: str


CarrierEvent = Union[Connected, Started, Media, Dtmf, MarkAck, Cleared, Stopped, ProtocolError, Unhandled]


class CarrierAdapter(Protocol):
    """What the session needs from a carrier adapter (one instance per call; no I/O).

    Attributes:
        name: carrier name as used in stream URLs (``twilio``, ``raw``, …).
        audio_format: the negotiated format, ``None`` until :class:`Started` was returned.
        frame_ms: duration of the outbound media frames the session should produce (ms); every
            outbound media message is a whole number of them.
        max_message_ms: the most audio one outbound media message may carry (ms, a multiple
            of ``frame_ms``): ``frame_ms`` for a carrier that takes exactly one size (Vonage,
            Exotel's chunk), more where the carrier accepts any size. The session sends up to
            its ``GATEWAY_CARRIER_MESSAGE_MS`` per message within it.
        has_marks: whether :meth:`mark` returns frames the carrier acknowledges; without
            marks the session estimates what the caller heard by clock.
    """

    name: str
    audio_format: AudioFormat | None
    frame_ms: int
    max_message_ms: int
    has_marks: bool

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one inbound WebSocket message into zero or more events. Never raises."""
        ...

    def media(self, payload: bytes) -> Frame:
        """The frame that plays ``payload`` (bytes in ``audio_format``) to the caller."""
        ...

    def mark(self, name: str) -> Frame | None:
        """The frame that asks for :class:`MarkAck` ``name`` once audio before it has played.

        ``None`` if the carrier has no marks (the session then estimates playback by clock).
        """
        ...

    def clear(self) -> Frame:
        """The frame that empties the carrier's playback buffer at once (barge-in)."""
        ...


@runtime_checkable
class StreamDtmf(Protocol):
    """An adapter whose stream protocol can play DTMF to the callee (Plivo ``sendDTMF``); the
    session sends :meth:`send_dtmf`'s frame instead of in-band tones. Check with
    ``isinstance(adapter, StreamDtmf)``."""

    def send_dtmf(self, digits: str) -> Frame:
        """The frame that makes the carrier play ``digits`` (``0-9 * # A-D``) into the call.

        Raises:
            ValueError: no digits, or a character that is not a DTMF key.
        """
        ...
