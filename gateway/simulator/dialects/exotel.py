"""The exotel carrier side, for simulated callers (see :mod:`gateway.simulator.dialects`)."""

from __future__ import annotations

import uuid

import orjson
import pybase64

from gateway.formats import AudioFormat, Encoding
from gateway.simulator.dialects._common import Frame, Inbound, json_text, b64, json_object, CLEAR

__all__ = ["ExotelCaller"]


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
        return [json_text({"event": "connected"}), json_text(start)]

    def media(self, payload: bytes) -> Frame:
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{self._head}{self._seq}","stream_sid":{self._sid},"media":{{"chunk":"{self._chunk}",'
            f'"timestamp":"{self._ts}","payload":"{b64(payload)}"}}}}'
        )
        self._ts += int(self.audio_format.ms_for_bytes(len(payload)))
        return frame

    def dtmf(self, digit: str) -> Frame:
        return json_text({"event": "dtmf", "sequence_number": self._next_seq(), "stream_sid": self.stream_sid,
                      "dtmf": {"digit": digit, "duration": "100"}})  # fmt: skip

    def mark_played(self, name: str) -> Frame | None:
        return json_text({"event": "mark", "sequence_number": self._next_seq(), "stream_sid": self.stream_sid,
                      "mark": {"name": name}})  # fmt: skip

    def cleared(self) -> Frame | None:
        return None

    def stop(self) -> Frame | None:
        return json_text({
            "event": "stop",
            "sequence_number": self._next_seq(),
            "stream_sid": self.stream_sid,
            "stop": {"call_sid": self.call_sid, "account_sid": "AC" + "x" * 26, "reason": "callended"},
        })  # fmt: skip

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = json_object(frame, "Exotel")
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
            return [CLEAR]
        raise ValueError(f"unexpected event {event!r}")
