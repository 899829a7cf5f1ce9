"""Streaming polyphase resampler: Kaiser-windowed sinc, pure numpy, chunking-invariant.

Converting ``in_rate`` to ``out_rate`` conceptually upsamples by ``up = out_rate / g``
(``g = gcd(in_rate, out_rate)``), low-pass filters at the upsampled rate and keeps every
``down = in_rate / g``-th sample (22,050 → 8,000 Hz is up 160 / down 441). The filter is stored
as a polyphase bank ``[up, taps]``: each output sample is one dot product of ``taps`` input
samples with one bank row, so no zero-stuffed signal is ever built.

Filter. A linear-phase Kaiser-windowed sinc of odd length, designed with Kaiser's formulas
(order and β for ``attenuation_db``) for a transition band from ``passband`` to ``stopband``
times the lower of the two Nyquist frequencies. With the defaults (0.85, 1.0, 65 dB) a
telephone-rate (8 kHz) side is flat within ±0.01 dB to 3,400 Hz and at least 60 dB down from
4,000 Hz: what the codec tests measure with sine tones. With one side at 8 kHz that costs
``taps`` = 54 input samples per output from 8 kHz, 107 from 16, 160 from 24, 319 from 48 kHz
(the transition band is 600 Hz wide wherever the input rate is). Each bank row is
normalised to unit DC gain, and coefficients are rounded to multiples of 2**-32 (error below
-190 dB), which keeps the filter exactly symmetric.

Streaming. Output ``n`` is taken at time ``n * down + offset`` on the upsampled grid, so
positions are plain integers and the only state is ``taps - 1`` input samples of history plus
one integer phase counter. The same output sample is therefore computed from the same inputs
and coefficients whatever the chunking. For int16 input every product and partial sum is an
exact multiple of 2**-32 well inside float64's 53-bit mantissa, so the sums are exact in any
order (BLAS blocking included) and chunked output equals one-shot output bit for bit; float
input goes through the same arithmetic (identical in practice; in theory the float64 sums
could differ in their last bit before rounding to float32).

Delay. ``offset`` is chosen so the group delay is a whole number of output samples,
:attr:`Resampler.delay`: output ``n`` approximates the ideally resampled signal at index
``n - delay``. With the defaults: 8→16 kHz 53, 8→24 kHz 80, 8→48 kHz 161, 16→8 kHz 26,
22.05/24/48→8 kHz 26, 16→24 kHz 40, 24→16 kHz 26 (all about 3.3 ms). :meth:`Resampler.flush`
drains it at end of stream; :func:`resample` returns a delay-compensated one-shot result.

Sources: J. F. Kaiser, "Nonrecursive digital filter design using the I0-sinh window function"
(1974), and A. V. Oppenheim & R. W. Schafer, *Discrete-Time Signal Processing*, §7.5.3 (Kaiser
design formulas) and §4.7 (polyphase sample-rate conversion).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["Resampler", "FilterDesign", "design_filter", "resample"]

_QUANT_BITS = 32  # coefficients are multiples of 2**-32: exact int16 sums in float64
_MAX_PROTOTYPE = 1 << 22  # upsampled-rate filter length refused beyond this (memory)
_GATHER_BLOCK = 2048  # outputs per gathered block on the general path (bounds memory)
_DTYPES = (np.dtype(np.int16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True, slots=True)
class FilterDesign:
    """A polyphase low-pass filter bank for one rate pair.

    Attributes:
        in_rate: Input sample rate, Hz.
        out_rate: Output sample rate, Hz.
        up: Upsampling factor ``out_rate / gcd``.
        down: Downsampling factor ``in_rate / gcd``.
        taps: Input samples per output sample (columns of ``bank``).
        offset: Upsampled-grid position of output 0.
        delay: Group delay in output samples (an integer by construction).
        cutoff_hz: -6 dB point of the prototype filter, Hz.
        bank: float64 ``[up, taps]``, read-only; row ``p`` holds phase ``p``'s coefficients in
            time order, so output = ``bank[p] @ x[i - taps + 1 : i + 1]``.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    taps: int
    offset: int
    delay: int
    cutoff_hz: float
    bank: np.ndarray


