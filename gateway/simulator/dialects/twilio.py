"""The twilio carrier side, for simulated callers (see :mod:`gateway.simulator.dialects`)."""

from __future__ import annotations

import uuid

import orjson
import pybase64

from gateway.formats import PCMU_8K
from gateway.simulator.dialects._common import Frame, Inbound, json_text, b64, json_object, CLEAR

__all__ = ["TwilioCaller"]


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
        return [json_text(connected), json_text(start)]

    def media(self, payload: bytes) -> Frame:
        # {"event":"media","sequenceNumber":"n","media":{"track":"inbound","chunk":"k",
        #  "timestamp":"ms","payload":"…"},"streamSid":"MZ…"}, built without a dict per frame.
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{{"event":"media","sequenceNumber":"{self._seq}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{self._ts}","payload":"{b64(payload)}{self._tail}'
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
        return json_text(msg)

    def mark_played(self, name: str) -> Frame | None:
        msg = {
            "event": "mark",
            "sequenceNumber": self._next_seq(),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }
        return json_text(msg)

    def cleared(self) -> Frame | None:
        return None  # Twilio echoes pending marks on clear, and sends nothing else

    def stop(self) -> Frame | None:
        msg = {
            "event": "stop",
            "sequenceNumber": self._next_seq(),
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }
        return json_text(msg)

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = json_object(frame, "Twilio")
        if msg.get("streamSid") != self.stream_sid:
            raise ValueError("message for another stream")
        event = msg.get("event")
        if event == "media":
            return [Inbound("media", audio=pybase64.b64decode(msg["media"]["payload"], validate=True))]
        if event == "mark":
            return [Inbound("mark", name=msg["mark"]["name"])]
        if event == "clear":
            return [CLEAR]
        raise ValueError(f"unexpected event {event!r}")
