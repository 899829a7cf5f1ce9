"""The vonage carrier side, for simulated callers (see :mod:`gateway.simulator.dialects`)."""

from __future__ import annotations


import orjson

from gateway.formats import AudioFormat, Encoding
from gateway.simulator.dialects._common import Frame, Inbound, json_text, CLEAR

__all__ = ["VonageCaller"]


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
        return [json_text(msg)]

    def media(self, payload: bytes) -> Frame:
        return payload if type(payload) is bytes else bytes(payload)

    def dtmf(self, digit: str) -> Frame:
        return json_text({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def mark_played(self, name: str) -> Frame | None:
        return json_text({"event": "websocket:notify", "payload": {"name": name}})

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
            return [CLEAR]
        raise ValueError(f"unexpected action {action!r}")