def design_filter(
    in_rate: int,
    out_rate: int,
    *,
    passband: float = 0.85,
    stopband: float = 1.0,
    attenuation_db: float = 65.0,
) -> FilterDesign:
    """Designs the polyphase Kaiser-windowed sinc bank for a rate pair.

    Args:
        in_rate: Input sample rate, Hz (> 0).
        out_rate: Output sample rate, Hz (> 0, != ``in_rate``).
        passband: End of the flat band as a fraction of ``min(in_rate, out_rate) / 2``.
        stopband: Start of the stopband as a fraction of ``min(in_rate, out_rate) / 2``.
        attenuation_db: Kaiser design attenuation (and passband ripple ``10**(-A/20)``), dB.

    Returns:
        The read-only :class:`FilterDesign`, cached per argument set (designs are immutable, so
        every stream of a rate pair shares one bank).

    Raises:
        ValueError: A rate is not a positive integer or rates are equal, the band edges are not
            ``0 < passband < stopband <= 1.5`` with ``passband < 1``, ``attenuation_db`` is
            outside 21–150, or the filter would exceed 2**22 taps at the upsampled rate.
    """
    for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
        if not isinstance(rate, numbers.Integral) or isinstance(rate, bool) or rate <= 0:
            raise ValueError(f"{name} must be a positive integer in Hz, got {rate!r}")
    if in_rate == out_rate:
        raise ValueError(f"no filter needed for equal rates ({in_rate} Hz)")
    if not (0.0 < passband < stopband <= 1.5 and passband < 1.0):
        raise ValueError(f"need 0 < passband < stopband <= 1.5, got {passband}, {stopband}")
    if not 21.0 <= attenuation_db <= 150.0:
        raise ValueError(f"attenuation_db must be within 21..150, got {attenuation_db}")
    return _design(
        int(in_rate), int(out_rate), float(passband), float(stopband), float(attenuation_db)
    )


