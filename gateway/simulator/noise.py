"""Line noise for simulated callers: what a phone line carries when nobody speaks.

A real call is never digital zero between words: the far end's microphone, the handset and the
network's comfort-noise generator leave a low hiss, typically −65…−50 dBFS on the PSTN
(ITU-T G.711 Appendix II / RFC 3389 comfort noise is specified by level and a coarse spectrum).
Digital zero is also the cheapest input for the gateway's Silero pre-gate (``GATEWAY_VAD_PREGATE``,
:mod:`gateway.audio.pregate`), which must learn each line's noise floor before it skips its
noise, so a benchmark that sends it measures a cheaper path than users' calls take.

:class:`LineNoise` makes that hiss: Gaussian white noise through a one-pole low-pass (a gentle
downward spectral tilt, as on a telephone line), at a fixed RMS level in dBFS chosen per call.
It is continuous across frames (the filter keeps its state), and the caller adds it under its
speech too, so every frame it sends carries it. Levels are chosen to stay below speech: the
tests check that Silero and WebRTC VAD score it as silence at 8 and 16 kHz.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LineNoise", "dbfs"]

_FULL_SCALE = 32768.0


def dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 ``pcm`` in dBFS (−inf for digital zero)."""
    if pcm.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * np.log10(rms / _FULL_SCALE) if rms > 0 else float("-inf")


class LineNoise:
    """Continuous comfort noise at ``level_dbfs`` (RMS), int16 at ``sample_rate``.

    The noise is a loop of ``period_s`` seconds, shaped in the frequency domain (circular, so
    the loop has no seam) and scaled to the exact level; frames are read from it in turn, so
    the per-frame cost is a slice (the load driver runs hundreds of callers in one process).

    Args:
        sample_rate: samples per second (8000, 16000, …).
        level_dbfs: RMS level, dBFS (−58…−50 is a quiet but real line).
        tilt: the coefficient ``a`` of the one-pole low-pass ``1 / (1 − a z⁻¹)`` in [0, 1):
            0 is white; 0.5 (default) puts the top of the band ~9.5 dB below the bottom.
        period_s: length of the loop, seconds.
        seed: random seed (each call its own).

    Raises:
        ValueError: ``level_dbfs`` not below −20 dBFS (that is speech, not line noise), or
            ``tilt`` out of range.
    """

    def __init__(self, sample_rate: int, *, level_dbfs: float = -55.0, tilt: float = 0.5, period_s: float = 4.0,
                 seed: int = 0) -> None:
        if level_dbfs >= -20.0:
            raise ValueError(f"line noise must be quiet, not {level_dbfs} dBFS")
        if not 0.0 <= tilt < 1.0:
            raise ValueError(f"tilt must be in [0, 1), not {tilt}")
        self.sample_rate = sample_rate
        self.level_dbfs = level_dbfs
        rng = np.random.default_rng(seed)
        n = max(1, int(period_s * sample_rate))
        spectrum = np.fft.rfft(rng.standard_normal(n))
        w = 2 * np.pi * np.arange(spectrum.size) / n  # rad/sample of each bin
        spectrum /= 1.0 - tilt * np.exp(-1j * w)  # the one-pole low-pass, applied circularly
        loop = np.fft.irfft(spectrum, n)
        loop *= _FULL_SCALE * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(loop**2))
        self._loop = loop
        self._pos = int(rng.integers(n))

    def next(self, samples: int) -> np.ndarray:
        """The next ``samples`` of noise as float64 (for mixing under speech)."""
        n = self._loop.size
        idx = (self._pos + np.arange(samples)) % n
        self._pos = (self._pos + samples) % n
        return self._loop[idx]

    def frames(self, samples: int) -> np.ndarray | None:
        """The whole loop as frames of ``samples``, float64 ``(period // samples, samples)``,
        starting at the current position (row ``k`` is what the ``k``-th next call of
        :meth:`next` with ``samples`` returns, cyclically); the position does not move.

        ``None`` when ``samples`` does not divide the loop (frames would drift across it)."""
        n = self._loop.size
        if samples <= 0 or n % samples:
            return None
        return np.roll(self._loop, -self._pos).reshape(n // samples, samples)

    def frame(self, samples: int) -> np.ndarray:
        """The next ``samples`` of noise alone, int16."""
        return _clip16(self.next(samples))

    def under(self, pcm: np.ndarray) -> np.ndarray:
        """``pcm`` (int16) with the next stretch of noise mixed in, int16."""
        return _clip16(pcm.astype(np.float64) + self.next(pcm.size))


def _clip16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
