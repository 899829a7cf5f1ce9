"""Wire plumbing every carrier adapter does the same way (private to :mod:`gateway.carriers`).

Everything about one carrier (its message shapes, handshake, marks, clear, DTMF, outbound
frames) stays in that carrier's module. What lives here is what the adapters share:

* :class:`StreamState` and :class:`JsonEventStream`: the ``AWAITING_START --start--> STREAMING
  --stop--> STOPPED`` lifecycle, driven by each carrier's own transition table, and the inbound
  path of a carrier whose every frame is a JSON text message keyed by ``event`` (Twilio, Telnyx,
  Plivo, Exotel; the raw protocol for its text frames).
* :func:`parse_text`: the size and JSON checks of one text frame (also used by Vonage).
* Field helpers that turn bad input into the :class:`ProtocolError` kinds documented in
  :mod:`gateway.carriers.events`: :func:`field_error`, :func:`opt_int`, :func:`decimal_int`,
  :func:`decode_payload`, :func:`media_position`, :func:`dtmf_event`, :func:`mark_ack`,
  :func:`frame_type_error`, :func:`internal_error`.
* Bounds on what a message may hold, so no generic conversion (``str()``, ``orjson.dumps``,
  ``int()``) can fail on a peer's input: :func:`check_depth` (at most :data:`MAX_DEPTH` levels
  of nesting in any message a handler reads), :func:`decimal_int` (ASCII digits only, at most
  18), :func:`text_values` (custom parameters as strings), :func:`lookup` (a string key or
  nothing) and :func:`stream_format` (only the encodings and sample rates a carrier documents).
* :func:`refuse_start`: a refused ``start`` is a fatal :class:`ProtocolError` (see there).

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

import dataclasses
import enum
from typing import Any, Callable, ClassVar, Mapping

import orjson
import pybase64

from gateway.carriers.events import (
    MAX_FRAME_BYTES,
    CarrierEvent,
    Cleared,
    Dtmf,
    Frame,
    MarkAck,
    ProtocolError,
    Started,
    Stopped,
    Unhandled,
)
from gateway.formats import AudioFormat, Encoding

__all__ = [
    "DTMF_DIGITS",
    "Refused",
    "StreamState",
    "JsonEventStream",
    "parse_text",
    "field_error",
    "opt_int",
    "decimal_int",
    "check_depth",
    "text_values",
    "lookup",
    "stream_format",
    "refuse_start",
    "check_started",
    "MAX_ID_CHARS",
    "MAX_NUMBER_CHARS",
    "MAX_DEPTH",
    "decode_payload",
    "media_position",
    "dtmf_event",
    "mark_ack",
    "binary_error",
    "on_mark",
    "on_cleared",
    "on_stop",
    "frame_type_error",
    "internal_error",
]

#: The keys of a DTMF keypad, as carriers spell them.
DTMF_DIGITS = frozenset("0123456789*#ABCD")

#: Deepest nesting (objects and arrays) accepted in a message a handler reads. The carriers
#: document at most 3 levels (``start.mediaFormat.sampleRate``); custom parameters may hold
#: small JSON values. orjson itself parses up to 1,024 levels but cannot serialise more than
#: 254, and ``str()`` of ~1,000 nested lists overflows Python's recursion limit.
MAX_DEPTH = 16

#: Most digits :func:`decimal_int` accepts: every value < 10**18 fits an int64 (Unix ms
#: timestamps have 13 digits).
_MAX_DIGITS = 18


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


def decimal_int(value: object) -> int | None:
    """A JSON integer, or a string of 1–18 ASCII digits (``"5"``), as int; None otherwise.

    ``str.isdigit`` and ``int()`` accept far more than carriers send (``"²"``, ``"٥"``,
    ``" 7"``, ``"1_0"``, 4,300-digit strings): only ``0``–``9`` are read here. Booleans and
    floats are not integers.
    """
    if type(value) is str:  # the usual case on the media path: test it first
        if 0 < len(value) <= _MAX_DIGITS and value.isascii() and value.isdecimal():
            return int(value)
        return None
    if type(value) is int:
        return value
    return None


def opt_int(value: object) -> int | None:
    """A JSON number or numeric string (``"5"``, as Twilio sends) as int; None if absent.

    Raises:
        ValueError: ``value`` is neither an int nor a string :func:`decimal_int` accepts.
    """
    if value is None:
        return None
    number = decimal_int(value)
    if number is None:
        raise ValueError("not an integer")
    return number


def check_depth(msg: dict, limit: int = MAX_DEPTH) -> None:
    """Refuse a message nested more than ``limit`` levels deep (the message itself is level 1).

    Raises:
        Refused: ``ProtocolError("too_deep", …)``.
    """
    stack: list[tuple[Any, int]] = [(msg, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    raise Refused(ProtocolError("too_deep", f"nested more than {limit} levels"))
                stack.append((child, depth + 1))


def text_values(params: dict) -> dict[str, str]:
    """Custom parameters as strings: strings kept, any other JSON value as its compact JSON.

    The message must have passed :func:`check_depth` (orjson cannot serialise > 254 levels).
    """
    return {k: v if type(v) is str else orjson.dumps(v).decode() for k, v in params.items()}


def lookup(table: Mapping[str, Any], value: object) -> Any:
    """``table[value.lower()]`` if ``value`` is a string the table has, else None (no ``str()``)."""
    return table.get(value.lower()) if type(value) is str else None


def stream_format(
    fmt: dict,
    encodings: Mapping[str, Encoding],
    rates: Mapping[Encoding, frozenset[int]],
    path: str,
    *,
    encoding_key: str,
    rate_key: str,
    default_encoding: str | None,
) -> AudioFormat:
    """The audio format a ``start`` message's format object names, if the carrier documents it.

    Args:
        fmt: the format object (``start.mediaFormat`` …).
        encodings: the carrier's encoding names (lower case) → :class:`Encoding`.
        rates: the sample rates (Hz) the carrier documents for each encoding; a rate not
            listed is refused, so no odd rate ever reaches a resampler design.
        path: the object's dotted path, for errors (``"start.mediaFormat"``).
        encoding_key: its encoding field (``"encoding"``).
        rate_key: its sample-rate field (``"sampleRate"``): an int or a decimal string;
            8,000 if absent.
        default_encoding: the encoding if the field is absent; None: the field is required.

    Raises:
        Refused: ``missing_field`` / ``bad_field`` at ``<path>.<encoding_key>`` or
            ``<path>.<rate_key>``.
    """
    raw_encoding = fmt.get(encoding_key, default_encoding)
    encoding = lookup(encodings, raw_encoding)
    if encoding is None or encoding not in rates:
        raise Refused(field_error(f"{path}.{encoding_key}", raw_encoding))
    raw_rate = fmt.get(rate_key, 8000)
    rate = decimal_int(raw_rate)
    if rate not in rates[encoding]:
        raise Refused(field_error(f"{path}.{rate_key}", raw_rate))
    return AudioFormat(encoding, rate)  # type: ignore[arg-type]


#: Longest carrier id (call, stream, account) accepted in ``start``: real ones are 32–100
#: characters (Twilio ``CA`` + 32 hex, Telnyx ``v3:…`` call control ids); the store keeps 200.
MAX_ID_CHARS = 128
#: Longest ``from`` / ``to`` kept (E.164 has at most 16 characters; SIP URIs are longer).
MAX_NUMBER_CHARS = 64


def check_started(started: Started) -> Started:
    """``started`` with its ids and numbers within what the call record stores.

    An id longer than :data:`MAX_ID_CHARS` is no carrier's: the ``start`` is refused. A longer
    ``from`` / ``to`` (a long SIP URI) is cut to :data:`MAX_NUMBER_CHARS` rather than refusing
    the call.

    Raises:
        Refused: a fatal ``bad_field`` naming the id.
    """
    for name in ("stream_id", "call_id", "account_id"):
        if len(getattr(started, name)) > MAX_ID_CHARS:
            raise Refused(refuse_start(ProtocolError("bad_field", f"start {name}: over {MAX_ID_CHARS} characters")))
    if len(started.from_number) > MAX_NUMBER_CHARS or len(started.to_number) > MAX_NUMBER_CHARS:
        started = dataclasses.replace(
            started, from_number=started.from_number[:MAX_NUMBER_CHARS], to_number=started.to_number[:MAX_NUMBER_CHARS]
        )
    return started


def refuse_start(error: ProtocolError) -> ProtocolError:
    """``error`` marked fatal: it refused the stream's ``start``, so the call cannot go on."""
    return ProtocolError(error.kind, error.detail, fatal=True)


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


