"""The plivo carrier side, for simulated callers (see :mod:`gateway.simulator.dialects`)."""

from __future__ import annotations

import time
import uuid

import orjson
import pybase64

from gateway.formats import AudioFormat, Encoding
from gateway.simulator.dialects._common import Frame, Inbound, json_text, b64, json_object, CLEAR

__all__ = ["PlivoCaller"]


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
        return [json_text(start)]

    def media(self, payload: bytes) -> Frame:
        self._seq += 1
        self._chunk += 1
        frame = (
            f'{{"event":"media","sequenceNumber":{self._seq},"streamId":{self._sid},'
            f'"media":{{"track":"inbound","timestamp":"{self._t0_ms + self._ts}","chunk":{self._chunk},'
            f'"payload":"{b64(payload)}{self._tail}'
        )
        self._ts += int(self.audio_format.ms_for_bytes(len(payload)))
        return frame

    def dtmf(self, digit: str) -> Frame:
        self._seq += 1
        return json_text({
            "event": "dtmf",
            "sequenceNumber": self._seq,
            "streamId": self.stream_id,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(self._t0_ms + self._ts)},
            "extra_headers": self._extra,
        })  # fmt: skip

    def mark_played(self, name: str) -> Frame | None:
        self._seq += 1
        return json_text({"event": "playedStream", "sequenceNumber": self._seq, "streamId": self.stream_id, "name": name})

    def cleared(self) -> Frame | None:
        self._seq += 1
        return json_text({"event": "clearedAudio", "sequenceNumber": self._seq, "streamId": self.stream_id})

    def stop(self) -> Frame | None:
        return None  # Plivo documents no stop message: the socket closes

    def parse(self, frame: Frame) -> list[Inbound]:
        msg = json_object(frame, "Plivo")
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
            return [CLEAR]
        raise ValueError(f"unexpected event {event!r}")
