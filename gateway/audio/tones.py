"""Tones: a streaming answering-machine beep detector, and tone / DTMF generation.

Beep detection, one 20 ms frame at a time (pure numpy, no I/O):

1. **Two-pole linear prediction** of the frame (autocorrelation ``r0, r1, r2``). A single
   sinusoid obeys ``x[n] = 2 cos(w) x[n-1] - x[n-2]`` exactly, so a steady tone is predicted
   almost perfectly (prediction gain ``r0 / error`` of 20–40 dB, pole radius ~1) while speech,
   noise and DTMF (two sinusoids need four poles) are not. The gain is the two-pole form of
   spectral flatness (flatness = prediction-error power / signal power), and the pole angle
   gives the frequency. Cost: three dot products.
2. For candidate frames only (gain and frequency in range), a **Goertzel** term at that
   frequency on the Hann-windowed frame measures the **peak-to-total energy** ratio (1.0 for
   a pure tone; white noise puts ~2 % of its power in the main lobe; speech spreads it over
   its harmonics). A frame is *tonal* when the ratio is high.
3. A **beep** is a run of tonal frames whose frequency stays within a tolerance of the run's
   (at most one step to a second steady frequency, joined or within the gap: a double / two-tone
   beep), with at least one unbroken piece of ``min_ms`` (120 ms), ending with a non-tonal
   frame; a following tone piece of that length that starts within ``join_gap_ms`` is joined
   to it (two beeps in sequence); shorter tonal pieces (a steady vowel) never count. Its end is reported at the
   end of the last tonal frame (±1 frame), so the verdict can fire ``join_gap_ms`` + one frame
   after the beep ends.

μ-law quantisation keeps a tone's signal-to-quantisation ratio near 38 dB, and line noise at
−35 dBFS under a −20 dBFS beep is still a 15 dB SNR: both stay above the thresholds
(measured in ``tests/audio/test_tones.py``: found down to ~10 dB SNR). Not a beep: DTMF,
busy and dial tones (two tones at once), tones under ``min_ms`` or over ``max_ms``, noise and
speech. Limitation: two tones closer than ~100 Hz (US ringback, 440 + 480 Hz) beat slowly and
look like one tone within 20 ms, so they would count; ringback does not follow an answer.

Generation: :func:`tone`, :func:`dual_tone`, :func:`dtmf_digit` and :func:`dtmf_sequence`
(ITU-T Q.23 frequency pairs: rows 697/770/852/941 Hz, columns 1209/1336/1477/1633 Hz, for
in-band DTMF), plus :func:`goertzel_power`.

Sources: G. Goertzel, "An algorithm for the evaluation of finite trigonometric series" (1958);
ITU-T Q.23 "Technical features of push-button telephone sets" and Q.24 (timing, ±1.5 %
frequency tolerance, twist); J. Makhoul, "Linear prediction: a tutorial review" (1975) for
prediction gain as spectral flatness; Asterisk ``dsp.c`` (tone detection on 20 ms blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DTMF_ROWS_HZ",
    "DTMF_COLS_HZ",
    "DTMF_KEYS",
    "Beep",
    "BeepDetector",
    "tone",
    "dual_tone",
    "dtmf_digit",
    "dtmf_sequence",
    "goertzel_power",
]

#: ITU-T Q.23 low (row) and high (column) group frequencies, Hz.
DTMF_ROWS_HZ = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keypad layout: ``DTMF_KEYS[row][col]``.
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")

_FULL_SCALE = 32768.0


def _amplitude(level_dbfs: float) -> float:
    """Peak amplitude (int16 units) of a sine whose RMS is ``level_dbfs`` re a full-scale sine."""
    return _FULL_SCALE * 10.0 ** (level_dbfs / 20.0)


def tone(freq_hz: float, duration_ms: float, rate: int, *, level_dbfs: float = -10.0,
         ramp_ms: float = 2.0) -> np.ndarray:
    """A sine tone as int16 ``[round(duration_ms * rate / 1000)]``.

    Args:
        freq_hz: Frequency, 0 < f < rate / 2.
        duration_ms: Length, ms (≥ 0).
        rate: Sample rate, Hz.
        level_dbfs: Level re a full-scale sine (0 dBFS peaks at 32,768).
        ramp_ms: Raised-cosine on/off ramps, ms (avoid clicks).

    Raises:
        ValueError: Frequency outside (0, rate / 2), negative duration or level above 0 dBFS.
    """
    return dual_tone((freq_hz,), duration_ms, rate, levels_dbfs=(level_dbfs,), ramp_ms=ramp_ms)


def dual_tone(freqs_hz: tuple[float, ...], duration_ms: float, rate: int, *,
              levels_dbfs: tuple[float, ...] | None = None, ramp_ms: float = 2.0) -> np.ndarray:
    """A sum of sines (one per frequency) as int16; see :func:`tone` for units.

    Args:
        freqs_hz: Frequencies, Hz.
        duration_ms: Length, ms.
        rate: Sample rate, Hz.
        levels_dbfs: One level per frequency (default −13 dBFS each).
        ramp_ms: On/off ramps, ms.

    Raises:
        ValueError: As :func:`tone`, or the level count differs from the frequency count.
    """
    levels = levels_dbfs if levels_dbfs is not None else (-13.0,) * len(freqs_hz)
    if len(levels) != len(freqs_hz) or not freqs_hz:
        raise ValueError("need one level per frequency and at least one frequency")
    if duration_ms < 0:
        raise ValueError(f"duration_ms must be >= 0, not {duration_ms!r}")
    n = int(round(duration_ms * rate / 1000.0))
    t = np.arange(n) / rate
    y = np.zeros(n)
    for f, lv in zip(freqs_hz, levels):
        if not 0 < f < rate / 2:
            raise ValueError(f"frequency {f!r} Hz outside (0, {rate / 2}) Hz")
        if lv > 0:
            raise ValueError(f"level {lv!r} dBFS above full scale")
        y += _amplitude(lv) * np.sin(2 * np.pi * f * t)
    k = min(n // 2, int(ramp_ms * rate / 1000.0))
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        y[:k] *= ramp
        y[n - k:] *= ramp[::-1]
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def dtmf_digit(key: str, rate: int, *, duration_ms: float = 100.0, level_dbfs: float = -13.0,
               twist_db: float = 2.0) -> np.ndarray:
    """One DTMF key (Q.23 pair) as int16.

    Args:
        key: One of ``0-9 * # A-D``.
        rate: Sample rate, Hz (≥ 4,000).
        duration_ms: Tone length, ms (Q.24: ≥ 40 ms is detectable; 100 ms is usual).
        level_dbfs: Low-group level, dBFS.
        twist_db: High group this much above the low group (usual +2 dB pre-emphasis).

    Raises:
        ValueError: Unknown key.
    """
    k = key.upper()
    for r, row in enumerate(DTMF_KEYS):
        c = row.find(k)
        if len(k) == 1 and c >= 0:
            return dual_tone((DTMF_ROWS_HZ[r], DTMF_COLS_HZ[c]), duration_ms, rate,
                             levels_dbfs=(level_dbfs, level_dbfs + twist_db))
    raise ValueError(f"not a DTMF key: {key!r}")


def dtmf_sequence(keys: str, rate: int, *, on_ms: float = 100.0, off_ms: float = 100.0,
                  **kw: float) -> np.ndarray:
    """Keys as int16 DTMF tones separated by ``off_ms`` of silence (none after the last).

    Raises:
        ValueError: An unknown key.
    """
    gap = np.zeros(int(round(off_ms * rate / 1000.0)), dtype=np.int16)
    parts: list[np.ndarray] = []
    for i, k in enumerate(keys):
        if i:
            parts.append(gap)
        parts.append(dtmf_digit(k, rate, duration_ms=on_ms, **kw))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def goertzel_power(x: np.ndarray, freq_hz: float, rate: int) -> float:
    """Share of ``x``'s energy at ``freq_hz`` (Hann-windowed Goertzel term), in [0, ~1].

    1.0 for a pure tone at ``freq_hz`` spanning the block; about 1.5 / (n / 2) for white
    noise (the window's equivalent noise bandwidth over the bins); 0 for silence.

    Args:
        x: ``[n]`` samples, any numeric dtype, n ≥ 8.
        freq_hz: Frequency, Hz.
        rate: Sample rate, Hz.
    """
    a = np.asarray(x, dtype=np.float64)
    w = np.hanning(a.size)
    return _peak_ratio(a * w, w, 2 * np.pi * freq_hz / rate)


def _peak_ratio(xw: np.ndarray, w: np.ndarray, omega: float) -> float:
    total = float(xw @ xw)
    if total <= 0.0:
        return 0.0
    n = np.arange(xw.size)
    c = float(xw @ np.cos(omega * n))
    s = float(xw @ np.sin(omega * n))
    sw = float(w.sum())
    return (c * c + s * s) * 2.0 * float(w @ w) / (sw * sw * total)


@dataclass(frozen=True, slots=True)
class Beep:
    """A detected beep.

    Attributes:
        start_ms: Start, ms from the first sample fed (frame resolution).
        end_ms: End of its last tonal frame, ms from the first sample fed.
        freqs_hz: The steady frequency of each tone in it (one, or two for a double beep).
        level_dbfs: Mean level of its tonal frames, dBFS re a full-scale sine.
    """

    start_ms: float
    end_ms: float
    freqs_hz: tuple[float, ...]
    level_dbfs: float

    @property
    def duration_ms(self) -> float:
        """``end_ms - start_ms``."""
        return self.end_ms - self.start_ms


class BeepDetector:
    """Streaming beep detector over fixed frames of int16 PCM (see the module docstring).

    Args:
        sample_rate: Hz (8,000 or 16,000 on the phone path; any rate ≥ 4,400 works).
        frame_ms: Frame length, ms (20: one carrier frame).
        min_hz, max_hz: Band a beep's frequency lies in, Hz.
        min_ms: Least time a beep holds, ms (its whole frames must be tonal, so at
            least ``min_ms - frame_ms`` of tonal frames).
        max_ms: Longest beep, ms (a longer steady tone is a line tone, not a beep).
        min_gain_db: Least two-pole prediction gain of a tonal frame, dB.
        min_peak: Least peak-to-total energy ratio (Goertzel, Hann) of a tonal frame.
        freq_tol: Relative frequency tolerance between a tone's frames.
        join_gap_ms: A tone resuming within this gap continues the same beep, ms.
        min_level_dbfs: Quieter frames are not tonal, dBFS.

    Raises:
        ValueError: Inconsistent bounds or a band outside (0, rate / 2).
    """

    def __init__(self, sample_rate: int = 8000, frame_ms: int = 20, *, min_hz: float = 400.0,
                 max_hz: float = 2000.0, min_ms: float = 120.0, max_ms: float = 4000.0,
                 min_gain_db: float = 4.0, min_peak: float = 0.7, freq_tol: float = 0.03,
                 join_gap_ms: float = 100.0, min_level_dbfs: float = -45.0) -> None:
        if not 0 < min_hz < max_hz < sample_rate / 2:
            raise ValueError(f"need 0 < min_hz < max_hz < {sample_rate / 2}")
        if not 0 < min_ms <= max_ms:
            raise ValueError("need 0 < min_ms <= max_ms")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.min_hz, self.max_hz = min_hz, max_hz
        # a tone of min_ms at any phase fills at least (min_ms - frame_ms) of whole frames
        self.min_frames = max(1, math.ceil((min_ms - frame_ms) / frame_ms))
        self.max_frames = int(max_ms // frame_ms)
        self.gap_frames = int(join_gap_ms // frame_ms)
        self.min_gain = 10.0 ** (min_gain_db / 10.0)
        self.min_peak = min_peak
        self.freq_tol = freq_tol
        n = self.frame_samples
        self._floor = n * 0.5 * _FULL_SCALE**2 * 10.0 ** (min_level_dbfs / 10.0)
        self._win = np.hanning(n)
        self._n = np.arange(n, dtype=np.float64)
        self._win_gain = 2.0 * float(self._win @ self._win) / float(self._win.sum()) ** 2
        self._scale = 2.0 * np.pi / sample_rate
        self._lag1 = n / (n - 1.0)   # unbias the lag sums (n - 1 and n - 2 products)
        self._lag2 = n / (n - 2.0)
        self._lo = min_hz * (1.0 - freq_tol)   # band edges allow the estimate's tolerance
        self._hi = max_hz * (1.0 + freq_tol)
        self._tol_hz = 15.0
        self.frames = 0
        self.tonal = False
        self.energy = 0.0
        self._reset_run()

    def reset(self) -> None:
        """Forget everything, as at the start of a stream."""
        self.frames = 0
        self.tonal = False
        self.energy = 0.0
        self._reset_run()

    def _reset_run(self) -> None:
        self._start = -1          # first tonal frame of the current run, or -1
        self._last = -1           # last tonal frame of the run
        self._segs: list[list[float]] = []   # per steady tone: [sum of Hz, frames]
        self._piece = 0           # contiguous tonal frames up to the last one
        self._q_start = -1        # first frame of the first piece long enough to be a beep
        self._q_last = -1         # last frame of the last such piece
        self._energy = 0.0
        self._tonal = 0

    @property
    def in_tone(self) -> bool:
        """A tone run is open (tonal now, or within the join gap of one)."""
        return self._start >= 0

    @property
    def in_beep(self) -> bool:
        """The last frame was tonal, or a run already long enough to be a beep is open."""
        return self.tonal or self._q_start >= 0

    def frame_tone(self, frame: np.ndarray) -> tuple[float, float] | None:
        """(frequency Hz, energy) if the int16 ``[frame_samples]`` frame is a steady in-band tone.

        Also sets :attr:`energy`, the frame's sum of squares (int16 units²).
        """
        x = frame.astype(np.float64)
        r0 = float(x @ x)
        self.energy = r0
        if r0 < self._floor:
            return None
        r1 = float(x[1:] @ x[:-1]) * self._lag1
        r2 = float(x[2:] @ x[:-2]) * self._lag2
        # cos(w) from lags 1 and 2 (Pisarenko: white noise adds to r0 only, so no bias):
        # r1 = P cos w, r2 = P cos 2w  =>  c = 2 r1 / (sqrt(r2^2 + 8 r1^2) - r2)
        den = math.sqrt(r2 * r2 + 8.0 * r1 * r1) - r2
        if den <= 0.0:
            return None
        c = 2.0 * r1 / den
        if not -1.0 < c < 1.0:
            return None
        # residual of the unit-circle predictor x[n-1] + x[n+1] = 2c x[n]; 2 r0 for noise
        err = 2.0 * r0 + 2.0 * r2 - 8.0 * c * r1 + 4.0 * c * c * r0
        if err * self.min_gain > 2.0 * r0:
            return None
        omega = math.acos(c)
        f = omega / self._scale
        if not self._lo <= f <= self._hi:
            return None
        xw = x * self._win
        need = self.min_peak * float(xw @ xw)
        peak = self._goertzel(xw, omega)
        if peak < need and peak >= 0.5 * need:
            # coloured noise (pink, hum) biases the estimate by up to ~half a bin: look there
            step = 0.35 * 2.0 * np.pi / self.frame_samples
            peak = max(self._goertzel(xw, omega - step), self._goertzel(xw, omega + step))
        if peak < need:
            return None
        return f, r0

    def _goertzel(self, xw: np.ndarray, omega: float) -> float:
        re = float(xw @ np.cos(omega * self._n))
        im = float(xw @ np.sin(omega * self._n))
        return (re * re + im * im) * self._win_gain

    def push(self, frame: np.ndarray) -> Beep | None:
        """Analyse the next frame; returns a :class:`Beep` once one has ended, else None.

        Args:
            frame: int16 ``[frame_samples]``.

        Raises:
            ValueError: Wrong frame shape.
        """
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"frame must have shape ({self.frame_samples},), got {frame.shape}")
        idx = self.frames
        self.frames += 1
        hit = self.frame_tone(frame)
        self.tonal = hit is not None
        if hit is None:
            if self._start >= 0:
                if idx - self._last > self.gap_frames:
                    return self._close()
            return None
        return self._extend(idx, *hit)

    def _extend(self, idx: int, f: float, energy: float) -> Beep | None:
        out = None
        if self._start >= 0:
            s = self._segs[-1]
            mean = s[0] / s[1]
            if abs(f - mean) > max(self.freq_tol * mean, self._tol_hz):
                if len(self._segs) == 1 and s[1] >= max(2, self.min_frames // 2):
                    self._segs.append([0.0, 0])      # a second steady tone: a double beep
                else:
                    out = self._close()              # frequency wandered: not one beep
        if self._start < 0:
            self._start = idx
            self._segs = [[0.0, 0]]
        # one non-tonal frame (the step between a double beep's tones) does not break a piece
        self._piece = self._piece + 1 if self._last >= idx - 2 else 1
        s = self._segs[-1]
        s[0] += f
        s[1] += 1
        self._last = idx
        self._energy += energy
        self._tonal += 1
        if self._piece >= self.min_frames:           # this piece alone holds a beep's length
            if self._q_start < 0:
                self._q_start = idx - self._piece + 1
            self._q_last = idx
        return out

    def _close(self) -> Beep | None:
        beep = None
        if self._q_start >= 0 and self._q_last - self._q_start < self.max_frames:
            ms = 0.5 * _FULL_SCALE**2 * self.frame_samples
            beep = Beep(
                start_ms=float(self._q_start * self.frame_ms),
                end_ms=float((self._q_last + 1) * self.frame_ms),
                freqs_hz=tuple(round(s[0] / s[1], 1) for s in self._segs if s[1]),
                level_dbfs=round(10.0 * math.log10(self._energy / self._tonal / ms), 1),
            )
        self._reset_run()
        return beep
