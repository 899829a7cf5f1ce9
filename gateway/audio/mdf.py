"""The batched MDF kernels behind :mod:`gateway.audio.aec`, and the pool that holds their state.

Every canceller with one geometry (sample rate, block ``B``, partitions ``K``) keeps its
adaptive-filter state in one row ("slot") of a shared :class:`Pool`, so a tick's work for many
calls is one gather, a few array operations and one scatter, not a Python loop per call.
Spectra use numpy's real FFT in float64 (in numpy 2.4 a float32 real FFT of 320 points costs
about six times a float64 one) with Speex's scaling: the forward transform is divided by the
FFT size ``2 B``, so Speex's constants keep their meaning on int16-scale samples.

A block that arrives whole (the usual 20 ms frame) goes through :func:`step`, which is
:func:`predict` and :func:`adapt` with each slot's state gathered and scattered once; a block
that arrives in pieces is predicted when its first sample comes and adapted when it completes.
Both give the same output to the bit (``tests/audio/test_aec.py``: chunk sizes). Per row the
work is nine ``2 B``-point real transforms and a few dozen array operations over its spectra;
per batch there are about 150 numpy calls, whose fixed cost is most of what a lone call pays.

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

__all__ = ["AecOut", "Blocks", "Pool", "adapt", "pool", "predict"]

MIN_LEAK = 0.005  # mdf.c: "we don't really hope to get better than 33 dB attenuation anyway"
# columns of Pool.V
PEY, PYY, LEAK, SUM_ADAPT, ADAPTED, COUNT, SXX, DAVG1, DAVG2, DVAR1, DVAR2 = range(11)
VAR1_UPDATE, VAR2_UPDATE, VAR_BACKTRACK = 0.5, 0.25, 4.0  # mdf.c's two-path thresholds
RER_Y = 0.0  # weight of mdf.c's "y in e" lower bound on RER (dropped: see the module docstring)


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
    history ``[K, B + 1]`` (newest first), ``S`` smoothed spectra ``[3, B + 1]`` (far-end power,
    error and echo-estimate averages), ``P`` partition weights ``[K]``, ``V`` scalars ``[11]``
    (``PEY`` … ``DVAR2``), ``D`` the caller block in progress ``[B]``, ``Y`` and ``YF`` its echo
    estimates by the background and the foreground filter.
    """

    def __init__(self, rate: int, block: int, partitions: int) -> None:
        self.rate, self.block, self.partitions = rate, block, partitions
        self.cap = 0
        self._used = 0
        self._free: list[int] = []
        self._grow(8)

    def _grow(self, cap: int) -> None:
        k, f, b = self.partitions, self.block + 1, self.block
        shapes = {"W": ((k, f), complex), "F": ((k, f), complex), "X": ((k, f), complex), "S": ((3, f), float),
                  "P": ((k,), float), "V": ((11,), float), "D": ((b,), float), "Y": ((b,), float),
                  "YF": ((b,), float)}
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
        for a in (self.W, self.F, self.X, self.S, self.V, self.D, self.Y, self.YF):
            a[slot] = 0
        self.P[slot] = 0.99 / self.partitions
        self.V[slot, [PEY, PYY, LEAK]] = 1.0

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
    return np.fft.rfft(blocks, axis=-1) * (1.0 / blocks.shape[-1])


def predict(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray) -> None:
    """Starts a block in each slot: pushes the newest reference spectrum (rows where
    ``shift``; other rows' histories were already filled) and writes the echo estimate to
    ``p.Y``.

    Args:
        p: the pool.
        slots: int ``[m]`` distinct slots.
        newest: float64 ``[m, 2B]``, each slot's reference ``[t0 - B, t0 + B)`` (bulk delay
            applied).
        shift: bool ``[m]``, whose history moves down by one block.
    """
    b = p.block
    spec = spectra(newest)
    p.V[slots, SXX] = np.einsum("mn,mn->m", newest[:, b:], newest[:, b:])
    s = slots[shift]
    if s.size:
        if p.partitions > 1:
            p.X[s, 1:] = p.X[s, :-1]
        p.X[s, 0] = spec[shift]
    y, yf = _estimate(p.W[slots], p.F[slots], p.X[slots], b)
    p.Y[slots], p.YF[slots] = y, yf


