"""The carrier side of each media-stream protocol, for simulated callers.

A dialect builds the messages a carrier sends (hello, start, media, DTMF, mark echoes, stop)
and reads the messages a gateway sends back (media, mark, clear). It is the mirror image of
the adapters in :mod:`gateway.carriers`, written from the carriers' documentation rather than
from those adapters, so a test that pairs them checks one against the other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import orjson
import pybase64

from gateway.formats import PCMU_8K, AudioFormat, Encoding

__all__ = ["CallerDialect", "TwilioCaller", "RawCaller", "Inbound", "make_dialect", "DIALECTS"]

Frame = str | bytes


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from the gateway: ``kind`` is ``media`` (with ``audio``), ``mark``, ``clear``."""

    kind: str
    audio: bytes = b""
    name: str = ""


class CallerDialect(Protocol):
    """One carrier's side of the protocol, for one simulated call."""

    name: str
    audio_format: AudioFormat

    def opening(self, parameters: dict[str, str]) -> list[Frame]: ...

    def media(self, payload: bytes) -> Frame: ...

    def dtmf(self, digit: str) -> Frame: ...

    def mark_played(self, name: str) -> Frame | None: ...

    def stop(self) -> Frame | None: ...

    def parse(self, frame: Frame) -> list[Inbound]: ...


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
        return [orjson.dumps(connected).decode(), orjson.dumps(start).decode()]

    def media(self, payload: bytes) -> Frame:
        self._chunk += 1
        msg = {
            "event": "media",
            "sequenceNumber": self._next_seq(),
            "media": {
                "track": "inbound",
                "chunk": str(self._chunk),
                "timestamp": str(self._ts),
                "payload": pybase64.b64encode(payload).decode(),
            },
            "streamSid": self.stream_sid,
        }
        self._ts += len(payload) // 8
        return orjson.dumps(msg).decode()

    def dtmf(self, digit: str) -> Frame:
        msg = {
            "event": "dtmf",
            "streamSid": self.stream_sid,
            "sequenceNumber": self._next_seq(),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
        return orjson.dumps(msg).decode()

    def mark_played(self, name: str) -> Frame | None:
        msg = {
            "event": "mark",
            "sequenceNumber": self._next_seq(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }
        return orjson.dumps(msg).decode()

    def stop(self) -> Frame | None:
        msg = {
            "event": "stop",
            "sequenceNumber": self._next_seq(),
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }
        return orjson.dumps(msg).decode()

    def parse(self, frame: Frame) -> list[Inbound]:
        if isinstance(frame, bytes):
            raise ValueError("Twilio never sends binary frames to the caller side")
        msg = orjson.loads(frame)
        if msg.get("streamSid") != self.stream_sid:
            raise ValueError("message for another stream")
        event = msg.get("event")
        if event == "media":
            return [Inbound("media", audio=pybase64.b64decode(msg["media"]["payload"], validate=True))]
        if event == "mark":
            return [Inbound("mark", name=msg["mark"]["name"])]
        if event == "clear":
            return [Inbound("clear")]
        raise ValueError(f"unexpected event {event!r}")


class RawCaller:
    """The gateway's own raw protocol: binary PCM16 LE frames plus small JSON control messages."""

    name = "raw"

    def __init__(self, *, sample_rate: int = 16000) -> None:
        self.audio_format = AudioFormat(Encoding.L16, sample_rate)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        start = {"event": "start", "sampleRate": self.audio_format.sample_rate, "encoding": "l16",
                 "customParameters": parameters}
        return [orjson.dumps(start).decode()]

    def media(self, payload: bytes) -> Frame:
        return payload

    def dtmf(self, digit: str) -> Frame:
        return orjson.dumps({"event": "dtmf", "digit": digit}).decode()

    def mark_played(self, name: str) -> Frame | None:
        return orjson.dumps({"event": "mark", "name": name}).decode()

    def stop(self) -> Frame | None:
        return orjson.dumps({"event": "stop"}).decode()

    def parse(self, frame: Frame) -> list[Inbound]:
        if isinstance(frame, bytes):
            return [Inbound("media", audio=frame)]
        msg = orjson.loads(frame)
        event = msg.get("event")
        if event == "mark":
            return [Inbound("mark", name=msg["name"])]
        if event == "clear":
            return [Inbound("clear")]
        if event in ("started", "error"):
            return []
        raise ValueError(f"unexpected event {event!r}")


DIALECTS = {"twilio": TwilioCaller, "raw": RawCaller}


def make_dialect(name: str) -> CallerDialect:
    """A fresh caller-side dialect by carrier name.

    Raises:
        ValueError: no simulated caller speaks that protocol.
    """
    try:
        return DIALECTS[name]()
    except KeyError:
        raise ValueError(f"no simulated caller for {name!r}; choose one of {sorted(DIALECTS)}") from None
