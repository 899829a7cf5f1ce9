"""The telnyx carrier side, for simulated callers (see :mod:`gateway.simulator.dialects`)."""

from __future__ import annotations

import time
import uuid

import orjson
import pybase64

from gateway.formats import AudioFormat, Encoding
from gateway.simulator.dialects._common import Frame, Inbound, json_text, b64, swap16, json_object, CLEAR

__all__ = ["TelnyxCaller"]


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
                "client_state": b64(orjson.dumps(parameters)) if parameters else "",
                "media_format": {
                    "encoding": _TELNYX_ENCODINGS[self.audio_format.encoding],
                    "sample_rate": self.audio_format.sample_rate,
                    "channels": 1,
                },
            },
            "stream_id": self.stream_id,
        }
        return [json_text({"event": "connected", "version": "1.0.0"}), json_text(start)]

    def media(self, payload: bytes) -> Frame:
        if self._swap:
            payload = swap16(payload)
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{{"event":"media","sequence_number":"{self._seq}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{self._ts}","payload":"{b64(payload)}{self._tail}'
        )
        self._ts += int(self.audio_format.ms_for_bytes(len(payload)))
        return frame

    def dtmf(self, digit: str) -> Frame:
        return json_text({
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            "sequence_number": self._next_seq(),
            "dtmf": {"digit": digit},
        })  # fmt: skip

    def mark_played(self, name: str) -> Frame | None:
        return json_text({"event": "mark", "stream_id": self.stream_id, "sequence_number": self._next_seq(),
                      "mark": {"name": name}})  # fmt: skip

    def cleared(self) -> Frame | None:
        return None  # clear returns the queued marks; no other confirmation is documented

    def stop(self) -> Frame | None:
        return json_text({
            "event": "stop",
            "sequence_number": self._next_seq(),
            "stop": {"user_id": "", "call_control_id": self.call_control_id},
            "stream_id": self.stream_id,
        })  # fmt: skip

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = json_object(frame, "Telnyx")
        event = msg.get("event")
        if event == "media":
            audio = pybase64.b64decode(msg["media"]["payload"], validate=True)
            return [Inbound("media", audio=swap16(audio) if self._swap else audio)]
        if event == "mark":
            return [Inbound("mark", name=msg["mark"]["name"])]
        if event == "clear":
            return [CLEAR]
        raise ValueError(f"unexpected event {event!r}")