def _estimate(W: np.ndarray, F: np.ndarray, X: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The background and foreground filters' echo estimates ``[m, B]`` from the spectra history."""
    m = W.shape[0]
    both = np.empty((2 * m, W.shape[2]), complex)
    np.sum(W * X, axis=1, out=both[:m])  # partition by partition in order (not the fast axis: no pairwise sum)
    np.sum(F * X, axis=1, out=both[m:])
    y = np.fft.irfft(both, n=2 * b, axis=1)[:, b:] * (2 * b)
    return y[:m], y[m:]


def step(p: Pool, slots: np.ndarray, newest: np.ndarray, shift: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:func:`predict` then :func:`adapt` on a block that is complete at once (``d``, float64
    ``[m, B]``: the usual 20 ms frame), with one gather and one scatter of each slot's state;
    returns the foreground filter's echo estimate ``[m, B]`` (what is subtracted). The pool ends
    as after ``predict``, writing ``d`` to ``p.D`` and ``adapt``, except ``p.D``, ``p.Y`` and
    ``p.YF``, which only a block in progress needs."""
    b = p.block
    spec = spectra(newest)
    W, F, X, v = p.W[slots], p.F[slots], p.X[slots], p.V[slots]
    v[:, SXX] = np.einsum("mn,mn->m", newest[:, b:], newest[:, b:])
    if shift.all():  # the usual block: every history moves down by one
        X[:, 1:] = X[:, :-1].copy()
        X[:, 0] = spec
        p.X[slots] = X
    elif shift.any():
        if p.partitions > 1:
            X[shift, 1:] = X[shift, :-1]
        X[shift, 0] = spec[shift]
        p.X[slots] = X
    y, yf = _estimate(W, F, X, b)
    _adapt(p, slots, d, y, yf, v, W, X, p.S[slots])
    return yf


def adapt(p: Pool, slots: np.ndarray) -> None:
    """Adapts each slot's filter on its completed block ``p.D`` (echo estimate ``p.Y``)."""
    _adapt(p, slots, p.D[slots], p.Y[slots], p.YF[slots], p.V[slots], p.W[slots], p.X[slots], p.S[slots])


def _adapt(p: Pool, slots: np.ndarray, d: np.ndarray, y: np.ndarray, yf: np.ndarray, v: np.ndarray,
           W: np.ndarray, X: np.ndarray, S: np.ndarray) -> None:
    """:func:`adapt` on gathered rows (``y``, ``yf``: the two filters' estimates; ``y`` is
    overwritten), scattered back to the pool."""
    b, k, m = p.block, p.partitions, slots.size
    n = 2 * b
    e = d - y
    back = _two_path(p, slots, v, W, e, d, y, yf)
    if back.any():  # the background filter went worse: restarted from the foreground's
        y[back] = yf[back]
        e[back] = d[back] - y[back]
    see = np.maximum(np.einsum("mn,mn->m", e, e), n * 100 / 64)
    syy = np.einsum("mn,mn->m", y, y)
    sey = np.einsum("mn,mn->m", e, y) if RER_Y else None  # (only the dropped RER floor reads it)
    sxx = v[:, SXX]
    z = np.zeros((2 * m, n))
    z[:m, b:] = e
    z[m:, b:] = y
    spec = spectra(z)
    E = spec[:m]
    rf = E.real ** 2 + E.imag ** 2
    yf = spec[m:].real ** 2 + spec[m:].imag ** 2
    ss = 0.35 / k
    power = S[:, 0] * (1 - ss) + 1.0 + ss * (X[:, 0].real ** 2 + X[:, 0].imag ** 2)
    de, dy = rf - S[:, 1], yf - S[:, 2]
    pyy_new = np.sqrt(np.einsum("mf,mf->m", dy, dy))
    pey_new = np.einsum("mf,mf->m", de, dy) / np.maximum(pyy_new, 1e-12)
    S[:, 0] = power
    S[:, 1] += (b / p.rate) * de
    S[:, 2] += (b / p.rate) * dy
    alpha = np.minimum(2.0 * b / p.rate * syy, 0.5 * b / p.rate * see) / see
    pyy = np.maximum(v[:, PYY] * (1 - alpha) + alpha * pyy_new, 1.0)
    pey = np.minimum(np.maximum(v[:, PEY] * (1 - alpha) + alpha * pey_new, MIN_LEAK * pyy), pyy)  # (np.clip)
    leak = pey / pyy
    rer_floor = RER_Y * sey * sey / (1 + see * syy) if RER_Y else 0.0  # (0 * a finite sum: exactly 0)
    rer = np.minimum(np.maximum((1e-4 * sxx + 3.0 * leak * syy) / see, rer_floor), 0.5)
    adapted = (v[:, ADAPTED] > 0) | ((v[:, SUM_ADAPT] > k) & (leak > 0.03))
    rate0 = np.where(sxx > n * 1000 / 64, np.minimum(0.25 * sxx, 0.25 * see) / see, 0.0)
    rf1 = rf + 1.0
    r = 0.7 * np.minimum(leak[:, None] * yf, 0.5 * rf1) + 0.3 * rer[:, None] * rf1
    mu = np.where(adapted[:, None], r / rf1, rate0[:, None]) / (power + 10.0)
    prop = p.P[slots]
    if adapted.any():
        prop = np.where(adapted[:, None], proportions(W), prop)
    W += prop[:, :, None] * np.conj(X) * (mu * E)[:, None, :]  # each partition's step, as mdf.c
    constrain(W, v[:, COUNT].astype(int), b)
    bad = ~np.isfinite(W).all(axis=(1, 2))
    v[:, PEY], v[:, PYY], v[:, LEAK] = pey, pyy, np.where(adapted, leak, 1.0)
    v[:, SUM_ADAPT] = np.where(adapted, v[:, SUM_ADAPT], v[:, SUM_ADAPT] + rate0)
    v[:, ADAPTED] = adapted
    v[:, COUNT] += 1
    p.W[slots], p.S[slots], p.P[slots], p.V[slots] = W, S, prop, v
    for slot in slots[bad]:  # never seen; Speex resets a filter that went bad, so do we
        p.clear(int(slot))


def _two_path(p: Pool, slots: np.ndarray, v: np.ndarray, W: np.ndarray, e: np.ndarray, d: np.ndarray,
              y: np.ndarray, yf: np.ndarray) -> np.ndarray:
    """mdf.c's two-path logic on the block just completed: the foreground filter takes the
    background's weights when the background's error is significantly lower (over one block
    or two smoothed windows); the background restarts from the foreground when it is
    significantly worse (double talk made it diverge). Updates ``v``, ``W`` and ``p.F``;
    returns the rows whose background was restarted."""
    ef = d - yf
    sff = np.einsum("mn,mn->m", ef, ef)
    see = np.einsum("mn,mn->m", e, e)
    diff = yf - y
    dbf = 10.0 + np.einsum("mn,mn->m", diff, diff)
    delta = sff - see
    c = v[:, DAVG1:DVAR2 + 1]  # DAVG1, DAVG2, DVAR1, DVAR2: each smoothed as mdf.c does, all at once
    new = np.empty_like(c)
    new[:, :2], new[:, 2:] = delta[:, None], sff[:, None]
    new *= _TP_IN
    new[:, 2:] *= dbf[:, None]  # (0.16 sff) dbf, (0.0225 sff) dbf
    c *= _TP_KEEP
    c += new
    dd, aa, var = delta * np.abs(delta), c[:, :2] * np.abs(c[:, :2]), c[:, 2:]
    up = (dd > sff * dbf) | (aa > var * _TP_UPDATE).any(axis=1)
    back = ~up & ((-dd > VAR_BACKTRACK * sff * dbf) | (-aa > VAR_BACKTRACK * var).any(axis=1))
    if up.any():
        p.F[slots[up]] = W[up]
    if back.any():
        W[back] = p.F[slots[back]]
    c[up | back] = 0.0
    return back


# _two_path's smoothing (mdf.c): DAVG1, DAVG2 = 0.6, 0.85 of the old + 0.4, 0.15 of Sff - See;
# DVAR1, DVAR2 = 0.36, 0.7225 of the old + 0.16, 0.0225 of Sff Dbf; and the update thresholds
_TP_KEEP = np.array([0.6, 0.85, 0.36, 0.7225])
_TP_IN = np.array([0.4, 0.15, 0.16, 0.0225])
_TP_UPDATE = np.array([VAR1_UPDATE, VAR2_UPDATE])


def proportions(W: np.ndarray) -> np.ndarray:
    """Proportionate step per partition (``mdf_adjust_prop``): each partition's share of the
    filter's magnitude plus a tenth of the largest, summing to 0.99. ``[m, K]``."""
    f = W.shape[2]
    mag = np.sqrt(1e-6 * f + np.einsum("mkf,mkf->mk", W.real, W.real) + np.einsum("mkf,mkf->mk", W.imag, W.imag))
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
