"""Wire plumbing every carrier adapter does the same way (private to :mod:`gateway.carriers`).

Everything about one carrier (its message shapes, handshake, marks, clear, DTMF, outbound
frames) stays in that carrier's module. What lives here is what the adapters share:

* :class:`StreamState` and :class:`JsonEventStream`: the ``AWAITING_START --start--> STREAMING
  --stop--> STOPPED`` lifecycle, driven by each carrier's own transition table, and the inbound
  path of a carrier whose every frame is a JSON text message keyed by ``event`` (Twilio, Telnyx,
  Plivo, Exotel; the raw protocol for its text frames).
* :func:`parse_text`: the size and JSON checks of one text frame (also used by Vonage).
* Field helpers that turn bad input into the :class:`ProtocolError` kinds documented in
  :mod:`gateway.carriers.events`: :func:`field_error`, :func:`opt_int`, :func:`decode_payload`,
  :func:`media_position`, :func:`dtmf_event`, :func:`mark_ack`, :func:`frame_type_error`,
  :func:`internal_error`.

Nothing here raises to the session. Helpers that build an event return it (a ``ProtocolError``
when the input is bad). Helpers that extract a value (:func:`parse_text`,
:func:`decode_payload`, :func:`media_position`) return the value itself and raise
:class:`Refused` carrying the ``ProtocolError`` otherwise; :meth:`JsonEventStream.receive`
(and Vonage's) turns that into the frame's event, so a handler reads as the message's happy path and the
per-frame path has no result checks. ``opt_int`` raises ValueError, which its callers map to a
path. Sources: the carrier docs cited in each adapter; the state machine follows h11
``_state.py`` (an enum and a table).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, ClassVar, Mapping

import orjson
import pybase64

from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Dtmf,
    Frame,
    MarkAck,
    ProtocolError,
    Unhandled,
)

__all__ = [
    "DTMF_DIGITS",
    "Refused",
    "StreamState",
    "JsonEventStream",
    "parse_text",
    "field_error",
    "opt_int",
    "decode_payload",
    "media_position",
    "dtmf_event",
    "mark_ack",
    "frame_type_error",
    "internal_error",
]

#: The keys of a DTMF keypad, as carriers spell them.
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class StreamState(enum.Enum):
    """Where a media stream is in its lifecycle (every carrier but Vonage, which has no stop)."""

    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


# Module constants for the per-frame path: ``StreamState.STREAMING`` is a descriptor lookup
# (about 90 ns on CPython 3.11), a global is not.
_AWAITING_START = StreamState.AWAITING_START
_STREAMING = StreamState.STREAMING

#: A carrier's handler for one ``event``: ``(adapter, message) -> event``.
Handler = Callable[[Any, dict], CarrierEvent]


class Refused(Exception):
    """A frame failed a check; ``error`` is the event the adapter returns for it.

    Raised by the value helpers below and caught by the adapter's ``receive`` (never reaches
    the session).
    """

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.kind)
        self.error = error


def field_error(path: str, value: object) -> ProtocolError:
    """``missing_field`` if ``value`` is absent (None), else ``bad_field``; names only the path."""
    return ProtocolError("missing_field" if value is None else "bad_field", path)


def opt_int(value: object) -> int | None:
    """A JSON number or numeric string (``"5"``, as Twilio sends) as int; None if absent.

    Raises:
        ValueError: ``value`` is neither an int nor a numeric string.
    """
    if value is None:
        return None
    if type(value) is str:  # the usual case on the media path: test it first
        return int(value)
    if type(value) is int:
        return value
    raise ValueError("not an integer")


def decode_payload(container: dict, path: str) -> bytes:
    """The base64 string ``container["payload"]`` decoded (standard alphabet, padding required).

    Args:
        container: the JSON object holding ``payload`` (``media`` for the Twilio family).
        path: the field's dotted path for errors (``"media.payload"``).

    Raises:
        Refused: ``missing_field`` / ``bad_field`` (not a string) / ``bad_base64``; the error
            detail gives the path and length only, never the payload.
    """
    payload = container.get("payload")
    if type(payload) is not str:
        raise Refused(field_error(path, payload))
    try:
        return pybase64.b64decode(payload, validate=True)
    except ValueError:
        raise Refused(ProtocolError("bad_base64", f"{path} ({len(payload)} chars)")) from None


def media_position(media: dict, msg: dict, sequence_key: str) -> tuple[int | None, int | None]:
    """``(timestamp, sequence)`` of a Twilio-style ``media`` message (Telnyx, Plivo, Exotel copy it).

    Args:
        media: the message's ``media`` object: ``timestamp`` (ms) and ``chunk``, each a number
            or a numeric string, each optional.
        msg: the whole message, for the top-level sequence number used when ``chunk`` is absent.
        sequence_key: that top-level key's name (``sequenceNumber``, ``sequence_number``).

    Returns:
        Both as int or None.

    Raises:
        Refused: ``ProtocolError("bad_field", "media.timestamp" | "media.chunk")``.
    """
    try:
        timestamp = opt_int(media.get("timestamp"))
    except ValueError:
        raise Refused(ProtocolError("bad_field", "media.timestamp")) from None
    try:
        chunk = opt_int(media.get("chunk"))
        return timestamp, chunk if chunk is not None else opt_int(msg.get(sequence_key))
    except ValueError:
        raise Refused(ProtocolError("bad_field", "media.chunk")) from None


def dtmf_event(digit: object, path: str) -> CarrierEvent:
    """:class:`Dtmf` if ``digit`` is one key of :data:`DTMF_DIGITS`, else a field error at ``path``."""
    if type(digit) is not str or digit not in DTMF_DIGITS:
        return field_error(path, digit)
    return Dtmf(digit)


def mark_ack(name: object, path: str) -> CarrierEvent:
    """:class:`MarkAck` if the echoed mark ``name`` is a string, else a field error at ``path``."""
    if type(name) is not str:
        return field_error(path, name)
    return MarkAck(name)


def frame_type_error(frame: object) -> ProtocolError:
    """``bad_field`` for a frame that is neither text nor bytes (a caller bug, not the carrier's)."""
    return ProtocolError("bad_field", f"frame of type {type(frame).__name__}")


def internal_error(exc: Exception) -> ProtocolError:
    """``internal``: a bug in a parser, reported by exception type only so the call goes on."""
    return ProtocolError("internal", f"{type(exc).__name__} while parsing")


def parse_text(frame: str) -> dict:
    """One text frame as a JSON object.

    Raises:
        Refused: ``oversize`` (more than :data:`MAX_FRAME_BYTES` characters) or
            ``malformed_json`` (not JSON, or JSON but not an object).
    """
    if len(frame) > MAX_FRAME_BYTES:
        raise Refused(ProtocolError("oversize", f"{len(frame)} chars > {MAX_FRAME_BYTES}"))
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise Refused(ProtocolError("malformed_json", f"{len(frame)} chars")) from None
    if type(msg) is not dict:
        raise Refused(ProtocolError("malformed_json", "not a JSON object"))
    return msg


class JsonEventStream:
    """Inbound half of an adapter whose frames are JSON text messages keyed by ``event``.

    A subclass (one carrier) defines its handlers and sets two class attributes:

    * ``_handlers``: ``event`` → ``handler(self, msg) -> CarrierEvent``; an ``event`` not listed
      becomes :class:`Unhandled`.
    * ``_transitions``: ``(state, event)`` → next :class:`StreamState`. A pair not listed is
      refused: ``ProtocolError("before_start", event)`` while awaiting start, else
      ``ProtocolError("unexpected_event", "<event> in state <state>")``.

    The state moves only when the handler returns something other than a ``ProtocolError``
    (a handler may also raise :class:`Refused`: its error is the frame's event).
    A carrier with ``media`` messages overrides ``_on_media``: ``media`` while streaming (a
    self-loop in every such table) goes straight to it, the per-frame hot path.

    Attributes:
        state: the :class:`StreamState`.
    """

    #: Every JSON carrier here acknowledges marks (Twilio, Telnyx, Exotel ``mark``; Plivo
    #: ``playedStream`` for a ``checkpoint``; raw ``mark``).
    has_marks = True

    _handlers: ClassVar[Mapping[str, Handler]]
    _transitions: ClassVar[Mapping[tuple[StreamState, str], StreamState]]

    def __init__(self) -> None:
        self.state = _AWAITING_START

    def receive(self, frame: Frame) -> list[CarrierEvent]:
        """Parse one WebSocket message into one event. Never raises (see the carrier's module doc).

        A frame that is not text is refused (``unexpected_binary``); a bug in a parser surfaces
        as ``ProtocolError("internal", <exception type>)``.
        """
        try:
            if type(frame) is not str:
                if isinstance(frame, (bytes, bytearray, memoryview)):
                    return [ProtocolError("unexpected_binary", f"{len(frame)} bytes")]
                return [frame_type_error(frame)]
            msg = parse_text(frame)
            if msg.get("event") == "media" and self.state is _STREAMING:  # hot path
                return [self._on_media(msg)]
            return [self._dispatch(msg)]
        except Refused as exc:
            return [exc.error]
        except Exception as exc:  # a parser bug must not end the call: report it, go on
            return [internal_error(exc)]

    def _on_media(self, msg: dict) -> CarrierEvent:
        """A carrier whose protocol has ``media`` messages overrides this; others use the table."""
        return self._dispatch(msg)

    def _dispatch(self, msg: dict) -> CarrierEvent:
        """Run the handler of ``msg["event"]`` if the transition table allows it now."""
        event = msg.get("event")
        if type(event) is not str:
            return field_error("event", event)
        handler = self._handlers.get(event)
        if handler is None:
            return Unhandled(event[:64])
        next_state = self._transitions.get((self.state, event))
        if next_state is None:
            if self.state is _AWAITING_START:
                return ProtocolError("before_start", event)
            return ProtocolError("unexpected_event", f"{event} in state {self.state.value}")
        result = handler(self, msg)
        if not isinstance(result, ProtocolError):
            self.state = next_state
        return result