@functools.lru_cache(maxsize=64)
def _design(
    in_rate: int, out_rate: int, passband: float, stopband: float, attenuation_db: float
) -> FilterDesign:
    """:func:`design_filter` after validation (cached: the key must be validated values)."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    nyquist = min(in_rate, out_rate) / 2.0
    up_rate = float(in_rate * up)
    width = (stopband - passband) * nyquist / up_rate  # transition, cycles per upsampled sample
    cutoff = (passband + stopband) / 2.0 * nyquist / up_rate
    order = math.ceil((attenuation_db - 7.95) / (2.285 * 2.0 * math.pi * width))
    taps = max(2, -(-(order + 1) // up))
    length = taps * up if (taps * up) % 2 else taps * up - 1  # odd: integer centre
    if length > _MAX_PROTOTYPE:
        raise ValueError(f"{in_rate}->{out_rate} Hz needs {length} taps at {up_rate:.0f} Hz")
    beta = 0.1102 * (attenuation_db - 8.7) if attenuation_db > 50 else (
        0.5842 * (attenuation_db - 21.0) ** 0.4 + 0.07886 * (attenuation_db - 21.0)
    )
    centre = (length - 1) // 2
    t = np.arange(length, dtype=np.float64) - centre
    proto = np.zeros(taps * up)
    proto[:length] = np.sinc(2.0 * cutoff * t) * np.kaiser(length, beta)
    # bank[p, j] = proto[p + j * up] multiplies x[i - j]; store columns in time order instead.
    bank = proto.reshape(taps, up).T[:, ::-1]
    bank = bank / bank.sum(axis=1, keepdims=True)  # unit DC gain per phase (keeps symmetry)
    bank = np.ldexp(np.rint(np.ldexp(bank, _QUANT_BITS)), -_QUANT_BITS)
    bank = np.ascontiguousarray(bank)
    bank.setflags(write=False)
    offset = centre % down
    return FilterDesign(
        in_rate=in_rate,
        out_rate=out_rate,
        up=up,
        down=down,
        taps=taps,
        offset=offset,
        delay=(centre - offset) // down,
        cutoff_hz=cutoff * up_rate,
        bank=bank,
    )


class Resampler:
    """A streaming sample-rate converter for one mono stream.

    Feed chunks of any length (including 0 and 1 sample) to :meth:`process`; the output for
    any chunking equals the output for the whole signal at once (see the module docstring).
    Output ``n`` approximates the ideally resampled input at index ``n - delay``. Equal rates
    pass samples through (copied) with no delay.

    Cost: one dot product of :attr:`taps` samples per output sample, vectorised per call (no
    Python loop over samples; one matrix product over strided views of a float64 work buffer
    the stream keeps, ``up`` of them at most). Measured per 20 ms int16 chunk on one core of a
    shared 2-core VM (``benchmarks``): 8→16 kHz 16 µs, 16→8 kHz 14 µs, 8→24 kHz 18 µs,
    24→8 kHz 17 µs, 16→24 kHz 26 µs, 24→16 kHz 23 µs, 48→8 kHz 36 µs, 22.05→8 kHz ~70 µs.
    Many streams' chunks at once: :func:`gateway.codecs.batch.resample_many` (same results,
    3-4 times cheaper per stream from 100 streams).

    Args:
        in_rate: Input sample rate, Hz.
        out_rate: Output sample rate, Hz.
        passband: Keyword-only; see :func:`design_filter`.
        stopband: Keyword-only; see :func:`design_filter`.
        attenuation_db: Keyword-only; see :func:`design_filter`.

    Raises:
        ValueError: As :func:`design_filter` (equal rates are allowed here).
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        passband: float = 0.85,
        stopband: float = 1.0,
        attenuation_db: float = 65.0,
    ) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._design: FilterDesign | None = None
        if in_rate != out_rate:
            self._design = design_filter(
                in_rate,
                out_rate,
                passband=passband,
                stopband=stopband,
                attenuation_db=attenuation_db,
            )
        elif not isinstance(in_rate, numbers.Integral) or in_rate <= 0:
            raise ValueError(f"rates must be positive integers in Hz, got {in_rate!r}")
        # bank.T, contiguous: the upsampling path's one matrix product takes it as is.
        self._bank_t = None if self._design is None else np.ascontiguousarray(self._design.bank.T)
        self.reset()

    @property
    def delay(self) -> int:
        """Group delay in output samples (0 for equal rates)."""
        return 0 if self._design is None else self._design.delay

    @property
    def taps(self) -> int:
        """Input samples per output sample (0 for equal rates)."""
        return 0 if self._design is None else self._design.taps

    def reset(self) -> None:
        """Forgets all history, as at the start of a stream (e.g. on barge-in)."""
        d = self._design
        keep = 0 if d is None else d.taps - 1
        # One float64 work buffer per stream, reused by every call: the first ``keep`` entries
        # hold the history (the last ``taps - 1`` input samples), the chunk is written after it.
        self._keep = keep
        self._buf = np.zeros(keep + 160)  # grows to the largest chunk seen
        self._phase = 0 if d is None else d.offset  # next output's upsampled-grid position
        self._n_in = 0  # input samples since reset
        self._n_out = 0  # output samples since reset
        self._dtype: np.dtype | None = None

    @property
    def _history(self) -> np.ndarray:
        """The last ``taps - 1`` input samples (float64; zeros before any input)."""
        return self._buf[: self._keep]

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resamples the next chunk of the stream.

        Args:
            x: ``[n]`` samples, int16, float32 or float64 (one dtype per stream), any ``n``.

        Returns:
            The output samples that chunk completes, same dtype as ``x``: about
            ``n * out_rate / in_rate`` of them (exactly that count overall, minus
            :attr:`delay`, until :meth:`flush`). int16 output is rounded half to even and
            clipped.

        Raises:
            TypeError: Unsupported dtype, or a dtype other than the one this stream started with.
            ValueError: ``x`` is not 1-D.
        """
        x = self._checked(x)
        d = self._design
        n = x.shape[0]
        if d is None or n == 0:
            self._dtype = x.dtype
            if d is None:
                self._n_in += n
                self._n_out += n
                return x.copy()
            return np.zeros(0, dtype=x.dtype)
        count = self._count(n)
        buf = self._work(n)
        buf[self._keep :] = x  # converts to float64 in place
        y = self._compute(buf, count, d) if count else np.zeros(0)
        self._commit(buf[n:], n, count, x.dtype)
        return _to_dtype(y, x.dtype)

    # The steps of :meth:`process`, shared with :func:`gateway.codecs.batch.resample_many`,
    # which runs them for many streams with one matrix product in the middle.
    def _checked(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a 1-D array of a dtype this stream accepts; raises, and changes nothing.

        Raises:
            TypeError, ValueError: As :meth:`process`.
        """
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"expected 1-D samples, got shape {x.shape}")
        dtype = x.dtype
        if dtype is not self._dtype:
            if dtype not in _DTYPES:
                raise TypeError(f"expected int16, float32 or float64 samples, got {dtype}")
            if self._dtype is not None and dtype != self._dtype:
                raise TypeError(f"stream started as {self._dtype}, got {dtype}; call reset()")
        return x

    def _count(self, n: int) -> int:
        """Outputs that ``n`` more input samples complete (with a filter; ``n >= 0``)."""
        d = self._design
        return max(0, -(-(n * d.up - self._phase) // d.down))  # type: ignore[union-attr]

    def _work(self, n: int) -> np.ndarray:
        """The work buffer for an ``n``-sample chunk: float64 ``[keep + n]``, history first."""
        keep = self._keep
        total = keep + n
        if total > self._buf.shape[0]:
            grown = np.zeros(total)
            grown[:keep] = self._buf[:keep]
            self._buf = grown
        return self._buf[:total]

    def _commit(self, history: np.ndarray, n: int, count: int, dtype: np.dtype) -> None:
        """Ends a chunk of ``n`` inputs of ``dtype`` and ``count`` outputs; ``history`` is
        float64 ``[keep]``, the last ``keep`` samples of history + chunk (it may overlap the
        work buffer)."""
        d = self._design
        self._dtype = dtype
        self._buf[: self._keep] = history  # numpy copes with the overlap
        self._phase += count * d.down - n * d.up  # type: ignore[union-attr]
        self._n_in += n
        self._n_out += count

    def _compute(self, buf: np.ndarray, count: int, d: FilterDesign) -> np.ndarray:
        """Outputs ``0 .. count-1`` of this call from ``buf`` = history + chunk (float64).

        Every path is one or a few matrix products over strided views of ``buf`` (no copies):
        output ``t`` on the upsampled grid is ``bank[t % up] @ buf[t // up : t // up + taps]``.
        """
        up, down, taps, bank, t0 = d.up, d.down, d.taps, d.bank, self._phase
        item = buf.itemsize
        n_win = buf.shape[0] - taps + 1  # windows buf[i : i + taps], i = t // up
        if down == 1:  # pure upsampling: every phase at every window, one product, interleave
            windows = np.ndarray((n_win, taps), np.float64, buf, 0, (item, item))
            return np.dot(windows, self._bank_t).reshape(-1)[t0 : t0 + count]
        if up == 1:  # pure downsampling: windows step `down` inputs, one phase
            win = np.ndarray((count, taps), np.float64, buf, t0 * item, (down * item, item))
            return np.dot(win, bank[0])
        if up <= 8:  # outputs r, r+up, ... share a phase and step `down` inputs: strided matmul
            y = np.empty(count)
            for r in range(min(up, count)):
                i0, p = divmod(t0 + r * down, up)
                rows = (count - r + up - 1) // up
                win = np.ndarray((rows, taps), np.float64, buf, i0 * item, (down * item, item))
                y[r::up] = np.dot(win, bank[p])
            return y
        # General case (e.g. 22.05 kHz pairs): gather each output's window and phase row.
        windows = as_strided(buf, (n_win, taps), (item, item))
        y = np.empty(count)
        for start in range(0, count, _GATHER_BLOCK):
            t = t0 + np.arange(start, min(count, start + _GATHER_BLOCK), dtype=np.int64) * down
            i, p = np.divmod(t, up)
            y[start : start + t.shape[0]] = np.einsum("ij,ij->i", windows[i], bank[p])
        return y

    def flush(self) -> np.ndarray:
        """Drains the filter at end of stream, then resets.

        Returns:
            The remaining outputs, as if enough silence followed the input, so that the stream's
            total output is ``delay + ceil(n_in * out_rate / in_rate)`` samples; dtype of the
            stream (int16 if nothing was processed). Empty if no input since the last reset.
        """
        d, dtype = self._design, self._dtype or np.dtype(np.int16)
        if d is None or self._n_in == 0:
            self.reset()
            return np.zeros(0, dtype=dtype)
        total = -(-self._n_in * d.up // d.down) + d.delay
        needed = total - self._n_out
        last_input = ((total - 1) * d.down + d.offset) // d.up
        tail = self.process(np.zeros(max(0, last_input + 1 - self._n_in), dtype=dtype))
        self.reset()
        return tail[:needed]


def _to_dtype(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 outputs ``[...]`` as a new ``dtype`` array; int16 rounded half to even and
    clipped (``y`` is overwritten then; two passes, fastest on a contiguous ``y``)."""
    if dtype == np.int16:
        np.rint(y, out=y)
        out = np.empty(y.shape, dtype=np.int16)
        return np.clip(y, -32768.0, 32767.0, out=out, casting="unsafe")
    return y.astype(dtype)


def resample(
    x: np.ndarray,
    in_rate: int,
    out_rate: int,
    *,
    passband: float = 0.85,
    stopband: float = 1.0,
    attenuation_db: float = 65.0,
) -> np.ndarray:
    """Resamples a whole signal at once, compensating the filter delay.

    Args:
        x: ``[n]`` samples, int16, float32 or float64.
        in_rate: Input sample rate, Hz.
        out_rate: Output sample rate, Hz.
        passband: Keyword-only; see :func:`design_filter`.
        stopband: Keyword-only; see :func:`design_filter`.
        attenuation_db: Keyword-only; see :func:`design_filter`.

    Returns:
        ``[ceil(n * out_rate / in_rate)]`` samples, same dtype, time-aligned with ``x``
        (output ``m`` is at input time ``m * in_rate / out_rate``).

    Raises:
        TypeError, ValueError: As :meth:`Resampler.process` and :func:`design_filter`.
    """
    r = Resampler(
        in_rate, out_rate, passband=passband, stopband=stopband, attenuation_db=attenuation_db
    )
    y = np.concatenate((r.process(x), r.flush()))
    return y[r.delay :] if r.delay else y
