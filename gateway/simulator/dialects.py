"""The carrier side of each media-stream protocol, for simulated callers.

A dialect builds the messages a carrier sends (hello, start, media, DTMF, mark echoes, stop)
and reads the messages a gateway sends back (media, mark, clear). It is the mirror image of
the adapters in :mod:`gateway.carriers`, written from the carriers' documentation rather than
from those adapters, so a test that pairs them checks one against the other.

=========  ==================================================  ==============================
dialect    carrier messages (source)                           audio (default)
=========  ==================================================  ==============================
twilio     Twilio Media Streams: twilio.com/docs/voice/        μ-law 8 kHz, base64 in JSON
           media-streams/websocket-messages
telnyx     Telnyx media streaming (``rtp`` bidirectional       PCMU 8 kHz (PCMA, L16
           mode): developers.telnyx.com/docs/voice/            big-endian), base64 in JSON
           programmable-voice/media-streaming
plivo      Plivo audio streams: plivo.com/docs/voice-agents/   μ-law 8 kHz (L16 8 / 16 kHz),
           audio-streaming/concepts/audio-streaming-reference  base64 in JSON
vonage     Vonage Voice WebSocket: developer.vonage.com/en/    L16 16 kHz, binary frames of
           voice/voice-api/concepts/websockets                 exactly 20 ms
exotel     Exotel AgentStream (Voicebot applet):               L16 8 kHz (16 / 24 kHz),
           developer.exotel.com/docs/agentstream/              base64 in JSON
           websocket-protocol
raw        the gateway's own protocol                          L16 16 kHz, binary frames
=========  ==================================================  ==============================

Every dialect takes and returns **little-endian** PCM for L16 (what the simulator's codecs
produce); the Telnyx dialect converts to and from the big-endian RTP byte order on the wire
when it speaks L16.
"""

from __future__ import annotations

import array
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import orjson
import pybase64

from gateway.formats import PCMU_8K, AudioFormat, Encoding

__all__ = [
    "CallerDialect",
    "TwilioCaller",
    "TelnyxCaller",
    "PlivoCaller",
    "VonageCaller",
    "ExotelCaller",
    "RawCaller",
    "Inbound",
    "make_dialect",
    "DIALECTS",
]

Frame = str | bytes


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from the gateway: ``kind`` is ``media`` (with ``audio``), ``mark``, ``clear``."""

    kind: str
    audio: bytes = b""
    name: str = ""


_CLEAR = Inbound("clear")


class CallerDialect(Protocol):
    """One carrier's side of the protocol, for one simulated call.

    Attributes:
        name: the carrier name, as in stream URLs (``twilio`` …).
        audio_format: what the caller sends and expects back (L16 is little-endian here).
    """

    name: str
    audio_format: AudioFormat

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        """The frames the carrier sends when the socket opens (hello, start)."""
        ...

    def media(self, payload: bytes) -> Frame:
        """One frame of caller audio (``payload`` in :attr:`audio_format`)."""
        ...

    def dtmf(self, digit: str) -> Frame: ...

    def mark_played(self, name: str) -> Frame | None:
        """The carrier's acknowledgement of the gateway's mark ``name`` (``None``: no marks)."""
        ...

    def cleared(self) -> Frame | None:
        """What the carrier sends after it emptied its buffer on ``clear`` (``None``: nothing)."""
        ...

    def stop(self) -> Frame | None:
        """The carrier's end-of-stream message (``None``: it just closes the socket)."""
        ...

    def parse(self, frame: Frame) -> list[Inbound]:
        """Read one frame from the gateway. Raises ValueError for anything the carrier rejects."""
        ...


def _json(msg: dict) -> str:
    return orjson.dumps(msg).decode()


def _b64(payload: bytes) -> str:
    return pybase64.b64encode_as_string(payload)


def _swap16(data: bytes) -> bytes:
    samples = array.array("h")
    samples.frombytes(data)
    samples.byteswap()
    return samples.tobytes()


