"""Acoustic/line echo cancelling for one call, batched across calls: a numpy MDF.

The caller leg carries the agent's own audio back (a line hybrid, a speakerphone). This stage
subtracts an adaptive estimate of that echo, computed from the agent audio that played at the
carrier (the *reference*), so the VAD and the double-talk rule (:mod:`gateway.audio.doubletalk`)
see the caller, not the agent.

Method: a partitioned-block frequency-domain adaptive filter (PBFDAF, the "multidelay block
frequency-domain" filter, MDF, of Speex's ``mdf.c``), overlap-save, in numpy:

* block ``B`` = ``block_ms`` (20 ms: 160 samples at 8 kHz), FFT size ``2 B``; the filter spans
  ``K`` partitions of ``B`` taps (``tail_ms``, 260 ms by default: delays 40–200 ms plus a room
  or hybrid tail). All time is in samples on the call's own clock (as
  :class:`~gateway.audio.echo.EchoPathEstimator`): the reference is written at the sample it
  played, the caller leg at the sample it was heard, and the echo estimate for a caller block
  ``[t0, t0 + B)`` uses the reference ``[t0 - K B, t0 + B)``.
* The echo estimate for a block is computed when the block's first sample arrives, so the
  residual of every input sample is returned at once (no added latency); the filter adapts
  when the block is complete.
* Step size: the learning rate of Valin (2007) as Speex uses it: per frequency bin, the ratio
  of the *residual* echo (``leak`` × echo-estimate power, ``leak`` from the correlation of the
  error and echo-estimate power spectra) to the error power. While the caller talks the error
  is large and uncorrelated with the echo estimate, so the step falls and the filter keeps its
  weights (no separate double-talk detector is needed for adaptation). Before the filter has
  adapted at all, a temporary rate from the far-end and error energies (as ``mdf.c``). The
  per-partition step is scaled by each partition's share of the filter's energy (proportionate
  update, ``mdf_adjust_prop``), which speeds up a sparse echo path (one bulk delay). The
  gradient constraint (circular-convolution removal) runs on one partition per block in turn
  plus the first (AUMDF).
* Pass-through: a block whose reference span holds no active agent audio (every ``B``-cell
  below ``active_dbfs``) costs no FFT: the caller leg is returned as it is, with zero echo.
  The weights are kept for the next agent turn.

Outputs per caller chunk (:class:`AecOut`): the residual (int16), the predicted echo signal
that was subtracted (float32, int16 scale), and the filter's ``leak`` (its estimate of the
residual echo power relative to the echo-estimate power), from which the double-talk rule
predicts how much echo is left in the residual.

Batching: :func:`cancel_many` runs many calls' chunks in one pass (one ``rfft`` over a
``(calls, 2 B)`` array per step, the partition products over ``(calls, K, B + 1)``); the
per-call :meth:`EchoCanceller.process` is the same code with one call, so both give the same
output (tested).

Sources: J.-M. Valin, "On adjusting the learning rate in frequency domain echo cancellation
with double-talk", IEEE Trans. ASLP 15(3), 2007; J.-S. Soo, K. K. Pang, "Multidelay block
frequency domain adaptive filter", IEEE Trans. ASSP 38(2), 1990; Speex ``libspeexdsp/mdf.c``
(the step-size rules and their constants); ITU-T G.168 (2015) for ERLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.audio.echo import _Ring

__all__ = ["AecOut", "EchoCanceller", "cancel_many"]

_MIN_LEAK = 0.005  # mdf.c: "we don't really hope to get better than 33 dB attenuation anyway"


@dataclass(frozen=True, slots=True)
class AecOut:
    """What the canceller made of one caller-leg chunk.

    Attributes:
        residual: int16 ``[n]``, the caller leg minus the predicted echo (the input itself
            where no agent audio was active).
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


