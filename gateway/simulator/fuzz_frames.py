"""Fuzzed carrier frames for one simulated call: valid traffic in a dialect, mixed with bad input.

Used by :mod:`gateway.simulator.fuzz` (``gateway fuzz``). A :class:`CallFuzzer` speaks one
carrier dialect of :mod:`gateway.simulator.dialects` and draws, from a seeded
:class:`random.Random`, the frames of one call:

* the opening (hello + ``start``) — sometimes with a sample rate the carrier does not document
  (``7999``, ``2``, ``44100`` …: the call must end ``bad_start``), sometimes after media or DTMF
  sent before ``start``, sometimes missing;
* then a mix (weights in :data:`MIX`): valid 20 ms media frames (random audio, silence, or a
  wrong length), DTMF floods, mark acknowledgements for names the gateway never sent, unknown
  events, documented messages with one field mutated (wrong type, unicode digits, huge
  numbers, nesting up to 1,000 levels, deleted), truncated JSON, random text and bytes,
  frames over the adapters' 64 KiB limit, a second ``start``;
* the end: the carrier's ``stop`` (if it has one) or nothing (the socket just closes).

Everything is produced without I/O; the runner sends the frames. The fuzzer only builds frames
through the dialect's own documented shapes, so the valid part is what carriers really send.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any, Callable

import orjson
import pybase64

from gateway.simulator.dialects import CallerDialect, Frame, make_dialect

__all__ = ["CallFuzzer", "MIX", "ODD_RATES", "dialect_options"]

#: Sample rates no carrier documents (2 and 5 once crashed a call; 7,999 and 11,025 designed a
#: ~90 MB resampler on the event loop).
ODD_RATES = (0, 1, 2, 5, 7999, 8001, 11025, 12000, 32000, 44100, 96000, -8000, 10**12)

#: Frame kinds after the opening and the relative weight of each draw. A ``dtmf_flood`` draw is
#: a burst of 5–60 frames, so by frame count the mix is about 47 % valid media, 12 % DTMF,
#: 10 % marks and unknown events, 30 % malformed.
MIX: dict[str, int] = {
    "media": 150,
    "media_odd_size": 12,
    "dtmf": 6,
    "dtmf_flood": 1,
    "mark_unknown": 15,
    "cleared": 3,
    "unknown_event": 15,
    "mutated": 45,
    "truncated": 12,
    "random_text": 9,
    "random_bytes": 9,
    "oversize": 3,
    "second_start": 3,
    "deep": 3,
}

_ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**63 - 1, -(2**63), "__FUZZ_HUGE__", 1.5, -0.0, 1e300, "", " ", "²", "٥", "８０００", "1_0",
    " 8000", "9" * 30, "x" * 2000, "\u0000", "\ud7ff\ue000", [], [1, "a"], {}, {"k": {"k": ["v"]}},
)  # fmt: skip
_DIGITS = "0123456789*#ABCD"
_DEEP = "__FUZZ_DEEP__"
#: Spliced in as JSON text: a number beyond 64 bits (orjson cannot serialise one).
_HUGE = ('"__FUZZ_HUGE__"', "1" + "0" * 40)
_RATE_KEY = re.compile(r"sample_?rate", re.IGNORECASE)


def dialect_options(name: str, rng: random.Random) -> dict[str, Any]:
    """Constructor options for ``name``'s dialect: one of the formats that carrier documents."""
    if name == "telnyx":
        return rng.choice([{}, {"encoding": "pcma"}, {"encoding": "l16", "sample_rate": rng.choice([8000, 16000])}])
    if name == "plivo":
        return rng.choice([{}, {"encoding": "l16", "sample_rate": rng.choice([8000, 16000])}])
    if name in ("vonage", "exotel"):
        return {"sample_rate": rng.choice([8000, 16000, 24000])}
    if name == "raw":
        return {"sample_rate": rng.choice([8000, 16000, 24000, 48000])}
    return {}