def _text(frame: Frame, carrier: str) -> dict:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        raise ValueError(f"{carrier} never sends binary frames to the caller side")
    msg = orjson.loads(frame)
    if type(msg) is not dict:
        raise ValueError("not a JSON object")
    return msg


class TwilioCaller:
    """Twilio Media Streams, as Twilio sends it: μ-law 8 kHz, 20 ms media messages.

    Source: https://www.twilio.com/docs/voice/media-streams/websocket-messages
    """

    name = "twilio"
    audio_format = PCMU_8K

    def __init__(self) -> None:
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.call_sid = "CA" + uuid.uuid4().hex
        self._seq = 0
        self._chunk = 0
        self._ts = 0
        self._tail = '"},"streamSid":' + orjson.dumps(self.stream_sid).decode() + "}"

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            },
            "streamSid": self.stream_sid,
        }
        return [_json(connected), _json(start)]

    def media(self, payload: bytes) -> Frame:
        # {"event":"media","sequenceNumber":"n","media":{"track":"inbound","chunk":"k",
        #  "timestamp":"ms","payload":"…"},"streamSid":"MZ…"}, built without a dict per frame.
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{{"event":"media","sequenceNumber":"{self._seq}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{self._ts}","payload":"{_b64(payload)}{self._tail}'
        )
        self._ts += len(payload) // 8
        return frame

    def dtmf(self, digit: str) -> Frame:
        msg = {
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self._next_seq(),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
        return _json(msg)

    def mark_played(self, name: str) -> Frame | None:
        msg = {
            "event": "mark",
            "sequenceNumber": self._next_seq(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }
        return _json(msg)

    def cleared(self) -> Frame | None:
        return None  # Twilio echoes pending marks on clear, and sends nothing else

    def stop(self) -> Frame | None:
        msg = {
            "event": "stop",
            "sequenceNumber": self._next_seq(),
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }
        return _json(msg)

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = _text(frame, "Twilio")
        if msg.get("streamSid") != self.stream_sid:
            raise ValueError("message for another stream")
        event = msg.get("event")
        if event == "media":
            return [Inbound("media", audio=pybase64.b64decode(msg["media"]["payload"], validate=True))]
        if event == "mark":
            return [Inbound("mark", name=msg["mark"]["name"])]
        if event == "clear":
            return [_CLEAR]
        raise ValueError(f"unexpected event {event!r}")


_TELNYX_ENCODINGS = {Encoding.PCMU: "PCMU", Encoding.PCMA: "PCMA", Encoding.L16: "L16"}


class TelnyxCaller:
    """Telnyx media streaming in bidirectional ``rtp`` mode, as Telnyx sends it.

    In: ``connected`` (``version``), ``start`` (top-level ``stream_id``; ``start.call_control_id``,
    ``call_session_id``, ``from``, ``to``, ``client_state``, ``media_format{encoding, sample_rate,
    channels}``), ``media`` (``media.track/chunk/timestamp/payload`` with numbers as strings,
    top-level ``sequence_number``), ``dtmf`` (``dtmf.digit``), ``mark`` (echo), ``stop``.
    Out (from the gateway): ``media`` (``media.payload``), ``mark``, ``clear``; no stream id.

    Custom parameters travel base64-encoded as JSON in ``client_state`` (what a Call Control
    application passes to ``streaming_start``).

    Source: https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming

    Args:
        encoding: ``pcmu`` (default), ``pcma`` or ``l16`` (big-endian on the wire, as RTP).
        sample_rate: 8,000 Hz for G.711; 8,000–48,000 for L16.
    """

    name = "telnyx"

    def __init__(self, *, encoding: str = "pcmu", sample_rate: int = 8000) -> None:
        enc = Encoding(encoding.lower())
        if enc is not Encoding.L16 and sample_rate != 8000:
            raise ValueError("G.711 is 8,000 Hz")
        self.audio_format = AudioFormat(enc, sample_rate)
        self.stream_id = str(uuid.uuid4())
        self.call_control_id = "v3:" + uuid.uuid4().hex
        self.call_session_id = str(uuid.uuid4())
        self._swap = enc is Encoding.L16
        self._seq = 0
        self._chunk = 0
        self._ts = 0
        self._tail = '"},"stream_id":' + orjson.dumps(self.stream_id).decode() + "}"

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        start = {
            "event": "start",
            "sequence_number": self._next_seq(),
            "start": {
                "user_id": str(uuid.uuid4()),
                "call_control_id": self.call_control_id,
                "call_session_id": self.call_session_id,
                "from": "+13122010094",
                "to": "+13122123456",
                "client_state": _b64(orjson.dumps(parameters)) if parameters else "",
                "media_format": {
                    "encoding": _TELNYX_ENCODINGS[self.audio_format.encoding],
                    "sample_rate": self.audio_format.sample_rate,
                    "channels": 1,
                },
            },
            "stream_id": self.stream_id,
        }
        return [_json({"event": "connected", "version": "1.0.0"}), _json(start)]

    def media(self, payload: bytes) -> Frame:
        if self._swap:
            payload = _swap16(payload)
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{{"event":"media","sequence_number":"{self._seq}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{self._ts}","payload":"{_b64(payload)}{self._tail}'
        )
        self._ts += int(self.audio_format.ms_for_bytes(len(payload)))
        return frame

    def dtmf(self, digit: str) -> Frame:
        return _json({
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            "sequence_number": self._next_seq(),
            "dtmf": {"digit": digit},
        })  # fmt: skip

    def mark_played(self, name: str) -> Frame | None:
        return _json({"event": "mark", "stream_id": self.stream_id, "sequence_number": self._next_seq(),
                      "mark": {"name": name}})  # fmt: skip

    def cleared(self) -> Frame | None:
        return None  # clear returns the queued marks; no other confirmation is documented

    def stop(self) -> Frame | None:
        return _json({
            "event": "stop",
            "sequence_number": self._next_seq(),
            "stop": {"user_id": "", "call_control_id": self.call_control_id},
            "stream_id": self.stream_id,
        })  # fmt: skip

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = _text(frame, "Telnyx")
        event = msg.get("event")
        if event == "media":
            audio = pybase64.b64decode(msg["media"]["payload"], validate=True)
            return [Inbound("media", audio=_swap16(audio) if self._swap else audio)]
        if event == "mark":
            return [Inbound("mark", name=msg["mark"]["name"])]
        if event == "clear":
            return [_CLEAR]
        raise ValueError(f"unexpected event {event!r}")


_PLIVO_TYPES = {Encoding.PCMU: "audio/x-mulaw", Encoding.L16: "audio/x-l16"}


class PlivoCaller:
    """Plivo audio streams (``<Stream bidirectional="true">``), as Plivo sends them.

    In: ``start`` (``start.callId``, ``streamId``, ``accountId``, ``tracks``,
    ``mediaFormat{encoding, sampleRate}``; top-level ``extra_headers`` and a numeric
    ``sequenceNumber``), ``media`` (``media.track``, ``timestamp`` = Unix ms as a string,
    numeric ``chunk``, ``payload``), ``dtmf``, ``playedStream`` (checkpoint reached),
    ``clearedAudio``. No ``stop``: the socket closes. Out (from the gateway): ``playAudio``
    (``media.contentType``, ``sampleRate``, ``payload``), ``checkpoint`` (``streamId``, ``name``),
    ``clearAudio`` (``streamId``).

    Source: https://plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference

    Args:
        encoding: ``pcmu`` (``contentType="audio/x-mulaw;rate=8000"``, default) or ``l16``.
        sample_rate: 8,000 Hz, or 16,000 for L16.
    """

    name = "plivo"

    def __init__(self, *, encoding: str = "pcmu", sample_rate: int = 8000) -> None:
        enc = Encoding(encoding.lower())
        if enc not in _PLIVO_TYPES or (enc is Encoding.PCMU and sample_rate != 8000) or sample_rate not in (8000, 16000):
            raise ValueError("Plivo streams μ-law at 8 kHz or L16 at 8 or 16 kHz")
        self.audio_format = AudioFormat(enc, sample_rate)
        self.content_type = _PLIVO_TYPES[enc]
        self.stream_id = str(uuid.uuid4())
        self.call_id = str(uuid.uuid4())
        self._extra = ""
        self._seq = 0
        self._chunk = 0
        self._t0_ms = int(time.time() * 1000)
        self._ts = 0
        self._sid = orjson.dumps(self.stream_id).decode()
        self._tail = '"}}'

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        self._extra = ";".join(f"{k}={v}" for k, v in parameters.items())
        self._seq += 1
        start = {
            "event": "start",
            "sequenceNumber": self._seq,
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": "MA" + "X" * 18,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": self.content_type, "sampleRate": self.audio_format.sample_rate},
            },
            "extra_headers": self._extra,
        }
        self._tail = '"},"extra_headers":' + orjson.dumps(self._extra).decode() + "}"
        return [_json(start)]

    def media(self, payload: bytes) -> Frame:
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{{"event":"media","sequenceNumber":{self._seq},"streamId":{self._sid},'
            f'"media":{{"track":"inbound","timestamp":"{self._t0_ms + self._ts}","chunk":{self._chunk},'
            f'"payload":"{_b64(payload)}{self._tail}'
        )
        self._ts += int(self.audio_format.ms_for_bytes(len(payload)))
        return frame

    def dtmf(self, digit: str) -> Frame:
        self._seq += 1
        return _json({
            "event": "dtmf",
            "sequenceNumber": self._seq,
            "streamId": self.stream_id,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(self._t0_ms + self._ts)},
            "extra_headers": self._extra,
        })  # fmt: skip

    def mark_played(self, name: str) -> Frame | None:
        self._seq += 1
        return _json({"event": "playedStream", "sequenceNumber": self._seq, "streamId": self.stream_id, "name": name})

    def cleared(self) -> Frame | None:
        self._seq += 1
        return _json({"event": "clearedAudio", "sequenceNumber": self._seq, "streamId": self.stream_id})

    def stop(self) -> Frame | None:
        return None  # Plivo documents no stop message: the socket closes

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = _text(frame, "Plivo")
        event = msg.get("event")
        if event == "playAudio":
            media = msg["media"]
            if media.get("contentType") != self.content_type or media.get("sampleRate") != self.audio_format.sample_rate:
                raise ValueError(f"playAudio as {media.get('contentType')}@{media.get('sampleRate')}, "
                                 f"stream is {self.content_type}@{self.audio_format.sample_rate}")
            return [Inbound("media", audio=pybase64.b64decode(media["payload"], validate=True))]
        if event == "checkpoint":
            if msg.get("streamId") != self.stream_id:
                raise ValueError("checkpoint for another stream")
            return [Inbound("mark", name=msg["name"])]
        if event == "clearAudio":
            if msg.get("streamId") != self.stream_id:
                raise ValueError("clearAudio for another stream")
            return [_CLEAR]
        raise ValueError(f"unexpected event {event!r}")


class VonageCaller:
    """Vonage Voice API WebSocket (NCCO ``connect`` to a ``websocket`` endpoint), as Vonage sends it.

    In: first a text ``{"event":"websocket:connected","content-type":"audio/l16;rate=16000", …}``
    with the NCCO endpoint's ``headers`` flattened in, then binary L16 frames of exactly 20 ms;
    text ``websocket:dtmf``, ``websocket:notify`` (echo of a ``notify`` action's payload) and
    ``websocket:cleared``. No stop message: the socket closes. Out (from the gateway): binary
    frames of exactly 20 ms (anything else makes Vonage close the socket),
    ``{"action":"notify","payload":…}``, ``{"action":"clear"}``.

    Source: https://developer.vonage.com/en/voice/voice-api/concepts/websockets

    Args:
        sample_rate: 8,000, 16,000 (default) or 24,000 Hz.
    """

    name = "vonage"

    def __init__(self, *, sample_rate: int = 16000) -> None:
        if sample_rate not in (8000, 16000, 24000):
            raise ValueError("Vonage streams L16 at 8, 16 or 24 kHz")
        self.audio_format = AudioFormat(Encoding.L16, sample_rate)
        self._frame_bytes = self.audio_format.bytes_for_ms(20)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        msg = {"event": "websocket:connected", "content-type": f"audio/l16;rate={self.audio_format.sample_rate}"}
        msg.update({k: v for k, v in parameters.items() if k not in msg})
        return [_json(msg)]

    def media(self, payload: bytes) -> Frame:
        return payload if type(payload) is bytes else bytes(payload)

    def dtmf(self, digit: str) -> Frame:
        return _json({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def mark_played(self, name: str) -> Frame | None:
        return _json({"event": "websocket:notify", "payload": {"name": name}})

    def cleared(self) -> Frame | None:
        return '{"event":"websocket:cleared"}'

    def stop(self) -> Frame | None:
        return None  # Vonage has no stop message: the socket closes

    def parse(self, frame: Frame) -> list[Inbound]:
        if isinstance(frame, (bytes, bytearray, memoryview)):
            if len(frame) != self._frame_bytes:
                raise ValueError(f"binary frame of {len(frame)} bytes; Vonage needs exactly {self._frame_bytes}")
            return [Inbound("media", audio=bytes(frame))]
        msg = orjson.loads(frame)
        action = msg.get("action")
        if action == "notify":
            return [Inbound("mark", name=msg["payload"]["name"])]
        if action == "clear":
            return [_CLEAR]
        raise ValueError(f"unexpected action {action!r}")


_EXOTEL_TYPES = {Encoding.L16: "audio/x-raw", Encoding.PCMU: "audio/x-mulaw"}


class ExotelCaller:
    """Exotel AgentStream (Voicebot applet, bidirectional), as Exotel sends it.

    In: ``connected``, ``start`` (``stream_sid`` at the top and in ``start``, ``call_sid``,
    ``account_sid``, ``from``, ``to``, ``custom_parameters``, ``media_format{encoding,
    sample_rate, bit_rate}`` as strings), ``media`` (``chunk``, ``timestamp``, base64 ``payload``),
    ``dtmf``, ``mark`` (echo), ``stop`` (``reason``). Out (from the gateway): ``media``,
    ``mark``, ``clear``, each with ``stream_sid``; media chunks are multiples of 320 bytes,
    3.2 KB to 100 KB.

    Source: https://developer.exotel.com/docs/agentstream/websocket-protocol

    Args:
        sample_rate: 8,000 (default), 16,000 or 24,000 Hz (``?sample-rate=`` on the stream URL).
        strict_chunks: reject gateway media that breaks the chunk-size rules.
    """

    name = "exotel"

    def __init__(self, *, sample_rate: int = 8000, strict_chunks: bool = True) -> None:
        if sample_rate not in (8000, 16000, 24000):
            raise ValueError("Exotel streams L16 at 8, 16 or 24 kHz")
        self.audio_format = AudioFormat(Encoding.L16, sample_rate)
        self.strict_chunks = strict_chunks
        self.stream_sid = "MZ" + uuid.uuid4().hex[:26]
        self.call_sid = "CA" + uuid.uuid4().hex[:26]
        self._seq = 0
        self._chunk = 0
        self._ts = 0
        self._head = '{"event":"media","sequence_number":"'
        self._sid = orjson.dumps(self.stream_sid).decode()

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        start = {
            "event": "start",
            "sequence_number": self._next_seq(),
            "stream_sid": self.stream_sid,
            "start": {
                "stream_sid": self.stream_sid,
                "call_sid": self.call_sid,
                "account_sid": "AC" + "x" * 26,
                "from": "+919876543210",
                "to": "+918047491899",
                "custom_parameters": dict(parameters),
                "media_format": {
                    "encoding": _EXOTEL_TYPES[self.audio_format.encoding],
                    "sample_rate": str(self.audio_format.sample_rate),
                    "bit_rate": "16",
                },
            },
        }
        return [_json({"event": "connected"}), _json(start)]

    def media(self, payload: bytes) -> Frame:
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{self._head}{self._seq}","stream_sid":{self._sid},"media":{{"chunk":"{self._chunk}",'
            f'"timestamp":"{self._ts}","payload":"{_b64(payload)}"}}}}'
        )
        self._ts += int(self.audio_format.ms_for_bytes(len(payload)))
        return frame

    def dtmf(self, digit: str) -> Frame:
        return _json({"event": "dtmf", "sequence_number": self._next_seq(), "stream_sid": self.stream_sid,
                      "dtmf": {"digit": digit, "duration": "100"}})  # fmt: skip

    def mark_played(self, name: str) -> Frame | None:
        return _json({"event": "mark", "sequence_number": self._next_seq(), "stream_sid": self.stream_sid,
                      "mark": {"name": name}})  # fmt: skip

    def cleared(self) -> Frame | None:
        return None

    def stop(self) -> Frame | None:
        return _json({
            "event": "stop",
            "sequence_number": self._next_seq(),
            "stream_sid": self.stream_sid,
            "stop": {"call_sid": self.call_sid, "account_sid": "AC" + "x" * 26, "reason": "callended"},
        })  # fmt: skip

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = _text(frame, "Exotel")
        if msg.get("stream_sid") != self.stream_sid:
            raise ValueError("message for another stream")
        event = msg.get("event")
        if event == "media":
            audio = pybase64.b64decode(msg["media"]["payload"], validate=True)
            n = len(audio)
            if self.strict_chunks and (n % 320 or n > 100_000 or n == 0):
                raise ValueError(f"media chunk of {n} bytes: Exotel needs a multiple of 320, at most 100 KB")
            return [Inbound("media", audio=audio)]
        if event == "mark":
            return [Inbound("mark", name=msg["mark"]["name"])]
        if event == "clear":
            return [_CLEAR]
        raise ValueError(f"unexpected event {event!r}")


class RawCaller:
    """The gateway's own raw protocol: binary PCM16 LE frames plus small JSON control messages."""

    name = "raw"

    def __init__(self, *, sample_rate: int = 16000) -> None:
        self.audio_format = AudioFormat(Encoding.L16, sample_rate)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        start = {"event": "start", "sampleRate": self.audio_format.sample_rate, "encoding": "l16",
                 "customParameters": parameters}
        return [_json(start)]

    def media(self, payload: bytes) -> Frame:
        return payload

    def dtmf(self, digit: str) -> Frame:
        return _json({"event": "dtmf", "digit": digit})

    def mark_played(self, name: str) -> Frame | None:
        return _json({"event": "mark", "name": name})

    def cleared(self) -> Frame | None:
        return '{"event":"cleared"}'

    def stop(self) -> Frame | None:
        return _json({"event": "stop"})

    def parse(self, frame: Frame) -> list[Inbound]:
        if isinstance(frame, bytes):
            return [Inbound("media", audio=frame)]
        msg = orjson.loads(frame)
        event = msg.get("event")
        if event == "mark":
            return [Inbound("mark", name=msg["name"])]
        if event == "clear":
            return [_CLEAR]
        if event in ("started", "error"):
            return []
        raise ValueError(f"unexpected event {event!r}")


DIALECTS = {
    "twilio": TwilioCaller,
    "telnyx": TelnyxCaller,
    "plivo": PlivoCaller,
    "vonage": VonageCaller,
    "exotel": ExotelCaller,
    "raw": RawCaller,
}


def make_dialect(name: str, **options) -> CallerDialect:
    """A fresh caller-side dialect by carrier name (``options`` go to its constructor).

    Raises:
        ValueError: no simulated caller speaks that protocol, or bad options.
    """
    try:
        cls = DIALECTS[name]
    except KeyError:
        raise ValueError(f"no simulated caller for {name!r}; choose one of {sorted(DIALECTS)}") from None
    return cls(**options)
