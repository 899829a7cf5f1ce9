"""The raw carrier side, for simulated callers (see :mod:`gateway.simulator.dialects`)."""

from __future__ import annotations


import orjson

from gateway.formats import AudioFormat, Encoding
from gateway.simulator.dialects._common import Frame, Inbound, json_text, CLEAR

__all__ = ["RawCaller"]


class RawCaller:
    """The gateway's own raw protocol: binary PCM16 LE frames plus small JSON control messages."""

    name = "raw"

    def __init__(self, *, sample_rate: int = 16000) -> None:
        self.audio_format = AudioFormat(Encoding.L16, sample_rate)

    def opening(self, parameters: dict[str, str]) -> list[Frame]:
        start = {"event": "start", "sampleRate": self.audio_format.sample_rate, "encoding": "l16",
                 "customParameters": parameters}
        return [json_text(start)]

    def media(self, payload: bytes) -> Frame:
        return payload

    def dtmf(self, digit: str) -> Frame:
        return json_text({"event": "dtmf", "digit": digit})

    def mark_played(self, name: str) -> Frame | None:
        return json_text({"event": "mark", "name": name})

    def cleared(self) -> Frame | None:
        return '{"event":"cleared"}'

    def stop(self) -> Frame | None:
        return json_text({"event": "stop"})

    def parse(self, frame: Frame) -> list[Inbound]:
        if isinstance(frame, bytes):
            return [Inbound("media", audio=frame)]
        msg = orjson.loads(frame)
        event = msg.get("event")
        if event == "mark":
            return [Inbound("mark", name=msg["name"])]
        if event == "clear":
            return [CLEAR]
        if event in ("started", "error"):
            return []
        raise ValueError(f"unexpected event {event!r}")