def binary_error(n: int, state: StreamState) -> ProtocolError:
    """Why a binary frame of ``n`` bytes is not caller audio, for the L16/G.711 binary protocols
    (raw, webrtc) in ``state``: ``oversize`` (over :data:`MAX_FRAME_BYTES`), ``before_start``,
    ``unexpected_event`` (after stop), else ``bad_field`` (not a whole number of samples)."""
    if n > MAX_FRAME_BYTES:
        return ProtocolError("oversize", f"{n} bytes > {MAX_FRAME_BYTES}")
    if state is StreamState.AWAITING_START:
        return ProtocolError("before_start", f"audio ({n} bytes)")
    if state is StreamState.STOPPED:
        return ProtocolError("unexpected_event", f"audio ({n} bytes) after stop")
    return ProtocolError("bad_field", f"audio: {n} bytes is not a whole number of samples")


# Handlers shared by the binary protocols' tables (raw, webrtc), called as ``handler(adapter, msg)``.


def on_mark(adapter: object, msg: dict) -> CarrierEvent:
    """``{"event": "mark", "name"}``: the client acknowledges a mark (:func:`mark_ack`)."""
    return mark_ack(msg.get("name"), "name")


def on_cleared(adapter: object, msg: dict) -> CarrierEvent:
    """``{"event": "cleared"}``: the client emptied its playback buffer."""
    return Cleared()


def on_stop(adapter: object, msg: dict) -> CarrierEvent:
    """``{"event": "stop", "reason"?}``: :class:`Stopped` (reason cut to 64 characters; not a
    string: empty)."""
    reason = msg.get("reason", "")
    return Stopped(reason[:64] if type(reason) is str else "")


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
    (a handler may also raise :class:`Refused`: its error is the frame's event). Before any
    handler runs, the message passes :func:`check_depth`. A refused ``start`` (the
    ``AWAITING_START → STREAMING`` transition) is returned marked ``fatal``.
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
        try:
            check_depth(msg)
            result = handler(self, msg)
        except Refused as exc:
            result = exc.error
        if isinstance(result, ProtocolError):
            if self.state is _AWAITING_START and next_state is _STREAMING:
                return refuse_start(result)  # a refused start: nothing to stream with
            return result
        self.state = next_state
        return result
