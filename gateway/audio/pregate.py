"""A cheap pre-gate in front of Silero: score only the chunks that may hold speech.

Silero costs 50–230 CPU µs per call per 32 ms chunk (batch 400 … 1); callers are silent for
most of a call (pauses, listening to the agent). :class:`PreGate` decides, per chunk and per
call, whether Silero needs to see it, for a few µs:

* **Energy** (``mode="energy"``): a chunk is *possible speech* when its mean power is at
  least ``margin_db`` above the call's tracked noise floor, or above ``open_dbfs`` whatever
  the floor. The floor is a minimum-statistics tracker with a slow rise: per chunk
  ``floor = min(power, floor + rise)``, with ``rise = rise_db_per_s × 0.032 s`` — it drops at
  once to any quieter chunk (a pause between words on this line) and climbs ``rise_db_per_s``
  when the line gets louder (a noise step), so the gate follows each line's own noise, not a
  fixed level. The floor never goes below ``min_floor_dbfs`` (digital zero would otherwise
  make the faintest dither "speech").
* **WebRTC** (``mode="webrtc"``): WebRTC VAD (``webrtcvad``, per-call instance, at
  ``webrtc_mode``) on the chunk's first 30 ms; possible speech when it says speech, or the chunk
  is louder than ``open_dbfs``.

Around possible speech a hangover keeps Silero scoring: ``pre_chunks`` before an onset (so
the onset is scored from a state that heard the audio just before it) and ``post_chunks``
after the last possible-speech chunk (word ends and Silero's own decay after them). The
caller may also ``hold`` the gate open (:class:`gateway.vadrun.DirectVad` and ``BatchedVad`` do
while their detector is STARTING or SPEAKING, so speech, once begun, is scored as without the
gate).

Silero's state across skipped chunks is **kept**, not reset: the last scored chunk before a
skip ends a ``post_chunks`` hangover of silence, so the LSTM has already settled into
this line's silence, which is close to where it would be after scoring the skipped silence
too; a reset would instead restart it from the zero state it has at the start of a call (its
first few scores after a reset differ). Its 32-sample context tail would be stale after a
skip, so when speech starts right after skipped chunks the last ``pre_chunks`` of them are
returned as *warm-up* chunks: the runner scores them first (their scores are discarded, they
were already decided as silence) so the onset chunk is scored with its true context and a
state that has heard what came just before it.

Skipped chunks score 0 (silence). Measured on the project's recordings through the phone
path with white and pink line noise at −60…−40 dBFS and a level step (``tests/audio/
test_pregate.py``): see the test's docstring for the agreement and skipped shares.

Pure: numpy and webrtcvad only, no I/O. Sources: R. Martin, "Noise power spectral density
estimation based on optimal smoothing and minimum statistics", IEEE Trans. Speech Audio
Process. 9(5), 2001 (the minimum tracker); WebRTC VAD via py-webrtcvad (wiseman).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

__all__ = ["PREGATE_MODES", "GatePlan", "PreGate", "chunk_power_dbfs"]

#: The pre-gate settings: ``off`` (score every chunk), ``energy`` or ``webrtc``.
PREGATE_MODES = ("off", "energy", "webrtc")

_FULL_SCALE_POWER = 32768.0**2
_NO_WARM = {n: np.zeros((0, n), np.int16) for n in (256, 512)}  # read-only: shared empty plans
for _a in _NO_WARM.values():
    _a.flags.writeable = False
_CHUNK_S = 0.032  # Silero's chunk: 256 samples at 8 kHz, 512 at 16 kHz


def chunk_energy(chunks: np.ndarray) -> np.ndarray:
    """Sum of squares of each int16 chunk ``[k, n]``, float64 ``[k]``: exact (integers below
    2**53), so any summation order gives the same value."""
    f = np.asarray(chunks, dtype=np.float64)
    return np.einsum("ij,ij->i", f, f)


def power_dbfs_of(energy: float, n: int) -> float:
    """Mean power in dBFS of a chunk of ``n`` samples whose sum of squares is ``energy`` (a
    full-scale square wave is 0; digital zero gives −200 rather than −inf). One scalar formula,
    so a chunk's power is the same number whichever path computed its energy."""
    return 10.0 * math.log10(energy / (max(n, 1) * _FULL_SCALE_POWER) + 1e-20)


