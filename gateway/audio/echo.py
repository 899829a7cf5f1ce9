"""Echo-path estimation for one call: the delay and return loss of the agent's own echo.

The gateway knows what agent audio played at the carrier and when (the playout ledger); the
caller leg carries that audio back as residual echo (a line hybrid, a speakerphone). This
stage pairs the two on the call's timeline and estimates the echo path's **delay** (ms) and
**echo return loss** (ERL, dB: reference level minus echo level, positive = echo quieter).

Method (pure numpy, no I/O; time counted in samples from the call's start):

1. Both legs are written into ring buffers at their sample positions (gaps are silence).
2. The caller leg is cut into blocks of ``B = N - D`` samples (``D`` = max delay in samples,
   ``N`` = the FFT size, the power of two >= ``2 D``: 4,992 samples, 624 ms at 8 kHz). A block
   counts only when the reference over ``[t0 - D, t0 + B)`` is active (RMS above
   ``active_dbfs``).
3. Per block, one FFT of each leg gives the cross-spectrum and both power spectra; they are
   averaged over blocks (a running mean, then exponential smoothing with a time constant of
   ``smoothing_blocks`` blocks) with a per-block weight ``1 / caller energy``, so blocks where
   the caller talks over the agent (double talk) count for little without biasing the gain.
4. The delay is the peak of the smoothed cross-correlation whitened by the two spectra
   (GCC-SCOT, Carter 1987), which is sharp for speech and ignores pitch periodicity.
   **Confidence** is ``1 - sidelobe / peak`` of that whitened correlation (sidelobe: the
   largest value more than ``guard`` = 2 ms from the peak): 0 for noise, near 1 for a clean
   echo. An estimate is published once ``min_active_ms`` of active reference were seen and
   the confidence is at least ``min_confidence`` (0.45: without echo, with and without the
   caller talking, the highest confidence seen at any block over 48 ten-second calls of the
   shared speech was 0.30; a true 45 dB echo under −45 dBFS noise reads 0.55–0.82).
5. The ERL comes from a least-squares fit, over the last second of both legs, of a filter with
   taps from 1 ms before the peak lag to 10 ms after it onto the caller leg (echo power
   ``xc' R^-1 xc``, ``R`` the lagged reference's autocorrelation; what is not echo adds
   ``taps / m`` of its power to such a fit and that share is taken off), against the reference
   power at the delay: ERL = reference power / echo power, in dB. A one-tap gain at the peak
   (``g = sum c[n] r[n - d] / sum r[n - d]^2``, what this did before) reads a dispersive path
   short: a line hybrid's taps alternate in sign over a correlated speech reference, and the
   simulator's 12-tap hybrid read 6–7 dB too quiet, so the double-talk rule's prior let its
   echo through. A dispersive path's loss depends on the speech's spectrum (±3 dB from one
   second to the next on the hybrid), so the ERL is read from the fits' powers summed: a fit
   for each of the first four estimates (one per ~2.5 s of agent audio) and every eighth after
   (~20 s; ~0.3 ms each), started over when the delay moves. Uncorrelated caller speech and
   line noise do not bias it beyond ``taps / m``, only add variance; the one-tap gain is the
   fallback until a fit had an active reference.

Without a confident peak :attr:`EchoPathEstimator.erl_lower_bound_db` still bounds the
return loss: an echo can be no louder than the whole caller leg.

Accuracy (``tests/audio/test_echo.py``: speech from ``../shared/audio/speech``, μ-law, line
noise −60…−45 dBFS, 8 kHz): delay within ±1 sample (±0.125 ms) and ERL within ±2 dB for
delays 40/120/200 ms and ERL 12/25/35/45 dB on a flat path; on the simulator's hybrid and
small-room paths (:mod:`gateway.simulator.echo`) at 12/25/35 dB the ERL reads within ±1.5 dB of
the loss the echo achieved (measured: −0.6…+1.1 dB; the one-tap gain read +5.7…+7.9 dB on the
hybrid). The first estimate comes after three active blocks (1.9 s of agent audio) at
12–35 dB; at 45 dB under −45 dBFS noise after 1.9–8 s. The one case that finds
nothing (``None``, never a wrong delay) is a 45 dB echo under −45 dBFS noise with the caller
talking over the agent the whole time.

Cost: bounded memory (two int16 rings of ``2**ceil(log2(4 s))`` samples, 64 KiB each at
8 kHz, and a few FFT-size arrays); CPU per call per 20 ms frame at 8 kHz, both legs fed
(measured on the shared 2-core dev box, 60 s of audio): ≈ 13–22 µs while the agent talks
(two 8,192-point real FFTs per 624 ms block, the delay search every 4th block), ≈ 6–9 µs
while it is silent (ring writes; an idle block costs one read and an RMS). With
``duty_every=4`` the blocks after the first estimate cost a quarter of that: ~11 → ~3 µs per
frame for the blocks; the echo stage runs ``duty_every=8``
(:data:`gateway.engine.echo.ESTIMATOR_DUTY`). The first estimate is the same (the duty cycle
starts after it); over 12 s on 40 generated calls (``benchmarks/media_echo.py``'s legs) the
delay stayed the same and the ERL within 0.1 dB of the full rate at 4
(``tests/audio/test_echo.py``).

Sources: G. C. Carter, "Coherence and time delay estimation", Proc. IEEE 75(2), 1987
(GCC, SCOT weighting); ITU-T G.168 (2015) §3 for echo return loss and echo path delay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EchoEstimate", "EchoPathEstimator", "to_metrics"]

_FULL_SCALE = 32768.0
#: The return loss's fit: taps from this long before the delay's peak (ms) ...
FIT_PRE_MS = 1.0
#: ... to this long after it (ms): a line hybrid's dispersion (~2 ms) and a small room's first
#: reflections (~10 ms).
FIT_POST_MS = 10.0
#: Diagonal loading of the fit's autocorrelation (share of the reference power): speech at
#: 8 kHz leaves it ill-conditioned, and noise in the correlation would be amplified there.
FIT_LOADING = 0.01
#: The span of both legs the fit reads (ms, up to the end of the block that made the estimate):
#: about a second, with the fit's taps within one 8,192-point FFT at 8 kHz (16,384 at 16 kHz).
FIT_MS = 990.0
#: The fit runs for each of the first this many estimates (one every ~2.5 s of agent audio at
#: 8 kHz; again after the delay moved) ...
FIT_FIRST = 4
#: ... then for every this many (~20 s). The loss is read from the fits' powers summed: a
#: dispersive path's loss depends on the speech's spectrum, ±3 dB from one second to the next.
FIT_EVERY = 8
_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class EchoEstimate:
    """One echo-path estimate.

    Attributes:
        delay_ms: echo path delay, ms (reference play time to its echo on the caller leg).
        erl_db: echo return loss, dB (reference level minus echo level; positive = quieter).
        confidence: 0–1, ``1 - sidelobe / peak`` of the whitened cross-correlation.
        updated_at_sample: call-timeline sample index at the end of the last block used.
    """

    delay_ms: float
    erl_db: float
    confidence: float
    updated_at_sample: int


class _Ring:
    """A ring of samples on an absolute timeline; unwritten or lost samples read 0; reads are
    float64.

    ``rows`` > 0 keeps that many parallel signals (buffer ``[rows, capacity]``, written and
    read as ``[rows, n]``) on one timeline: one write and one read for all of them. ``dtype``
    is the storage: float64, or int16 for PCM (a quarter of the memory, so a write touches a
    quarter of the cache lines; writers check their input is int16)."""

    def __init__(self, capacity: int, rows: int = 0, dtype: type = np.float64) -> None:
        self._buf = np.zeros((rows, capacity) if rows else capacity, dtype)
        self.capacity = capacity
        self.end = 0  # one past the highest sample index written

    def write(self, pcm: np.ndarray, at: int) -> None:
        """Writes ``pcm`` (``[n]``, or ``[rows, n]``, cast to the ring's dtype) at absolute index
        ``at``; a gap since :attr:`end` is zeroed."""
        n = pcm.shape[-1]
        i = at % self.capacity
        if at == self.end and i + n <= self.capacity:  # the usual write: right after the last, no wrap
            self._buf[..., i:i + n] = pcm
            self.end = at + n
            return
        if at + n <= self.end - self.capacity or n == 0:
            return
        if at > self.end:
            gap = min(at - self.end, self.capacity)
            self._put(np.zeros(self._buf.shape[:-1] + (gap,)), at - gap)
        if n > self.capacity:
            pcm, at = pcm[..., n - self.capacity:], at + n - self.capacity
        self._put(pcm, at)
        self.end = max(self.end, at + pcm.shape[-1])

    def _put(self, x: np.ndarray, at: int) -> None:
        i = at % self.capacity
        n = x.shape[-1]
        k = min(n, self.capacity - i)
        self._buf[..., i:i + k] = x[..., :k]
        if k < n:
            self._buf[..., :n - k] = x[..., k:]

    def truncate(self, at: int) -> None:
        """Forgets samples from ``at`` on (they read 0 again; later writes start from there)."""
        if at < self.end:
            lo = max(at, self.end - self.capacity)
            self._put(np.zeros(self._buf.shape[:-1] + (self.end - lo,)), lo)
            self.end = max(at, 0)

    def read_into(self, out: np.ndarray, start: int) -> None:
        """Samples ``[start, start + n)`` into ``out`` (``[n]``, or ``[rows, n]``): :meth:`read`
        without a new array in the usual case."""
        cap, stop = self.capacity, start + out.shape[-1]
        if self.end - cap <= start and stop <= self.end:
            i, j = start % cap, stop % cap
            if i < j:
                out[...] = self._buf[..., i:j]
                return
        out[...] = self.read(start, stop)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` as a new float64 array (zeros where unknown)."""
        cap = self.capacity
        if self.end - cap <= start and stop <= self.end:  # all of it known: one copy unless it wraps
            i, j = start % cap, stop % cap
            if i < j:
                return self._buf[..., i:j].astype(np.float64)
        out = np.zeros(self._buf.shape[:-1] + (stop - start,))
        lo, hi = max(start, self.end - cap), min(stop, self.end)
        if hi > lo:
            i = lo % cap
            k = min(hi - lo, cap - i)
            out[..., lo - start:lo - start + k] = self._buf[..., i:i + k]
            out[..., lo - start + k:hi - start] = self._buf[..., :hi - lo - k]
        return out


_I16 = np.dtype(np.int16)


def _flat(pcm: np.ndarray) -> np.ndarray:
    """``pcm`` as a 1-D int16 array for a ring write (a 1-D int16 array as it is).

    Raises:
        TypeError: ``pcm`` is not int16 (the rings store int16: anything else would be cast).
    """
    if type(pcm) is np.ndarray and pcm.dtype is _I16 and pcm.ndim == 1:
        return pcm
    a = np.asarray(pcm)
    if a.dtype != np.int16:
        raise TypeError(f"echo path estimator audio must be int16 PCM, not {a.dtype}")
    return a.reshape(-1)


class EchoPathEstimator:
    """Per-call echo path estimator (delay, ERL) from the played reference and the caller leg.

    Args:
        sample_rate: Hz of both legs (8000, 16000).
        max_delay_ms: largest echo delay searched, ms (lags 0..max).
        active_dbfs: reference RMS over a block's span, dBFS, above which the block counts.
        min_active_ms: active reference needed before an estimate is published, ms.
        min_confidence: confidence (0–1) needed to publish an estimate.
        smoothing_blocks: time constant of the exponential smoothing, in active blocks.
        update_every: once published, the estimate is recomputed every this many active blocks
            (4 = every 2.5 s of agent audio at 8 kHz); before that, after every block.
        duty_every: once an estimate is published, only every this many active blocks is
            analysed (its two FFTs and the smoothing; a skipped block costs one read and an
            RMS), with the smoothing weight raised to ``1 - (1 - 1 / smoothing_blocks) **
            duty_every`` so the averages keep their time constant in audio; 1 = every block.
            The estimate stays up to date (recomputed on the analysed blocks that fall on
            ``update_every``), at a fraction of the cost.

    Raises:
        ValueError: a non-positive ``sample_rate`` or ``max_delay_ms``.
    """

    def __init__(self, sample_rate: int = 8000, *, max_delay_ms: float = 400.0, active_dbfs: float = -50.0,
                 min_active_ms: float = 1500.0, min_confidence: float = 0.45, smoothing_blocks: float = 24.0,
                 update_every: int = 4, duty_every: int = 1) -> None:
        if sample_rate <= 0 or max_delay_ms <= 0:
            raise ValueError("sample_rate and max_delay_ms must be positive")
        self.sample_rate = sample_rate
        self._d = int(round(max_delay_ms * sample_rate / 1000))
        self._n = 1 << int(np.ceil(np.log2(2 * self._d)))
        self._b = self._n - self._d
        self._active = (_FULL_SCALE * 10 ** (active_dbfs / 20)) ** 2
        self._min_active = int(min_active_ms * sample_rate / 1000)
        self._min_conf = min_confidence
        self._alpha = 1.0 / smoothing_blocks
        self._update_every = max(1, int(update_every))
        self._duty = max(1, int(duty_every))
        self._duty_alpha = 1.0 - (1.0 - self._alpha) ** self._duty  # the same time constant, per analysed block
        self._lags = np.arange(self._d + 1)
        self._guard = max(1, int(0.002 * sample_rate))
        cap = 1 << int(np.ceil(np.log2(4 * sample_rate)))
        self._ref = _Ring(max(cap, 2 * self._n), dtype=np.int16)
        self._cal = _Ring(max(cap, 2 * self._n), dtype=np.int16)
        self.reset()

    def reset(self) -> None:
        """Forgets both legs and every average (a new call)."""
        self._ref.end = self._cal.end = 0
        self._next: int | None = None
        bins = self._n // 2 + 1
        self._scr = np.zeros(bins, complex)
        self._srr = np.zeros(bins)
        self._scc = np.zeros(bins)
        self._ser = np.zeros(self._d + 1)  # weighted reference energy at each lag, per sample
        self._ec = 0.0  # smoothed weighted caller-block energy per sample
        self._er = 0.0  # smoothed weighted reference energy per sample, aligned span
        self._blocks = 0  # active blocks analysed
        self._seen = 0  # active blocks seen (analysed or skipped by the duty cycle)
        self._active_samples = 0
        self._last: EchoEstimate | None = None
        self._updates = 0  # estimates published
        self._fits = 0  # return-loss fits summed (since the delay last moved)
        self._fit_sums = [0.0, 0.0]  # their reference and echo powers

    def reference(self, pcm: np.ndarray, at_sample: int) -> None:
        """Agent audio as it played at the carrier.

        Args:
            pcm: int16 ``[n]`` at :attr:`sample_rate`.
            at_sample: call-timeline index of its first sample (when it played). Feed the
                reference no later than the caller-leg audio of the same time; it may run
                ahead by up to ~2 s.

        Raises:
            TypeError: ``pcm`` is not int16.
        """
        self._ref.write(_flat(pcm), at_sample)

    def truncate_reference(self, at_sample: int) -> None:
        """Agent audio from ``at_sample`` on never played (a ``clear`` dropped the carrier's
        buffer): forget it, so the echo search sees silence there.

        Args:
            at_sample: call-timeline index of the first sample that did not play.
        """
        self._ref.truncate(at_sample)

    def caller(self, pcm: np.ndarray, at_sample: int) -> None:
        """The caller leg's audio; processes every block it completes.

        Args:
            pcm: int16 ``[n]`` at :attr:`sample_rate` (decoded from the carrier's codec).
            at_sample: call-timeline index of its first sample.

        Raises:
            TypeError: ``pcm`` is not int16.
        """
        x = _flat(pcm)
        if self._next is None:
            self._next = at_sample
        if x.size <= self._b:  # one piece (the usual frame)
            self._cal.write(x, at_sample)
            while self._cal.end >= self._next + self._b:
                self._block(self._next)
                self._next += self._b
            return
        for off in range(0, x.size, self._b):
            piece = x[off:off + self._b]
            self._cal.write(piece, at_sample + off)
            while self._cal.end >= self._next + self._b:
                self._block(self._next)
                self._next += self._b

    @property
    def estimate(self) -> EchoEstimate | None:
        """The latest confident estimate, or ``None`` (too little agent audio, or no clear peak)."""
        return self._last

    @property
    def erl_lower_bound_db(self) -> float | None:
        """A lower bound on the ERL, dB, from the levels alone (the echo is no louder than the
        caller leg); ``None`` before any active block."""
        if self._blocks == 0:
            return None
        return float(10 * np.log10((self._er + _EPS) / (self._ec + _EPS)))

    def _block(self, t0: int) -> None:
        """One caller block ``[t0, t0 + B)`` against the reference ``[t0 - D, t0 + B)``."""
        r = self._ref.read(t0 - self._d, t0 + self._b)
        er = float(np.dot(r, r)) / r.size
        if er < self._active:
            return
        self._seen += 1
        duty = self._last is not None and self._duty > 1
        if duty and self._seen % self._duty:
            return  # published: analyse only every duty-th active block
        c = self._cal.read(t0, t0 + self._b)
        ec = float(np.dot(c, c)) / c.size
        w = 1.0 / (ec + 1.0)
        a = np.zeros(self._n)
        a[self._d:self._d + self._b] = c
        fa, fr = np.fft.rfft(a), np.fft.rfft(r, self._n)
        self._blocks += 1
        self._active_samples += self._b
        k = max(self._duty_alpha if duty else self._alpha, 1.0 / self._blocks)
        self._scr += k * (w * fa * np.conj(fr) - self._scr)
        self._srr += k * (w * (fr.real ** 2 + fr.imag ** 2) - self._srr)
        self._scc += k * (w * (fa.real ** 2 + fa.imag ** 2) - self._scc)
        self._ec += k * (w * ec - self._ec)
        self._er += k * (w * er - self._er)
        cum = np.concatenate(([0.0], np.cumsum(r * r)))  # energy of r[t0 + n - lag], n < B:
        lagged = cum[self._d + self._b - self._lags] - cum[self._d - self._lags]
        self._ser += k * (w * lagged / self._b - self._ser)
        due = self._last is None or self._seen % self._update_every == 0
        if self._active_samples >= self._min_active and due:
            self._update(t0 + self._b)

    def _update(self, at: int) -> None:
        """Recomputes the delay, confidence and ERL from the smoothed spectra."""
        d = self._d
        scot = np.fft.irfft(self._scr / np.sqrt(self._srr * self._scc + _EPS), self._n)[:d + 1]
        mag = np.abs(scot)
        peak = int(np.argmax(mag))
        side = mag.copy()
        side[max(0, peak - self._guard):peak + self._guard + 1] = 0.0
        conf = float(max(0.0, 1.0 - side.max() / (mag[peak] + _EPS)))
        if conf < self._min_conf:
            return
        last = self._last
        moved = last is not None and abs(round(last.delay_ms * self.sample_rate / 1000) - peak) > self._guard
        if moved:  # another path: its fits start over
            self._fits = 0
            self._fit_sums = [0.0, 0.0]
        if self._fits < FIT_FIRST or self._updates % FIT_EVERY == 0:
            self._fit(peak, at)
        self._updates += 1
        ref_p, echo_p = self._fit_sums
        # the fits' powers summed: a loss over all the speech they saw; else the one-tap gain
        erl = 10 * np.log10((ref_p + _EPS) / (echo_p + _EPS)) if self._fits else self._one_tap_erl(peak)
        self._last = EchoEstimate(delay_ms=peak * 1000.0 / self.sample_rate, erl_db=erl, confidence=conf,
                                  updated_at_sample=at)


    def _one_tap_erl(self, peak: int) -> float:
        """The return loss (dB) of the least-squares one-tap gain at ``peak`` from the smoothed
        cross-spectrum: ``g = sum c[n] r[n - peak] / sum r[n - peak]^2``."""
        wt = np.full(self._scr.size, 2.0)
        wt[0] = 1.0
        wt[-1] = 1.0
        phase = np.exp(2j * np.pi * np.arange(self._scr.size) * peak / self._n)
        xc = float(np.dot(wt, (self._scr * phase).real)) / self._n / self._b
        ref = float(self._ser[peak])  # reference power at the echo's lag, per sample
        echo = xc * xc / (ref + _EPS)  # echo power g^2 ref
        return float(10 * np.log10((ref + _EPS) / (echo + _EPS)))

    def _fit(self, peak: int, at: int) -> None:
        """One :meth:`_fit_powers` into the sums the return loss is read from."""
        got = self._fit_powers(peak, at)
        if got is not None:
            self._fit_sums[0] += got[0]
            self._fit_sums[1] += got[1]
            self._fits += 1

    def _fit_powers(self, peak: int, at: int) -> tuple[float, float] | None:
        """The reference's and the echo's power per sample from a least-squares fit, over the last :data:`FIT_MS` of both legs
        up to ``at``, of a filter with taps at lags ``peak - pre .. peak + post``
        (:data:`FIT_PRE_MS`, :data:`FIT_POST_MS`) onto the caller leg: echo power
        ``xc' R^-1 xc`` (``xc``: the cross-correlation at those lags; ``R``: the lagged
        reference's autocorrelation, Toeplitz, loaded by :data:`FIT_LOADING`) against the
        reference's power at the delay, so a dispersive path counts whole (a one-tap fit at the
        peak reads a line hybrid's echo 6–7 dB too quiet: its taps alternate in sign over a
        correlated reference). What is not echo (noise, the caller) adds ``taps / m`` of its
        power to such a fit; that share is taken off. ``None`` if the reference was silent there."""
        m = int(FIT_MS * self.sample_rate / 1000)
        lo = max(0, peak - int(round(FIT_PRE_MS * self.sample_rate / 1000)))
        hi = min(self._d, peak + int(round(FIT_POST_MS * self.sample_rate / 1000)))
        taps = hi - lo + 1
        c = self._cal.read(at - m, at)
        seg = self._ref.read(at - m - hi, at - lo)  # seg[i] = r[at - m - hi + i]
        power = float(seg[taps - 1:] @ seg[taps - 1:])  # the reference at lag lo, over the m samples
        if power < self._active * m:
            return None
        n = 1 << int(np.ceil(np.log2(seg.size)))
        fs = np.fft.rfft(seg, n)
        # xc[j] = sum c[n] r[n - lo - j] = sum c[n] seg[n + taps - 1 - j]: a correlation, by FFT
        xc = np.fft.irfft(np.conj(np.fft.rfft(c, n)) * fs, n)[taps - 1::-1]
        acf = np.fft.irfft(fs.real ** 2 + fs.imag ** 2, n)[:taps]
        acf *= power / (acf[0] + _EPS)  # (the segment's own autocorrelation, scaled to its m samples)
        idx = np.arange(taps)
        big_r = acf[np.abs(idx[:, None] - idx[None, :])]
        big_r[idx, idx] += FIT_LOADING * power
        fitted = float(xc @ np.linalg.solve(big_r, xc)) / m  # per sample
        # what is not echo adds taps / m of its power to the fit (least squares on m samples):
        # take it off, but never below the one tap at the peak the fit spans
        rest = float(c @ c) / m - fitted
        one = float(xc[peak - lo]) ** 2 / power / m
        echo = max((fitted - taps / m * max(rest, 0.0)) / (1.0 - taps / m), one)
        return power / m, echo


def to_metrics(estimate: EchoEstimate | None, *, erl_lower_bound_db: float | None = None) -> dict:
    """The call record's ``metrics.echo``: ``{"delayMs", "erlDb", "confidence"}``.

    Without an estimate, delay and ERL are ``None``, confidence 0, and ``erlMinDb`` carries
    :attr:`EchoPathEstimator.erl_lower_bound_db` when given (values rounded: 0.1 ms, 0.1 dB).
    """
    if estimate is None:
        out: dict = {"delayMs": None, "erlDb": None, "confidence": 0.0}
        if erl_lower_bound_db is not None:
            out["erlMinDb"] = round(erl_lower_bound_db, 1)
        return out
    return {"delayMs": round(estimate.delay_ms, 1), "erlDb": round(estimate.erl_db, 1),
            "confidence": round(estimate.confidence, 3)}
