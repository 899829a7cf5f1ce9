"""The batched MDF kernels behind :mod:`gateway.audio.aec`, and the pool that holds their state.

Every canceller with one geometry (sample rate, block ``B``, partitions ``K``) keeps its
adaptive-filter state in one row ("slot") of a shared :class:`Pool`, so a tick's work for many
calls is one gather, a few array operations and one scatter, not a Python loop per call.
Spectra use numpy's real FFT in float64 (float32 does not pay in numpy 2.4: on ``[96, 320]``
blocks its forward transform costs 1.3 times the float64 one and its inverse 0.7 times, before
the casts; measured 2026-12-02) with Speex's scaling: the forward transform is divided by the
FFT size ``2 B``, so Speex's constants keep their meaning on int16-scale samples.

The kernels are in :mod:`gateway.audio.mdf_step` (numpy, the reference) and
:mod:`gateway.audio.mdf_native` (the same in C, with float32 transforms; used when built). A block that arrives whole (the usual 20 ms
frame) goes through its ``step``, which is ``predict`` and ``adapt`` with each slot's state
gathered and scattered once; a block that arrives in pieces is predicted when its first sample
comes and adapted when it completes. Both give the same output to the bit
(``tests/audio/test_aec.py``: chunk sizes).

The update is Speex ``libspeexdsp/mdf.c`` (float build, single path): the leak estimate (the
regression of the error's power spectrum on the echo estimate's), the residual-to-error ratio
``RER``, the per-bin learning rate ``mu = (0.7 min(leak Yf, Rf / 2) + 0.3 RER Rf) / (Rf (P + 10))``
once adapted, the temporary rate ``min(Sxx, See) / (4 See (P + 10))`` before, the
proportionate partition weights, the AUMDF constraint (partition 0 and one other per block) and
the two-path filter (``TWO_PATH``: the adaptive *background* filter ``W`` only replaces the
*foreground* ``F``, whose estimate is subtracted, when its error is significantly lower, and
restarts from it when significantly higher, so double talk cannot make the output diverge).
Three departures, for line echo 12–45 dB down rather than a loudspeaker next to a microphone:
the proportionate weights use a floor of ``1e-6`` per bin instead of Speex's ``1`` (which would
make them uniform for so weak an echo); the initial partition weights are uniform (Speex's
decay favours early lags, not a 40–200 ms delay); and the "y in e" lower bound on ``RER``
(``Sey² / (See Syy)``, about ``1 / B`` for uncorrelated signals) is dropped: with a caller
40 dB above a weak echo it kept the step open and walked the weights off (measured on the
generated double-talk mixes of ``benchmarks/aec_choice.py``: ERLE after the double talk 8.1 →
10.3 dB, the caller's signal-to-distortion ratio during it 23.1 → 27.6 dB, nothing lost
elsewhere).

The pool grows by doubling and never shrinks: its size is the peak number of live cancellers
(a slot returns to the pool when its canceller is garbage-collected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AecOut", "Blocks", "Pool", "constrain", "pool", "proportions", "spectra"]

MIN_LEAK = 0.005  # mdf.c: "we don't really hope to get better than 33 dB attenuation anyway"
# columns of Pool.V
PEY, PYY, LEAK, SUM_ADAPT, ADAPTED, COUNT, SXX, DAVG1, DAVG2, DVAR1, DVAR2 = range(11)
VAR1_UPDATE, VAR2_UPDATE, VAR_BACKTRACK = 0.5, 0.25, 4.0  # mdf.c's two-path thresholds
RER_Y = 0.0  # weight of mdf.c's "y in e" lower bound on RER (dropped: see the module docstring)
#: dtype of the filters' and the reference history's spectra (complex64, as Speex's float build:
#: half the memory each batch's gathers, products and scatters move; transforms stay float64)
SPECTRUM = np.complex64


@dataclass(frozen=True, slots=True)
class AecOut:
    """What the canceller made of one caller-leg chunk.

    Attributes:
        residual: int16 ``[n]``, the caller leg minus the predicted echo (where no agent audio
            was active in the whole chunk, the input array itself: do not modify it).
        echo: float32 ``[n]``, the predicted echo that was subtracted, int16 scale (zeros where
            passed through).
        leak: the filter's residual-echo estimate relative to the echo estimate's power (0–1;
            1 before the filter has adapted): the echo left in ``residual`` is about
            ``leak * mean(echo ** 2)``.
        adapted: the filter has passed its initial adaptation (Speex's ``adapted``).
        active: some agent audio was active in the chunk's reference span.
        ref_power: the loudest reference ``B``-cell's mean square in the filter's span, int16
            units squared (0 when passed through): an echo ``E`` dB down is at most
            ``ref_power * 10 ** (-E / 10)``, whatever the filter has learnt.
    """

    residual: np.ndarray
    echo: np.ndarray
    leak: float
    adapted: bool
    active: bool
    ref_power: float = 0.0


@dataclass(slots=True)
class Blocks:
    """What the canceller made of many calls' chunks that were each exactly their next block
    (the usual 20 ms frame), as arrays: row ``j`` is :class:`AecOut` ``out(j)`` of call
    ``rows[j]``.

    Attributes:
        rows: the calls' indices in the batch's order, ``[m]``.
        residual: int16 ``[m, B]`` (a passed-through row: the input).
        echo: float32 ``[m, B]`` (zeros where passed through).
        leak: float64 ``[m]``. adapted, active: bool ``[m]``. ref_power: float64 ``[m]``.
    """

    rows: list
    residual: np.ndarray
    echo: np.ndarray
    leak: np.ndarray
    adapted: np.ndarray
    active: np.ndarray
    ref_power: np.ndarray

    def out(self, j: int) -> AecOut:
        """Row ``j`` as an :class:`AecOut`."""
        return AecOut(self.residual[j], self.echo[j], float(self.leak[j]), bool(self.adapted[j]),
                      bool(self.active[j]), float(self.ref_power[j]))


class Pool:
    """The state of every canceller with one geometry, one row per canceller.

    Arrays (``cap`` rows): ``W`` the adaptive (background) filter's spectra ``[K, B + 1]``,
    ``F`` the foreground filter (the one whose estimate is subtracted), ``X`` reference spectra
    history ``[K, B + 1]``, a ring whose newest entry is at index ``H`` (int ``[cap]``; the
    ``j``-th newest at ``(H - j) % K``: a new block writes one entry instead of moving ``K``), ``S`` smoothed spectra ``[3, B + 1]`` (far-end power,
    error and echo-estimate averages), ``P`` partition weights ``[K]``, ``V`` scalars ``[11]``
    (``PEY`` … ``DVAR2``), ``D`` the caller block in progress ``[B]``, ``Y`` and ``YF`` its echo
    estimates by the background and the foreground filter.
    """

    def __init__(self, rate: int, block: int, partitions: int) -> None:
        self.rate, self.block, self.partitions = rate, block, partitions
        self.cap = 0
        self._used = 0
        self._free: list[int] = []
        self._work = None  # scratch arrays for a batch (gateway.audio.mdf_step)
        self._grow(8)

    def _grow(self, cap: int) -> None:
        k, f, b = self.partitions, self.block + 1, self.block
        shapes = {"W": ((k, f), SPECTRUM), "F": ((k, f), SPECTRUM), "X": ((k, f), SPECTRUM), "S": ((3, f), float),
                  "P": ((k,), float), "V": ((11,), float), "D": ((b,), float), "Y": ((b,), float),
                  "YF": ((b,), float), "H": ((), np.intp)}
        for name, (shape, dtype) in shapes.items():
            new = np.zeros((cap,) + shape, dtype)
            if self.cap:
                new[:self.cap] = getattr(self, name)
            setattr(self, name, new)
        self.cap = cap

    def take(self) -> int:
        """A fresh slot (zeroed, initial weights)."""
        if self._free:
            slot = self._free.pop()
        else:
            if self._used == self.cap:
                self._grow(2 * self.cap)
            slot, self._used = self._used, self._used + 1
        self.clear(slot)
        return slot

    def clear(self, slot: int) -> None:
        """Zeroes one slot's filter and averages."""
        for a in (self.W, self.F, self.X, self.S, self.V, self.D, self.Y, self.YF, self.H):
            a[slot] = 0
        self.P[slot] = 0.99 / self.partitions
        self.V[slot, [PEY, PYY, LEAK]] = 1.0

    def set_history(self, slot: int, spectra: np.ndarray) -> None:
        """Sets one slot's reference spectra history, ``[K, B + 1]`` newest first."""
        self.X[slot, -np.arange(self.partitions) % self.partitions], self.H[slot] = spectra, 0

    def history(self, slot: int) -> np.ndarray:
        """One slot's reference spectra history, ``[K, B + 1]`` newest first (a copy)."""
        return self.X[slot, (self.H[slot] - np.arange(self.partitions)) % self.partitions]

    def give(self, slot: int) -> None:
        """Returns a slot (its canceller is gone)."""
        self._free.append(slot)

    @property
    def live(self) -> int:
        """Slots in use."""
        return self._used - len(self._free)


_POOLS: dict[tuple[int, int, int], Pool] = {}


def pool(rate: int, block: int, partitions: int) -> Pool:
    """The process's pool for one geometry."""
    key = (rate, block, partitions)
    if key not in _POOLS:
        _POOLS[key] = Pool(rate, block, partitions)
    return _POOLS[key]


def spectra(blocks: np.ndarray) -> np.ndarray:
    """Speex-scaled real spectra of ``[..., 2B]`` blocks: ``rfft / 2B``."""
    return np.fft.rfft(blocks, axis=-1, norm="forward")  # (the same as rfft * (1 / 2B), to the bit)


def proportions(W: np.ndarray) -> np.ndarray:
    """Proportionate step per partition (``mdf_adjust_prop``): each partition's share of the
    filter's magnitude plus a tenth of the largest, summing to 0.99. ``[m, K]``."""
    f = W.shape[2]
    w = np.ascontiguousarray(W).view(W.real.dtype)  # [m, K, 2 (B + 1)]: real and imaginary parts in turn
    mag = np.einsum("mkf,mkf->mk", w, w).astype(np.float64)
    mag += 1e-6 * f
    np.sqrt(mag, out=mag)
    mag += 0.1 * mag.max(axis=1, keepdims=True)
    return 0.99 * mag / mag.sum(axis=1, keepdims=True)


def constrain(W: np.ndarray, counts: np.ndarray, b: int) -> None:
    """Zeroes the second half of the impulse response of partition 0 and of partition
    ``1 + count % (K - 1)`` of each row (AUMDF), in place."""
    m, k, _ = W.shape
    rows, parts = np.arange(m), np.zeros(m, int)
    if k > 1:  # both partitions' rows in one pair of transforms
        rows, parts = np.concatenate((rows, rows)), np.concatenate((parts, 1 + counts % (k - 1)))
    w = np.fft.irfft(W[rows, parts], n=2 * b, axis=1)
    w[:, b:] = 0.0
    W[rows, parts] = np.fft.rfft(w, axis=1)