class EchoCanceller:
    """One call's echo canceller (numpy MDF), on the call's sample clock.

    Args:
        sample_rate: Hz of both legs (8000, 16000).
        tail_ms: span of the adaptive filter, ms, from the bulk delay on (rounded up to whole
            blocks): it must cover the echo's delay plus its dispersion.
        block_ms: the block (partition) length, ms.
        bulk_delay_ms: a fixed delay applied to the reference before the filter (e.g. the
            :class:`~gateway.audio.echo.EchoPathEstimator`'s delay minus a margin), so a short
            ``tail_ms`` suffices; 0 = the filter covers lags from 0.
        active_dbfs: a reference ``B``-cell counts as agent audio above this RMS, dBFS.

    Raises:
        ValueError: a sample rate, tail or block that is not positive, or a block that is not
            a whole number of samples.
    """

    def __init__(self, sample_rate: int = 8000, *, tail_ms: float = 260.0, block_ms: float = 20.0,
                 bulk_delay_ms: float = 0.0, active_dbfs: float = -66.0) -> None:
        b = block_ms * sample_rate / 1000
        if sample_rate <= 0 or tail_ms <= 0 or b < 8 or b != int(b) or bulk_delay_ms < 0:
            raise ValueError(f"bad echo canceller geometry: rate {sample_rate}, tail {tail_ms} ms, "
                             f"block {block_ms} ms, bulk delay {bulk_delay_ms} ms")
        self.sample_rate = sample_rate
        self.block = int(b)
        self.partitions = max(1, int(np.ceil(tail_ms * sample_rate / 1000 / self.block)))
        self.bulk = int(round(bulk_delay_ms * sample_rate / 1000))
        self._active_e = (32768.0 * 10 ** (active_dbfs / 20)) ** 2 * self.block
        span = (self.partitions + 1) * self.block + self.bulk
        cap = 1 << int(np.ceil(np.log2(max(4 * sample_rate, 2 * span))))
        self._ref = _Ring(cap)
        self._cells = np.zeros(cap // self.block)  # reference energy per absolute B-cell
        self.reset()

    @property
    def key(self) -> tuple[int, int, int]:
        """Stages with the same key can be batched together: (rate, block, partitions)."""
        return (self.sample_rate, self.block, self.partitions)

    def reset(self) -> None:
        """Forgets the reference, the filter and every average (a new call)."""
        k, f = self.partitions, self.block + 1
        self._ref.end = 0
        self._cells[:] = 0.0
        self.W = np.zeros((k, f), np.complex64)
        self.X = np.zeros((k, f), np.complex64)
        self.power = np.zeros(f, np.float32)
        self.Eh = np.zeros(f, np.float32)
        self.Yh = np.zeros(f, np.float32)
        self.prop = np.full(k, 0.99 / k, np.float32)
        self.Pey = 1.0
        self.Pyy = 1.0
        self.leak = 1.0
        self.sum_adapt = 0.0
        self.adapted = False
        self.count = 0  # adapted blocks (drives the constraint's partition)
        self._xt: int | None = None  # the block start whose reference spectrum is X[0]
        self._sxx = 0.0  # energy of the newest reference block
        self._refp = 0.0  # the loudest reference cell's mean square in the current block's span
        self._t0: int | None = None  # start of the block in progress
        self._fill = 0
        self._d = np.zeros(self.block, np.float32)
        self._y: np.ndarray | None = None  # echo estimate of the block in progress (None: passed through)
        self._next: int | None = None  # the caller sample expected next

    def reference(self, pcm: np.ndarray, at_sample: int) -> None:
        """Agent audio as it played at the carrier.

        Args:
            pcm: int16 ``[n]`` at :attr:`sample_rate`.
            at_sample: call-timeline index of its first sample. Feed the reference of a time no
                later than the caller-leg audio of that time (it may run ahead by up to ~2 s).

        Raises:
            TypeError: ``pcm`` is not int16.
        """
        x = _int16(pcm, "reference")
        if x.size == 0:
            return
        self._ref.write(x.astype(np.float64), at_sample)
        self._recell(at_sample, at_sample + x.size)

    def truncate_reference(self, at_sample: int) -> None:
        """Agent audio from ``at_sample`` on never played (a ``clear`` dropped it): forget it.

        Args:
            at_sample: call-timeline index of the first sample that did not play.
        """
        end = self._ref.end
        self._ref.truncate(at_sample)
        if at_sample < end:
            self._recell(at_sample, end)

    def _recell(self, start: int, stop: int) -> None:
        """Recomputes the reference energy of every ``B``-cell touching ``[start, stop)``."""
        b, n = self.block, self._cells.size
        lo = max(start // b, (self._ref.end - self._ref.capacity) // b + 1, 0)
        hi = -(-stop // b)
        if hi <= lo:
            return
        seg = self._ref.read(lo * b, hi * b).reshape(-1, b)
        idx = np.arange(lo, hi) % n
        self._cells[idx] = np.einsum("ij,ij->i", seg, seg)

    def _active(self, t0: int) -> bool:
        """Whether any reference cell in the filter's span for the block at ``t0`` is active
        (the loudest cell's mean square goes to ``_refp``)."""
        b = self.block
        lo = (t0 - self.bulk) // b - self.partitions
        hi = -(-(t0 + b - self.bulk) // b)
        lo = max(lo, hi - self._cells.size, 0)
        self._refp = 0.0
        if hi <= lo or (self._ref.end - self.bulk) <= lo * b:
            return False
        top = float(self._cells[np.arange(lo, hi) % self._cells.size].max())
        if top <= self._active_e:
            return False
        self._refp = top / b
        return True

    def process(self, pcm: np.ndarray, at_sample: int) -> AecOut:
        """The caller leg's audio: returns its residual and the predicted echo (see
        :class:`AecOut`). Same as ``cancel_many([self], [pcm], [at_sample])[0]``.

        Args:
            pcm: int16 ``[n]`` at :attr:`sample_rate` (decoded from the carrier's codec).
            at_sample: call-timeline index of its first sample. Chunks should follow each
                other; a gap or overlap restarts the block grid there (the weights are kept).

        Raises:
            TypeError: ``pcm`` is not int16.
        """
        return cancel_many([self], [pcm], [at_sample])[0]

    @property
    def erle_hint_db(self) -> float:
        """``-10 log10(leak)``: the filter's own estimate of the echo removed, dB (0 before
        adaptation; at most 23 dB, the floor ``leak`` 0.005)."""
        return float(-10 * np.log10(max(self.leak, 1e-9)))


def _int16(pcm: np.ndarray, what: str) -> np.ndarray:
    """``pcm`` as a 1-D int16 array; anything else is a caller bug."""
    a = np.asarray(pcm)
    if a.dtype != np.int16:
        raise TypeError(f"{what} audio must be int16 PCM, not {a.dtype}")
    return a.reshape(-1)


def cancel_many(stages: Sequence[EchoCanceller], pcms: Sequence[np.ndarray],
                at_samples: Sequence[int]) -> list[AecOut]:
    """Runs many calls' caller-leg chunks through their cancellers in one pass.

    Stages with the same :attr:`EchoCanceller.key` share every FFT and partition product;
    the output of each equals its own :meth:`EchoCanceller.process`.

    Args:
        stages: distinct cancellers (one per call).
        pcms: each call's caller-leg chunk, int16 ``[n_i]`` (any lengths, 0 allowed).
        at_samples: each chunk's first sample on its call's timeline.

    Returns:
        One :class:`AecOut` per stage, in order.

    Raises:
        ValueError: lengths differ or a stage is listed twice.
        TypeError: a chunk is not int16.
    """
    if not len(stages) == len(pcms) == len(at_samples):
        raise ValueError("stages, pcms and at_samples must have the same length")
    if len({id(s) for s in stages}) != len(stages):
        raise ValueError("a stage is listed twice")
    xs = [_int16(p, "caller") for p in pcms]
    res = [x.astype(np.float32) for x in xs]
    echo = [np.zeros(x.size, np.float32) for x in xs]
    active = [False] * len(stages)
    refp = [0.0] * len(stages)
    pos = [0] * len(stages)
    for st, x, at in zip(stages, xs, at_samples):
        if st._next is not None and at != st._next:
            st._fill, st._t0, st._y = 0, None, None  # a gap: drop the unfinished block
        if x.size:
            st._next = at + x.size
    while True:
        left = [i for i in range(len(stages)) if pos[i] < xs[i].size]
        if not left:
            break
        go = []
        for i in left:
            st = stages[i]
            if st._fill == 0:
                st._t0, st._y = at_samples[i] + pos[i], None
                if st._active(st._t0):
                    go.append(st)
        _grouped(go, _start)
        done = []
        for i in left:
            st, p = stages[i], pos[i]
            k = min(st.block - st._fill, xs[i].size - p)
            st._d[st._fill:st._fill + k] = res[i][p:p + k]
            if st._y is not None:
                seg = st._y[st._fill:st._fill + k]
                res[i][p:p + k] -= seg
                echo[i][p:p + k] = seg
                active[i] = True
                refp[i] = max(refp[i], st._refp)
            st._fill += k
            pos[i] += k
            if st._fill == st.block:
                st._fill = 0
                if st._y is not None:
                    done.append(st)
        _grouped(done, _adapt)
    return [AecOut(residual=np.clip(np.rint(r), -32768, 32767).astype(np.int16), echo=e,
                   leak=float(st.leak), adapted=st.adapted, active=a, ref_power=q)
            for st, r, e, a, q in zip(stages, res, echo, active, refp)]


def _grouped(stages: list[EchoCanceller], work) -> None:
    """Calls ``work(group)`` once per group of stages with the same key."""
    groups: dict[tuple, list[EchoCanceller]] = {}
    for st in stages:
        groups.setdefault(st.key, []).append(st)
    for group in groups.values():
        work(group)


def _spectra(st: EchoCanceller, t0: int, count: int) -> np.ndarray:
    """The reference spectra of the ``count`` blocks ending at ``t0 + B``, ``t0``, …,
    ``[count, B + 1]`` complex64, scaled by ``1 / 2B`` (Speex's forward FFT)."""
    b = st.block
    r = st._ref.read(t0 - st.bulk - count * b, t0 - st.bulk + b).astype(np.float32)
    idx = np.arange(count)[:, None] * -b + (count - 1) * b + np.arange(2 * b)[None, :]
    return (np.fft.rfft(r[idx], axis=1) * np.float32(0.5 / b)).astype(np.complex64)


def _start(group: list[EchoCanceller]) -> None:
    """Starts a block in every stage of ``group``: the newest reference spectrum (one FFT for
    all), the spectra history (recomputed where stale) and the echo estimate."""
    b = group[0].block
    r = np.stack([st._ref.read(st._t0 - st.bulk - b, st._t0 - st.bulk + b) for st in group]).astype(np.float32)
    spec = (np.fft.rfft(r, axis=1) * np.float32(0.5 / b)).astype(np.complex64)
    sxx = np.einsum("mn,mn->m", r[:, b:], r[:, b:])
    for st, s, e in zip(group, spec, sxx):
        if st._xt == st._t0 - b:
            st.X[1:] = st.X[:-1]
            st.X[0] = s
        else:  # after a pass-through or a gap: the whole history from the ring
            st.X[:] = _spectra(st, st._t0, st.partitions)
        st._xt = st._t0
        st._sxx = float(e)
    W = np.stack([st.W for st in group])
    X = np.stack([st.X for st in group])
    y = np.fft.irfft(np.einsum("mkf,mkf->mf", W, X), n=2 * b, axis=1)[:, b:] * np.float32(2 * b)
    for st, yi in zip(group, y.astype(np.float32)):
        st._y = yi


def _adapt(group: list[EchoCanceller]) -> None:
    """Adapts every stage of ``group`` on its completed block (Speex ``mdf.c``'s update, float
    build: the leak estimate, the residual-to-error ratio, the per-bin learning rate, the
    proportionate partition weights and one AUMDF constraint)."""
    st0 = group[0]
    b, k, rate = st0.block, st0.partitions, st0.sample_rate
    n, m = 2 * b, len(group)
    scale = np.float32(0.5 / b)
    d = np.stack([st._d for st in group])
    y = np.stack([st._y for st in group])
    e = d - y
    see = np.maximum(np.einsum("mn,mn->m", e, e).astype(np.float64), n * 100 / 64)
    syy = np.einsum("mn,mn->m", y, y).astype(np.float64)
    sey = np.einsum("mn,mn->m", e, y).astype(np.float64)
    sxx = np.array([st._sxx for st in group])
    z = np.zeros((2 * m, n), np.float32)
    z[:m, b:] = e
    z[m:, b:] = y
    spec = np.fft.rfft(z, axis=1) * scale
    E = spec[:m].astype(np.complex64)
    rf = (E.real ** 2 + E.imag ** 2)
    yf = (spec[m:].real ** 2 + spec[m:].imag ** 2).astype(np.float32)
    W = np.stack([st.W for st in group])
    X = np.stack([st.X for st in group])
    xf = X[:, 0].real ** 2 + X[:, 0].imag ** 2
    ss = 0.35 / k
    power = np.stack([st.power for st in group]) * np.float32(1 - ss) + np.float32(1) + np.float32(ss) * xf
    eh = np.stack([st.Eh for st in group])
    yh = np.stack([st.Yh for st in group])
    de, dy = rf - eh, yf - yh
    pyy_new = np.sqrt(np.einsum("mf,mf->m", dy, dy).astype(np.float64))
    pey_new = np.einsum("mf,mf->m", de, dy).astype(np.float64) / np.maximum(pyy_new, 1e-12)
    sa = np.float32(b / rate)
    eh += sa * de
    yh += sa * dy
    alpha = np.minimum(2.0 * b / rate * syy, 0.5 * b / rate * see) / see
    pey = np.array([st.Pey for st in group]) * (1 - alpha) + alpha * pey_new
    pyy = np.maximum(np.array([st.Pyy for st in group]) * (1 - alpha) + alpha * pyy_new, 1.0)
    pey = np.clip(pey, _MIN_LEAK * pyy, pyy)
    leak = pey / pyy
    rer = np.minimum(np.maximum((1e-4 * sxx + 3.0 * leak * syy) / see, sey * sey / (1 + see * syy)), 0.5)
    adapted = np.array([st.adapted for st in group])
    sum_adapt = np.array([st.sum_adapt for st in group])
    adapted |= (sum_adapt > k) & (leak > 0.03)
    # learning rate per bin: adapted (Valin's residual-to-error ratio) or the temporary one
    r = np.minimum(leak[:, None].astype(np.float32) * yf, 0.5 * (rf + 1))
    r = 0.7 * r + 0.3 * rer[:, None].astype(np.float32) * (rf + 1)
    mu_ad = r / ((rf + 1) * (power + 10))
    rate0 = np.where(sxx > n * 1000 / 64, np.minimum(0.25 * sxx, 0.25 * see) / see, 0.0)
    mu_un = rate0[:, None].astype(np.float32) / (power + 10)
    mu = np.where(adapted[:, None], mu_ad, mu_un).astype(np.float32)
    sum_adapt = np.where(adapted, sum_adapt, sum_adapt + rate0)
    prop = np.stack([st.prop for st in group])
    if adapted.any():
        prop = np.where(adapted[:, None], _prop(W), prop)
    W += prop[:, :, None] * np.conj(X) * (mu * E)[:, None, :]
    _constrain(W, [st.count for st in group], b)
    ok = np.isfinite(W).all(axis=(1, 2))
    for i, st in enumerate(group):
        if not ok[i]:  # never seen; Speex resets a filter that went bad, so do we
            st.W[:] = 0
            st.adapted, st.sum_adapt, st.leak = False, 0.0, 1.0
            continue
        st.W[:] = W[i]
        st.power[:] = power[i]
        st.Eh[:] = eh[i]
        st.Yh[:] = yh[i]
        st.prop[:] = prop[i]
        st.Pey, st.Pyy, st.leak = float(pey[i]), float(pyy[i]), float(leak[i]) if adapted[i] else 1.0
        st.adapted, st.sum_adapt = bool(adapted[i]), float(sum_adapt[i])
        st.count += 1


def _prop(W: np.ndarray) -> np.ndarray:
    """Proportionate step per partition (``mdf_adjust_prop``): each partition's share of the
    filter's magnitude plus a tenth of the largest, summing to 0.99. ``[m, K]`` float32."""
    f = W.shape[2]
    p = np.sqrt(1e-6 * f + np.einsum("mkf,mkf->mk", W.real, W.real) + np.einsum("mkf,mkf->mk", W.imag, W.imag))
    p += 0.1 * p.max(axis=1, keepdims=True)
    return (0.99 * p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _constrain(W: np.ndarray, counts: list[int], b: int) -> None:
    """Zeroes the second half of the impulse response of partition 0 and of partition
    ``1 + count % (K - 1)`` of each stage (AUMDF), in place."""
    m, k, _ = W.shape
    rows = np.arange(m)
    parts = [np.zeros(m, int)]
    if k > 1:
        parts.append(1 + np.array(counts) % (k - 1))
    for j in parts:
        w = np.fft.irfft(W[rows, j], n=2 * b, axis=1)
        w[:, b:] = 0.0
        W[rows, j] = np.fft.rfft(w, axis=1).astype(np.complex64)
