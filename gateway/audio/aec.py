"""Line/acoustic echo cancelling for one call, batched across calls: a numpy MDF.

The caller leg carries the agent's own audio back (a line hybrid, a speakerphone). This stage
subtracts an adaptive estimate of that echo, computed from the agent audio that played at the
carrier (the *reference*), so the VAD and the double-talk rule (:mod:`gateway.audio.doubletalk`)
hear the caller, not the agent.

Method: a partitioned-block frequency-domain adaptive filter (PBFDAF, the "multidelay block
frequency-domain" filter, MDF, of Speex's ``mdf.c``), overlap-save, in numpy; the update rules
and the batched kernels are in :mod:`gateway.audio.mdf`.

* Block ``B`` = ``block_ms`` (20 ms: 160 samples at 8 kHz, 320 at 16 kHz), FFT size ``2 B``;
  the filter spans ``K`` partitions of ``B`` taps: 260 ms (``tail_ms``) until the echo's delay
  is known (delays 40–200 ms plus a tail), then 60 ms (``short_tail_ms``) from 10 ms before
  the delay that :meth:`EchoCanceller.set_delay` is given (the
  :class:`~gateway.audio.echo.EchoPathEstimator`'s, published after ~1.9 s of agent audio):
  four times cheaper, faster to converge, less misadjustment; the taps learnt so far move over.
* Time is in samples on the call's own clock (as the estimator): the reference is written at
  the sample it played, the caller leg at the sample it was heard; the echo estimate of a
  caller block ``[t0, t0 + B)`` uses the reference ``[t0 - bulk - K B, t0 - bulk + B)``.
* The echo estimate of a block is computed when its first sample arrives, so every input
  sample's residual is returned at once (no added latency); the filter adapts when the block
  is complete. Two filters (Speex's two-path): the adaptive one, and the one subtracted, which
  takes the adaptive one's weights only when its error is significantly lower, so double talk
  cannot make the output diverge.
* Step size: Valin's (2007) per-bin ratio of the residual echo to the error power (the step
  falls while the caller talks). Pass-through: a block whose reference span holds no agent
  audio (every ``B``-cell below ``active_dbfs``) costs no FFT; the weights wait for the next turn.

Outputs per caller chunk (:class:`AecOut`): the residual, the echo subtracted, ``leak``
(residual echo ≈ ``leak · echo²``) and the reference level, for the double-talk rule.
Batching: :func:`cancel_many` runs many calls in one pass (per geometry every call's state is
a row of one pool: a gather, array operations, one FFT over ``(calls, 2 B)``, a scatter);
:meth:`EchoCanceller.process` is the same code with one call, same output (tested);
:func:`cancel_batch` is the same with whole blocks' outputs left as arrays (what the echo stage
hands to the double-talk gate's batched feed).

Why this one (``benchmarks/aec_choice.py``, 18 generated calls: agent speech −20 dBFS from
``../shared/audio/speech``, delays 40/120/200 ms, flat or 20 ms dispersive paths, ERL
12/25/35 dB, line noise −55…−45 dBFS, μ-law, a second voice over the agent at −25 dBFS from 6
to 9 s; ours with the echo path estimator's delay as the session wires it). ERLE (dB) over the
agent's first 3 s / after convergence (3.5–6 s) per ERL, then after the double talk; the
caller's signal-to-distortion ratio during it (dB) and its level change; CPU µs per call per
20 ms frame (shared 2-core box, heavily loaded by other work while measured: load 4–6):

==========================  ===========  ===========  ===========  =======  =====  ======  ========  =========
canceller                   ERL 12 dB    ERL 25 dB    ERL 35 dB    after    DT     DT      µs, 1     µs, 100
                            first/conv   first/conv   first/conv   DT       SDR    level   call      calls
==========================  ===========  ===========  ===========  =======  =====  ======  ========  =========
numpy MDF (this), 60 ms     6.7 / 20.7   4.0 / 11.2   −0.4 / 3.0   10.9     28.9   0.0     250–475   28–52
numpy MDF, 260 ms (no delay)                                                              274–633   62–104
speexdsp 1.2.1 (ctypes)     7.1 / 15.9   2.3 / 3.8    −5.5 / −5.0  4.5      2.0    −1.6    30        45–47
WebRTC AEC3 (livekit 1.2)   18.9 / 17.5  4.8 / −1.1   −9.3 / −10   −0.2     −2.4   −1.5    151–167   226–256
WebRTC (aec-audio-proc.)    18.8 / 17.4  4.8 / −1.2   −9.4 / −10   −0.4     −2.4   −1.4    140–176   187–199
==========================  ===========  ===========  ===========  =======  =====  ======  ========  =========

(ERLE counts everything the output adds beyond the caller and the line: WebRTC's suppressor
and comfort noise and speexdsp's DC notch reshape the line noise and the caller, hence their
negative figures on weak echo and in double talk.) WebRTC converges fastest on a strong echo
but suppresses the caller in double talk, which is exactly what a barge-in detector must hear;
speexdsp is cheapest but distorts the caller too and removes little of a weak echo. Ours keeps
the caller intact (28.9 dB SDR, 0.0 dB level), removes the most after convergence, needs no
new dependency, and is the only one that batches. (Those costs are this module's alone, measured
then; with the scratch arrays and complex64 spectra, run beside the code before them on the box
loaded to 5: 60 ms filter 276 → 281 µs for a lone call, 35.4 → 32.9 at 100 calls; 260 ms 317 →
322 and 89.2 → 75.0; every quality figure above the same to 0.1 dB.) The whole echo stage as ``gateway bench media`` runs it (:mod:`benchmarks.media_echo`:
reference writes, estimator, canceller, gate, bookkeeping), steady state with the 60 ms filter,
beside the code before the batched gate, the fused ``step`` (:mod:`gateway.audio.mdf_step`) and the
estimator's duty cycle, interleaved in one process (medians of 4–6 runs each on the shared
2-core box, 2026-12-02): 100 calls 78 → 41 µs per call per frame, 400 calls 106 → 54, a lone
call 336 → 239; the canceller is about half of it (per row nine 320-point transforms and a few
dozen array operations over its spectra). A call's first ~2 s (the 260 ms filter) 145 → 89 µs
at 100 calls; idle calls (no agent audio) about 1 µs. The issue's target is 30. Then the
kernels' scratch arrays (:mod:`gateway.audio.mdf_step`: reused, ``out=`` throughout, the
reference history a ring), complex64 spectra and fewer Python calls per call, beside the code
before them, alternated 3 times each in one run (medians; the shared 2-core box loaded to
4.4–4.8 by other work, 2026-12-02, so every figure reads high): steady 100 calls 55.2 → 50.9
µs, 400 calls 62.8 → 57.3; the first 2 s 115 → 101 and 124 → 104; a lone call 340–420 →
310–380 (noisy); idle calls still about 1 µs. Where a steady call's µs go (100 calls, same
load): the kernel call about 28 (nine 320-point transforms per row, about 120 numpy calls per
batch, the state and scratch arrays of a batch of 50 past a core's L2), the echo path
estimator 6–8, the reference writes 4–5, the double-talk gate's feed 4–5, the rest the
per-call bookkeeping of the stage, the canceller and the batching.
See :data:`gateway.audio.aec_batch.BATCH_BINS` for the batch size.

Sources: J.-M. Valin, "On adjusting the learning rate in frequency domain echo cancellation
with double-talk", IEEE Trans. ASLP 15(3), 2007; J.-S. Soo, K. K. Pang, "Multidelay block
frequency domain adaptive filter", IEEE Trans. ASSP 38(2), 1990; Speex ``libspeexdsp/mdf.c``
(the step-size rules, the two-path logic and their constants); ITU-T G.168 (2015) for ERLE.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from gateway.audio import aec_batch, mdf
from gateway.audio.echo import _Ring
from gateway.audio.mdf import AecOut, Blocks

__all__ = ["AecOut", "Blocks", "EchoCanceller", "cancel_batch", "cancel_many"]



#: Blocks of adaptation (20 ms each, agent audio active) an unsettled canceller waits, beyond its
#: start-of-call qualification, before the double-talk rule trusts its leak again
#: (:meth:`EchoCanceller.unsettle`): about 1 s.
UNSETTLE_BLOCKS = 50

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
        short_tail_ms: the filter's span once :meth:`set_delay` gave the echo's delay, ms.
        pre_ms: how far before that delay the short filter starts, ms.
        ring: the reference ring to read, shared with its writer (the call's
            :class:`~gateway.audio.echo.EchoPathEstimator`'s, which holds the same samples):
            the writer writes it first and :meth:`reference` then skips the write (one ring
            write per message instead of two); :meth:`truncate_reference` truncates it (call it
            before the writer's own truncation, which then has nothing left to do) and
            :meth:`reset` leaves it to its writer. ``None``: a ring of its own.

    Raises:
        ValueError: a sample rate, tail or block that is not positive, or a block that is not
            a whole number of samples; a shared ring shorter than this canceller needs.
    """

    def __init__(self, sample_rate: int = 8000, *, tail_ms: float = 260.0, block_ms: float = 20.0,
                 bulk_delay_ms: float = 0.0, active_dbfs: float = -66.0, short_tail_ms: float = 60.0,
                 pre_ms: float = 10.0, ring: _Ring | None = None) -> None:
        b = block_ms * sample_rate / 1000
        if sample_rate <= 0 or tail_ms <= 0 or b < 8 or b != int(b) or bulk_delay_ms < 0:
            raise ValueError(f"bad echo canceller geometry: rate {sample_rate}, tail {tail_ms} ms, "
                             f"block {block_ms} ms, bulk delay {bulk_delay_ms} ms")
        self.sample_rate = sample_rate
        self.block = int(b)
        self.partitions = max(1, int(np.ceil(tail_ms * sample_rate / 1000 / self.block)))
        self.bulk = int(round(bulk_delay_ms * sample_rate / 1000))
        self._long = (self.bulk, self.partitions)
        self._short_k = max(1, int(np.ceil(short_tail_ms * sample_rate / 1000 / self.block)))
        self._pre = int(round(pre_ms * sample_rate / 1000))
        self._active_e = (32768.0 * 10 ** (active_dbfs / 20)) ** 2 * self.block
        span = (self.partitions + 1) * self.block + self.bulk
        cap = 1 << int(np.ceil(np.log2(max(4 * sample_rate, 2 * span))))
        self._max_bulk = cap // 2 - (max(self.partitions, self._short_k) + 1) * self.block
        if ring is not None and ring.capacity < cap:
            raise ValueError(f"a shared reference ring of {ring.capacity} samples is shorter than {cap}")
        self._shared = ring is not None  # the owner writes and truncates the ring (reference_written)
        self._ref = ring if ring is not None else _Ring(cap, dtype=np.int16)
        self._cells = np.zeros(cap // self.block)  # reference energy per absolute B-cell
        self._pool: mdf.Pool | None = None
        self.reset()

    @property
    def key(self) -> tuple[int, int, int]:
        """Stages with the same key are batched together: (rate, block, partitions)."""
        return (self.sample_rate, self.block, self.partitions)

    @property
    def W(self) -> np.ndarray:
        """The filter's spectra, complex ``[K, B + 1]`` (a view of the pool's row)."""
        return self._pool.W[self._slot]

    @property
    def leak(self) -> float:
        """The residual echo's estimated share of the echo estimate's power (1 before
        adaptation)."""
        return float(self._pool.V[self._slot, mdf.LEAK])

    @property
    def adapted(self) -> bool:
        """Whether the filter has passed its initial adaptation."""
        return bool(self._pool.V[self._slot, mdf.ADAPTED])

    def unsettle(self) -> None:
        """The echo path may have moved (the agent audio resumed after a gap inside a run of it:
        the carrier ran dry and starts again on its own frame clock, up to a frame later than
        the ledger says): the filter counts as not adapted again, so the double-talk rule falls
        back on its prior until it is; the weights are kept (if the path did not move, they
        still cancel). It re-qualifies only after about :data:`UNSETTLE_BLOCKS` more blocks of
        adaptation than at the call's start (Speex's ``sum_adapt`` gains at most 0.25 a block):
        the first blocks after the move re-converge the filter, and its leak estimate lags."""
        v = self._pool.V[self._slot]
        v[mdf.ADAPTED] = 0.0
        v[mdf.SUM_ADAPT] = -0.25 * UNSETTLE_BLOCKS
        v[mdf.LEAK] = 1.0

    def _place(self, bulk: int, k: int) -> None:
        """Moves this canceller's state to the pool of ``k`` partitions (a fresh slot)."""
        old = (self._pool, self._slot) if self._pool is not None else None
        self._pool = mdf.pool(self.sample_rate, self.block, k)
        self._slot = self._pool.take()
        if old is not None:
            self._fin.detach()
            p, s = old
            self._pool.S[self._slot], self._pool.V[self._slot] = p.S[s], p.V[s]
            self._pool.D[self._slot] = p.D[s]
            p.give(s)
        self._fin = weakref.finalize(self, self._pool.give, self._slot)
        self.bulk, self.partitions = bulk, k

    def reset(self) -> None:
        """Forgets the reference, the filter and every average (a new call)."""
        bulk, k = self._long
        if self._pool is None or self.partitions != k:
            self._place(bulk, k)
        self.bulk = bulk
        self._pool.clear(self._slot)
        if not self._shared:  # a shared ring is its writer's to reset
            self._ref.end = 0
        self._cells[:] = 0.0
        self._last_on = -1  # the last cell index (absolute) with active reference
        self._xt: int | None = None  # the block start whose reference spectrum is X[0]
        self._refp = 0.0  # the loudest reference cell's mean square in the current block's span
        self._t0 = 0  # start of the block in progress
        self._fill = 0  # samples of the block in progress received
        self._on = False  # the block in progress has an echo estimate (else: passed through)
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
        if not self._shared:  # (a shared ring: its writer wrote it already)
            self._ref.write(x, at_sample)
        b = self.block
        if at_sample % b == 0 and x.size == b and at_sample >= 0:  # one whole cell (the usual frame)
            f = x.astype(np.float64)
            e = float(np.dot(f, f))
            i = at_sample // b
            self._cells[i % self._cells.size] = e
            if e > self._active_e and i > self._last_on:
                self._last_on = i
        elif at_sample % b == 0 and x.size % b == 0 and at_sample >= 0:  # whole cells: from x itself
            f = x.reshape(-1, b).astype(np.float64)
            self._set_cells(at_sample // b, np.einsum("ij,ij->i", f, f))
        else:
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
            b, n = self.block, self._cells.size
            lo = max(0, self._last_on - n + 1)
            on = np.nonzero(self._cells[np.arange(lo, self._last_on + 1) % n] > self._active_e)[0]
            self._last_on = int(lo + on[-1]) if on.size else -1

    def set_delay(self, delay_ms: float | None) -> None:
        """The echo path's delay, when known (:attr:`EchoPathEstimator.estimate`'s
        ``delay_ms``): the filter narrows to ``short_tail_ms`` from ``pre_ms`` before it (four
        times cheaper, and it converges faster with less misadjustment); ``None`` widens it
        back. The weights learnt so far move with it (the taps both spans cover are kept); if a
        move between two short spans keeps less than half the filter's energy (the echo path
        changed), the filter counts as not adapted again, so the double-talk rule falls back on
        its prior until it is.

        Args:
            delay_ms: echo delay, ms, or ``None``.
        """
        if delay_ms is None:
            bulk, k = self._long
        else:
            bulk = int(round(delay_ms * self.sample_rate / 1000)) - self._pre
            bulk, k = min(max(bulk, 0), self._max_bulk), self._short_k
        if (bulk, k) == (self.bulk, self.partitions):
            return
        fg = self._pool.F[self._slot]
        before = float(np.vdot(fg, fg).real)
        moved = [self._moved(a, bulk, k) for a in (self.W, fg)]
        after = float(np.vdot(moved[1], moved[1]).real)  # the taps' energy, both spans alike
        # narrowing from the full span keeps the echo by construction (its other taps are
        # misadjustment); between short spans, less than half the energy kept = the path moved
        adapted = self.adapted and (self.partitions == self._long[1] or after >= 0.5 * before)
        self._place(bulk, k)
        self.W[:], self._pool.F[self._slot] = moved
        if not adapted:  # the echo moved out of the span: the double-talk rule falls back on its prior
            self._pool.V[self._slot, [mdf.ADAPTED, mdf.SUM_ADAPT]] = 0.0
            self._pool.V[self._slot, mdf.LEAK] = 1.0
        self._pool.P[self._slot] = mdf.proportions(self.W[None])[0] if adapted else 0.99 / k
        self._xt = None  # the spectra history is recomputed at the next block
        self._on = False  # the block in progress was estimated with the old span: not adapted on

    def _moved(self, spectra: np.ndarray, bulk: int, k: int) -> np.ndarray:
        """A filter's spectra ``[K, B + 1]`` re-cut to ``k`` partitions from lag ``bulk`` (taps
        both spans cover are kept, others are zero)."""
        b = self.block
        taps = np.fft.irfft(spectra, n=2 * b, axis=1)[:, :b].reshape(-1)  # lags bulk .. bulk + K B
        new = np.zeros(k * b)
        lo, hi = max(bulk, self.bulk), min(bulk + k * b, self.bulk + taps.size)
        if hi > lo:
            new[lo - bulk:hi - bulk] = taps[lo - self.bulk:hi - self.bulk]
        pad = np.zeros((k, 2 * b))
        pad[:, :b] = new.reshape(k, b)
        return np.fft.rfft(pad, axis=1)

    def _recell(self, start: int, stop: int) -> None:
        """Recomputes the reference energy of every ``B``-cell touching ``[start, stop)``."""
        b = self.block
        lo = max(start // b, (self._ref.end - self._ref.capacity) // b + 1, 0)
        hi = -(-stop // b)
        if hi > lo:
            seg = self._ref.read(lo * b, hi * b).reshape(-1, b)
            self._set_cells(lo, np.einsum("ij,ij->i", seg, seg))

    def _set_cells(self, first: int, energies: np.ndarray) -> None:
        """Stores the energies of cells ``first, first + 1, …`` and tracks the last active one."""
        n = self._cells.size
        i = first % n
        k = min(energies.size, n - i)
        self._cells[i:i + k] = energies[:k]
        self._cells[:energies.size - k] = energies[k:]
        on = np.nonzero(energies > self._active_e)[0]
        if on.size:
            self._last_on = max(self._last_on, first + int(on[-1]))

    def _active(self, t0: int) -> bool:
        """Whether any reference cell in the filter's span for the block at ``t0`` is active
        (the loudest cell's mean square goes to ``_refp``)."""
        b, n = self.block, self._cells.size
        lo = (t0 - self.bulk) // b - self.partitions
        hi = -(-(t0 + b - self.bulk) // b)
        lo = max(lo, hi - n, 0)
        self._refp = 0.0
        if hi <= lo or self._last_on < lo:
            return False
        i, j = lo % n, hi % n  # (a few cells: Python's max of a list beats numpy's reduction here)
        c = self._cells
        top = max(c[i:j].tolist()) if i < j else max(c[i:].tolist() + c[:j].tolist())
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



_I16 = np.dtype(np.int16)


def _int16(pcm: np.ndarray, what: str) -> np.ndarray:
    """``pcm`` as a 1-D int16 array; anything else is a caller bug."""
    if type(pcm) is np.ndarray and pcm.dtype is _I16 and pcm.ndim == 1:  # the usual frame, as it is
        return pcm
    a = np.asarray(pcm)
    if a.dtype != np.int16:
        raise TypeError(f"{what} audio must be int16 PCM, not {a.dtype}")
    return a.reshape(-1)


def cancel_many(stages: Sequence[EchoCanceller], pcms: Sequence[np.ndarray],
                at_samples: Sequence[int]) -> list[AecOut]:
    """Runs many calls' caller-leg chunks through their cancellers in one pass.

    Stages with the same :attr:`EchoCanceller.key` share every FFT and array operation (their
    state lives in one pool); the output of each equals its own :meth:`EchoCanceller.process`.

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
    batches, outs = cancel_batch(stages, pcms, at_samples)
    for blocks in batches:
        for j, i in enumerate(blocks.rows):
            outs[i] = blocks.out(j)
    return outs  # type: ignore[return-value]


def cancel_batch(stages: Sequence[EchoCanceller], pcms: Sequence[np.ndarray],
                 at_samples: Sequence[int]) -> tuple[list[Blocks], list[AecOut | None]]:
    """:func:`cancel_many` with the outputs of the chunks that were each exactly their next
    block left as arrays (a :class:`~gateway.audio.mdf.Blocks` per block length; their places in
    the list are ``None``): what a batched consumer (the double-talk gate's
    :func:`~gateway.audio.doubletalk.feed_blocks`) takes without a Python object per call. Same
    arguments and errors as :func:`cancel_many`."""
    if not len(stages) == len(pcms) == len(at_samples):
        raise ValueError("stages, pcms and at_samples must have the same length")
    if len({id(s) for s in stages}) != len(stages):
        raise ValueError("a stage is listed twice")
    xs = [_int16(p, "caller") for p in pcms]  # (all checked before any state moves)
    by_block: dict[int, list[int]] = {}  # chunks that are their stage's next whole block, per block length
    rest: list[int] = []
    for i, (st, x, at) in enumerate(zip(stages, xs, at_samples)):  # each stage on its own state
        if st._next is not None and at != st._next:
            st._fill, st._on = 0, False  # a gap: drop the unfinished block
        if x.size:
            st._next = at + x.size
        if x.size == st.block and st._fill == 0:  # the usual case: one 20 ms frame is one block
            by_block.setdefault(st.block, []).append(i)
        else:
            rest.append(i)
    outs: list[AecOut | None] = [None] * len(stages)
    batches = [aec_batch.whole(stages, xs, at_samples, idx) for idx in by_block.values()]
    if rest:
        aec_batch.pieces(stages, xs, at_samples, rest, outs)
    return batches, outs