def chunk_power_dbfs(chunks: np.ndarray) -> np.ndarray:
    """Mean power of each int16 chunk ``[k, n]`` in dBFS (:func:`power_dbfs_of` of
    :func:`chunk_energy`): float64 ``[k]``."""
    n = np.shape(chunks)[1]
    return np.array([power_dbfs_of(e, n) for e in chunk_energy(chunks).tolist()], np.float64)


@dataclass(frozen=True, slots=True)
class GatePlan:
    """What to score of one block of chunks.

    Attributes:
        mask: bool ``[k]``: chunk ``i`` goes to Silero; the others score 0.
        warm: int16 ``[w, n]``: earlier skipped chunks to score first, in order, scores
            discarded (``w`` is 0 unless speech starts right after skipped chunks).
    """

    mask: np.ndarray
    warm: np.ndarray


class PreGate:
    """One call's pre-gate (see the module docstring); feed it every chunk, in order.

    Args:
        sample_rate: 8,000 or 16,000 Hz (Silero's rates).
        mode: ``energy`` or ``webrtc``.
        margin_db: Energy mode: possible speech this far above the tracked floor (dB).
        rise_db_per_s: How fast the floor climbs towards a louder line (dB per second).
        min_floor_dbfs: The floor never goes below this (dBFS).
        open_dbfs: A chunk at least this loud is always possible speech (dBFS).
        pre_chunks: Hangover before possible speech (32 ms chunks): the warm-up replayed before
            an onset after skipped chunks. 3 (96 ms): each chunk of warm-up is one more ONNX
            run for that tick (Silero's chunks of one call are sequential), so on the per-tick
            engine 8 cost more than the gate saved on continuous speech (400 calls, 37–45 vs
            32–36 µs per call per frame ungated) and 3 costs nothing (31–35), with 99.32–99.75 %
            of chunks agreeing with ungated Silero (8: 99.41–99.79).
        post_chunks: Hangover after possible speech (32 ms chunks).
        webrtc_mode: WebRTC VAD aggressiveness in webrtc mode (0 flags most as speech).

    Raises:
        ValueError: Unknown mode or rate, negative hangover or margin.

    Attributes:
        floor_dbfs: The current tracked noise floor (dBFS; ``None`` before the first chunk).
        chunks_seen: Chunks planned so far.
        chunks_skipped: Of those, chunks whose score is 0 without Silero.
        chunks_warmed: Skipped chunks sent to Silero later as warm-up chunks (so Silero's
            work saved is ``chunks_skipped - chunks_warmed``).
    """

    def __init__(self, sample_rate: int, mode: str = "energy", *, margin_db: float = 9.0,
                 rise_db_per_s: float = 3.0, min_floor_dbfs: float = -70.0,
                 open_dbfs: float = -30.0, pre_chunks: int = 3, post_chunks: int = 8,
                 webrtc_mode: int = 1) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError(f"the pre-gate runs at 8000 or 16000 Hz, not {sample_rate!r}")
        if mode not in ("energy", "webrtc"):
            raise ValueError(f"pre-gate mode must be energy or webrtc, not {mode!r}")
        if margin_db < 0 or rise_db_per_s < 0 or pre_chunks < 0 or post_chunks < 0:
            raise ValueError("margin, rise and hangovers must be non-negative")
        self.sample_rate = sample_rate
        self.mode = mode
        self.margin_db = margin_db
        self.rise_db = rise_db_per_s * _CHUNK_S
        self.min_floor_dbfs = min_floor_dbfs
        self.open_dbfs = open_dbfs
        self.pre_chunks = pre_chunks
        self.post_chunks = post_chunks
        self._vad = webrtcvad.Vad(webrtc_mode) if mode == "webrtc" else None
        self._webrtc_n = sample_rate * 30 // 1000
        self.floor_dbfs: float | None = None
        self._since_open = math.inf  # chunks since the last possible-speech chunk
        self._skipped_tail: deque[np.ndarray] = deque(maxlen=max(pre_chunks, 1))
        self.chunks_seen = 0
        self.chunks_skipped = 0
        self.chunks_warmed = 0

    def _possible(self, chunks: np.ndarray, power_dbfs) -> list[bool]:
        """Possible speech per chunk; updates the noise floor with every chunk."""
        if power_dbfs is None:
            if len(chunks) == 1:  # the usual case (one 32 ms chunk per call per tick): no einsum
                f = chunks[0].astype(np.float64)
                power_dbfs = [power_dbfs_of(float(np.dot(f, f)), f.size)]
            else:
                power_dbfs = chunk_power_dbfs(chunks).tolist()
        out = []
        floor, rise, lo = self.floor_dbfs, self.rise_db, self.min_floor_dbfs
        margin, loud = self.margin_db, self.open_dbfs
        for i, p in enumerate(power_dbfs):
            if self._vad is not None:
                frame = chunks[i, : self._webrtc_n].astype("<i2", copy=False).tobytes()
                out.append(p >= loud or self._vad.is_speech(frame, self.sample_rate))
            else:
                out.append(p >= loud or p >= (lo if floor is None else floor) + margin)
            floor = p if floor is None else min(p, floor + rise)
            if floor < lo:
                floor = lo
        self.floor_dbfs = floor
        return out

    def plan(self, chunks: np.ndarray, *, hold: bool = False, power_dbfs=None) -> GatePlan:
        """Decide which of the next chunks Silero scores.

        Args:
            chunks: int16 ``[k, n]``, this call's next chunks (``k`` may be 0).
            hold: Score every chunk of this block (e.g. while a turn is in progress);
                the floor and hangover are still updated.
            power_dbfs: The chunks' powers (dBFS, ``[k]``) if already computed, e.g. by one
                :func:`chunk_power_dbfs` over every call's chunks of a tick.

        Returns:
            The :class:`GatePlan`: the mask over ``chunks`` and any warm-up chunks.

        Raises:
            ValueError: ``chunks`` is not 2-D.
        """
        a = chunks
        if a.ndim != 2:
            raise ValueError(f"chunks must be [k, n], got shape {a.shape}")
        k = len(a)
        possible = self._possible(a, power_dbfs) if k else []
        since, post = self._since_open, self.post_chunks
        scored = []
        for p in possible:
            since = 0 if p else since + 1
            scored.append(hold or since <= post)
        self._since_open = since
        pre, tail = self.pre_chunks, self._skipped_tail
        first_open = -1
        if True in possible:
            first_open = possible.index(True)
            for i, p in enumerate(possible):  # the pre-onset hangover inside this block
                if p:
                    for j in range(max(0, i - pre), i):
                        scored[j] = True
        warm = _NO_WARM[a.shape[1]] if a.shape[1] in _NO_WARM else np.zeros((0, a.shape[1]), np.int16)
        if tail and scored and scored[0] and 0 <= first_open < pre:
            # Speech right after skipped chunks: replay the last of them for state and context.
            warm = np.stack(list(tail)[-(pre - first_open):])
            self.chunks_warmed += len(warm)
        for c, sc in zip(a, scored):  # keep the trailing run of skipped chunks for warm-up
            if sc:
                tail.clear()
            elif pre:
                tail.append(c.copy())
        self.chunks_seen += k
        self.chunks_skipped += scored.count(False)
        return GatePlan(np.array(scored, dtype=bool), warm)

    def plan_one(self, chunk: np.ndarray, *, hold: bool = False, power_dbfs: float | None = None):
        """:meth:`plan` for one chunk (int16 ``[n]``), without the arrays: ``(scored, warm)``,
        ``warm`` being int16 ``[w, n]`` warm-up chunks or ``None``. Same state updates as
        :meth:`plan` of a one-chunk block."""
        possible = self._possible(chunk[None], None if power_dbfs is None else (power_dbfs,))[0]
        since = 0 if possible else self._since_open + 1
        self._since_open = since
        scored = hold or since <= self.post_chunks
        tail = self._skipped_tail
        warm = None
        if scored:
            if tail and possible and self.pre_chunks:
                warm = np.stack(tail)
                self.chunks_warmed += len(warm)
            tail.clear()
        else:
            if self.pre_chunks:
                tail.append(chunk.copy())
            self.chunks_skipped += 1
        self.chunks_seen += 1
        return scored, warm