class CallFuzzer:
    """The frames of one fuzzed call in one carrier dialect.

    Every choice comes from ``rng``, so a seed reproduces a call's sequence of frames (the
    dialects' stream and call ids are random uuids).

    Args:
        name: a carrier dialect (``twilio``, ``telnyx``, ``plivo``, ``vonage``, ``exotel``, ``raw``).
        rng: the randomness (seed it for a reproducible call).
        parameters: custom parameters of the ``start`` message.

    Attributes:
        dialect: the caller-side dialect that builds the valid frames.
        odd_start: True when this call's ``start`` asks for an undocumented sample rate.
    """

    def __init__(self, name: str, rng: random.Random, *, parameters: dict[str, str] | None = None) -> None:
        self.rng = rng
        self.dialect: CallerDialect = make_dialect(name, **dialect_options(name, rng))
        self.parameters = parameters or {}
        self.odd_start = rng.random() < 0.08
        self._frame_bytes = self.dialect.audio_format.bytes_for_ms(20)
        self._opening = self.dialect.opening(self.parameters)
        kinds, weights = zip(*MIX.items())
        self._kinds: tuple[str, ...] = kinds
        self._weights: tuple[int, ...] = weights
        self._build: dict[str, Callable[[], list[Frame]]] = {k: getattr(self, "_" + k) for k in kinds}

    # ------------------------------------------------------------------ the call

    def opening(self) -> list[Frame]:
        """Hello and ``start`` (maybe odd, maybe preceded by early frames, rarely absent)."""
        rng = self.rng
        frames = list(self._opening)
        if self.odd_start:
            frames[-1] = self._odd_rate_start(frames[-1])
        roll = rng.random()
        if roll < 0.05:  # media and DTMF before start: counted before_start errors
            early = [self._media()[0], self.dialect.dtmf(rng.choice(_DIGITS)), *self._mutated()]
            frames = early + frames
        elif roll < 0.07:  # no start at all: the call ends no_start when the socket closes
            frames = frames[:-1]
        return frames

    def next_frames(self) -> list[Frame]:
        """One draw of the mix (one frame, or a burst for floods)."""
        kind = self.rng.choices(self._kinds, self._weights)[0]
        return self._build[kind]()

    def closing(self) -> list[Frame]:
        """The carrier's ``stop`` three calls in four (if it has one), else nothing."""
        stop = self.dialect.stop()
        return [stop] if stop is not None and self.rng.random() < 0.75 else []

    def ack(self, mark_name: str) -> Frame | None:
        """The carrier's acknowledgement of a mark the gateway sent (a valid echo)."""
        return self.dialect.mark_played(mark_name)

    # ------------------------------------------------------------------ frame kinds

    def _audio(self, n: int) -> bytes:
        roll = self.rng.random()
        if roll < 0.5:
            return self.rng.randbytes(n)
        fill = b"\xff" if self.dialect.audio_format.encoding.bytes_per_sample == 1 else b"\x00"
        return fill * n

    def _media(self) -> list[Frame]:
        return [self.dialect.media(self._audio(self._frame_bytes))]

    def _media_odd_size(self) -> list[Frame]:
        n = self.rng.choice([0, 1, 3, self._frame_bytes - 1, self._frame_bytes + 1, self._frame_bytes * 7 + 1, 30_000])
        audio = self._audio(n)
        try:
            return [self.dialect.media(audio)]
        except ValueError:  # the dialect cannot say it (odd L16 for Telnyx, Exotel's chunk rule)
            frame = self.dialect.media(self._audio(self._frame_bytes))
            if isinstance(frame, bytes):
                return [audio]
            msg = orjson.loads(frame)
            msg["media"]["payload"] = pybase64.b64encode_as_string(audio)
            return [orjson.dumps(msg).decode()]

    def _dtmf(self) -> list[Frame]:
        return [self.dialect.dtmf(self.rng.choice(_DIGITS))]

    def _dtmf_flood(self) -> list[Frame]:
        digit = self.rng.choice(_DIGITS)
        return [self.dialect.dtmf(digit) for _ in range(self.rng.randint(5, 60))]

    def _mark_unknown(self) -> list[Frame]:
        name = self.rng.choice(["g0.bogus", "", "m" * 300, "g99:1", "²", str(self.rng.random())])
        frame = self.dialect.mark_played(name)
        return [frame] if frame is not None else self._unknown_event()

    def _cleared(self) -> list[Frame]:
        frame = self.dialect.cleared()
        return [frame] if frame is not None else self._media()

    def _unknown_event(self) -> list[Frame]:
        event = self.rng.choice(["bogus", "x" * 200, f"e{self.rng.randrange(10**9)}", "Media", "START", ""])
        return [orjson.dumps({"event": event, "x": self.rng.random()}).decode()]

    def _documented(self) -> dict:
        """One of the dialect's JSON messages, as a dict to mutate.

        Not ``stop``: a mutation that leaves it valid would end most calls after a few hundred
        frames (the closing sends a real one).
        """
        candidates = [f for f in (*self._opening, self.dialect.dtmf("5"), self.dialect.mark_played("m"),
                                  self._media()[0]) if isinstance(f, str)]  # fmt: skip
        return orjson.loads(self.rng.choice(candidates))

    def _mutated(self) -> list[Frame]:
        msg = self._documented()
        deep = False
        for _ in range(self.rng.randint(1, 3)):
            paths = _paths(msg)
            if not paths:
                break
            path = self.rng.choice(paths)
            parent = msg
            for key in path[:-1]:
                parent = parent[key]
            roll = self.rng.random()
            if roll < 0.15:
                del parent[path[-1]]
            elif roll < 0.2 and not deep:
                parent[path[-1]], deep = _DEEP, True
            else:
                parent[path[-1]] = copy.deepcopy(self.rng.choice(_ODD_VALUES))  # never share
        text = orjson.dumps(msg).decode().replace(*_HUGE)
        if deep:
            depth = self.rng.choice([17, 100, 255, 300, 1000])
            text = text.replace(f'"{_DEEP}"', "[" * depth + '"x"' + "]" * depth)
        return [text]

    def _truncated(self) -> list[Frame]:
        text = orjson.dumps(self._documented()).decode()
        return [text[: self.rng.randrange(len(text))]]

    def _random_text(self) -> list[Frame]:
        n = self.rng.randint(0, 200)
        return ["".join(chr(self.rng.choice([self.rng.randrange(32, 127), self.rng.randrange(0x80, 0x2FFF)]))
                        for _ in range(n))]  # fmt: skip

    def _random_bytes(self) -> list[Frame]:
        return [self.rng.randbytes(self.rng.choice([1, 2, 17, 160, 320, 641, 2048]))]

    def _oversize(self) -> list[Frame]:
        if self.rng.random() < 0.5:
            return [self.rng.randbytes(70_000)]
        return ['{"event":"media","pad":"' + "A" * 70_000 + '"}']

    def _second_start(self) -> list[Frame]:
        start = self._opening[-1]
        return [self._odd_rate_start(start) if self.rng.random() < 0.5 else start]

    def _deep(self) -> list[Frame]:
        depth = self.rng.choice([300, 1000, 1023, 2000])
        return ['{"event":"start","start":' + "[" * depth + "]" * depth + "}"]

    def _odd_rate_start(self, start: Frame) -> Frame:
        """``start`` with its sample rate replaced by one the carrier does not document."""
        rate = self.rng.choice(ODD_RATES)
        msg = orjson.loads(start)
        if "content-type" in msg:  # Vonage: audio/l16;rate=16000
            msg["content-type"] = f"audio/l16;rate={rate}"
        elif not _set_rate(msg, rate):
            msg["sampleRate"] = rate
        return orjson.dumps(msg).decode()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out: list[tuple] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    return out


def _set_rate(node: Any, rate: int) -> bool:
    """Set every ``sampleRate`` / ``sample_rate`` key under ``node``; True if there was one."""
    found = False
    if isinstance(node, dict):
        for key, value in node.items():
            if _RATE_KEY.fullmatch(key):
                node[key] = rate if isinstance(value, int) else str(rate)
                found = True
            else:
                found = _set_rate(value, rate) or found
    return found
