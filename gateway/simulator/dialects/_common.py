"""What every simulated caller dialect shares: the inbound message type, the dialect
protocol, and small JSON / base64 / byte-order helpers."""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Protocol

import orjson
import pybase64

from gateway.formats import AudioFormat

__all__ = ["Frame", "Inbound", "CallerDialect", "CLEAR", "json_text", "b64", "swap16", "json_object"]

Frame = str | bytes


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from the gateway: ``kind`` is ``media`` (with ``audio``), ``mark``, ``clear``."""

    kind: str
    audio: bytes = b""
    name: str = ""


CLEAR = Inbound("clear")


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


def json_text(msg: dict) -> str:
    return orjson.dumps(msg).decode()


def b64(payload: bytes) -> str:
    return pybase64.b64encode_as_string(payload)


def swap16(data: bytes) -> bytes:
    samples = array.array("h")
    samples.frombytes(data)
    samples.byteswap()
    return samples.tobytes()


def json_object(frame: Frame, carrier: str) -> dict:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        raise ValueError(f"{carrier} never sends binary frames to the caller side")
    msg = orjson.loads(frame)
    if type(msg) is not dict:
        raise ValueError("not a JSON object")
    return msg
