"""The load driver's caller audio and scripts: the recordings at every rate, and each caller's script.

Split from :mod:`gateway.simulator.load` (which re-exports both names).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.simulator.caller import BargeIn, Pause, Say, Step, WaitForAgent
from gateway.simulator.run import load_wav, to_rate

__all__ = ["Lines", "build_script", "SHARED_AUDIO"]

SHARED_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


@dataclass
class Lines:
    """The caller's recordings (int16 at 16 kHz), resampled per dialect rate on demand."""

    lines: list[np.ndarray]
    interrupt: np.ndarray
    goodbye: np.ndarray
    _cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path = SHARED_AUDIO) -> Lines:
        def wav(rel: str) -> np.ndarray:
            path = root / rel
            if not path.exists():  # a fresh clone without ../shared: tone bursts stand in
                t = np.arange(24000) / 16000
                return (np.sin(2 * np.pi * 300 * t) * 6000 * (t > 0.2)).astype(np.int16)
            pcm, rate = load_wav(path)
            return to_rate(pcm, rate, 16000) if rate != 16000 else pcm

        lines = [wav(f"caller/{n}.wav") for n in ("reschedule", "confirm")]
        lines += [wav(f"speech/{n}.wav") for n in ("cards-002", "goforward", "librivox-0880")]
        return cls(lines, wav("caller/interrupt.wav"), wav("caller/goodbye.wav"))

    def at(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        key = (id(pcm), rate)
        if key not in self._cache:
            self._cache[key] = pcm if rate == 16000 else to_rate(pcm, 16000, rate)
        return self._cache[key]


def build_script(lines: Lines, rate: int, rng: random.Random, *, barge_in: bool = True, kind: str = "full") -> list[Step]:
    """``full``: greeting → pause → a line → barge-in over the long reply → answer → goodbye → hang up.

    ``short`` (smoke tests): greeting → goodbye → answer → hang up.
    """
    if kind == "short":
        return [WaitForAgent(timeout_s=15, quiet_ms=300), Say(lines.at(lines.goodbye, rate), "goodbye"),
                WaitForAgent(timeout_s=15, quiet_ms=300)]  # fmt: skip
    line = lines.at(rng.choice(lines.lines), rate)
    script: list[Step] = [WaitForAgent(timeout_s=20, quiet_ms=500), Pause(rng.randint(200, 600)), Say(line, "line")]
    if barge_in:
        script.append(BargeIn(lines.at(lines.interrupt, rate), after_ms=rng.randint(700, 1100), timeout_s=20,
                              label="interrupt"))  # fmt: skip
    script += [
        WaitForAgent(timeout_s=20, quiet_ms=700),
        Pause(rng.randint(300, 700)),
        Say(lines.at(lines.goodbye, rate), "goodbye"),
        WaitForAgent(timeout_s=20, quiet_ms=500),
    ]
    return script
