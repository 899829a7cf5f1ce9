"""One call's echo stage: the played agent audio as the echo reference, the caller leg on the same
sample clock, the echo canceller and double-talk rule in front of the VAD, the echo path
estimate for the record.

The gateway knows which agent audio played and when (the playout ledger's play times); the
caller leg carries it back as residual echo. :class:`EchoStage` puts both legs on one sample
clock counted from the call's start (samples at the carrier's rate) and feeds the
:class:`~gateway.audio.echo.EchoPathEstimator` and the
:class:`~gateway.audio.aec.EchoCanceller`:

- **reference** (:meth:`EchoStage.reference`): each agent message as it leaves
  :meth:`gateway.session.playout.Playout.pump`, decoded, at its play position
  (``play_at_ms × rate / 1000``); a barge-in ``clear`` truncates it at the clear time
  (:meth:`EchoStage.truncate`: audio dropped at the carrier never played, so never echoes);
- **caller leg** (:func:`process_many`): inbound frames are contiguous audio, but their
  arrival times jitter (tens of ms; a tick joins several). Each block's position is therefore
  counted in samples from an anchor, the first block's arrival (its *end* arrived then), by
  :class:`CallerClock`, re-anchored only when the count drifts from the arrivals by more than a
  bound (lost frames, a late first frame, a carrier clock that runs fast or slow); frames the
  call refuses (the audio budget) move it by their samples at once (:meth:`EchoStage.refused`).
  A constant offset between the two legs (network, carrier buffering) is absorbed by the estimator as
  echo delay and by the canceller's filter span.
- **canceller** (``cancel``, ``GATEWAY_ECHO_CANCEL=on``): near agent audio (from the first
  sample of a run of agent audio to the echo tail after its last:
  :meth:`EchoStage.near_reference`) the caller leg goes through the call's canceller in pieces
  on its 20 ms block grid (counted in caller samples from the first, restarted where the clock
  re-anchors; a block is near, and worked on, whole or not at all), one
  :func:`~gateway.audio.aec.cancel_many` per round of pieces for every call of the tick; a new
  echo-delay estimate reaches the canceller between two of its blocks; elsewhere it is passed
  through untouched (the canceller would pass it through too: no agent audio in its span). The VAD scores what comes out: the **residual**. Agent
  audio is near for barge-in and for the gateway's own turns alike, and in the echo tail after
  the agent stops (where barge mode is already off but the echo still arrives).
- **double-talk rule**: every piece's canceller output goes to the call's
  :class:`~gateway.audio.doubletalk.DoubleTalkGate` at its position on the *VAD's* own sample
  count; the call's VAD runner asks :meth:`EchoStage.allows` about each chunk it scores
  (:meth:`gateway.vadrun._Runner.apply`): a chunk with agent audio in its span counts as
  speech only if its residual stands above the predicted echo left by the gate's margin.
  Pieces, grid and chunk spans are all counted in samples, so no decision depends on how
  frames were joined into ticks or ticks into batches.

**What keeps the caller's original audio**: the recording and the model. The recording is the
record of what the line carried (echo included, as the caller's side heard and sent it). The
model hears the caller leg as it came because a realtime model does its own turn detection
and echo handling on its input (OpenAI's and Gemini's server VADs, a local recogniser), tuned
on natural audio: the canceller's residual is shaped for a VAD (artefacts while it adapts, the
caller's speech removed with the echo where they overlap and the filter misadapts), which
would cost recognition more than the echo it removes; our canceller only decides what our
VAD — barge-in and the gateway's turns — hears.

Cost while the agent is silent and past its echo tail: the estimator, the canceller and the
gate are skipped (the VAD's chunks there have no agent audio in their span: the rule allows
them); what is left is the sample clock (see ``gateway bench media``'s echo rows).

Pure numpy, no I/O, synchronous (rule 4 of the architecture); one instance per call, used from
the call's own tasks (the playout and the caller path) and the media engine's tick.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gateway.audio.aec import EchoCanceller, cancel_batch
from gateway.audio.doubletalk import DoubleTalkGate, feed_blocks
from gateway.audio.echo import EchoEstimate, EchoPathEstimator, to_metrics
from gateway.engine.echo_clock import CallerClock

if TYPE_CHECKING:
    from gateway.engine.lane import Lane, TickResult
    from gateway.formats import AudioFormat

__all__ = ["CallerClock", "EchoStage", "ECHO_RATES", "echo_many", "process_many"]

log = logging.getLogger("gateway.echo")

#: Carrier rates the echo stage runs at (Hz): those where the VAD runs at the carrier's rate too
#: (:meth:`gateway.vadrun.VadFactory.rate_for`), so the caller leg it sees is the VAD's input.
ECHO_RATES = (8000, 16000)
#: Once the echo path estimator has published an estimate, it analyses one active block in this
#: many (:class:`~gateway.audio.echo.EchoPathEstimator`'s ``duty_every``): every 5 s of agent
#: audio at 8 kHz, when it recomputes the estimate anyway (its ``update_every`` divides it). The
#: estimator's share of the stage, 100 calls over the agent's 3rd to 13th second: 5.5 µs per
#: call per frame at 4 (every 2.5 s), 3.9 at 8; half of it the return-loss fits.
ESTIMATOR_DUTY = 8
#: How far above the noise floor a barge-in cue's chunk must be (dB; :meth:`EchoStage.cue_allows`):
#: the double-talk rule's own noise margin, applied where it has no agent audio to judge too.
CUE_FLOOR_DB = 6.0


class EchoStage:
    """One call's echo reference, caller-leg clock, canceller, double-talk rule and echo path
    estimate (see the module).

    Args:
        sample_rate: the carrier's rate, one of :data:`ECHO_RATES` (Hz); the VAD's too.
        cancel: run the canceller and the double-talk rule in front of the VAD
            (``GATEWAY_ECHO_CANCEL=on``); ``False``: estimate only, the VAD hears the caller
            leg as it came.
        max_delay_ms: the largest echo delay searched (ms; the echo tail after the last agent
            audio during which the caller leg is still analysed).

    Raises:
        ValueError: a rate not in :data:`ECHO_RATES`.

    Attributes:
        estimator: the call's :class:`~gateway.audio.echo.EchoPathEstimator`.
        clock: the caller leg's :class:`CallerClock`.
        canceller: the call's :class:`~gateway.audio.aec.EchoCanceller` (``None`` with
            ``cancel=False``).
        gate: the call's :class:`~gateway.audio.doubletalk.DoubleTalkGate` (or ``None``).
        cancelled_samples: caller samples that went through the canceller with agent audio in
            their span. ``vetoed_chunks``: VAD chunks the double-talk rule kept from counting as
            speech. ``failures``: ticks whose echo work raised (a bug; the VAD heard the raw leg).
    """

    __slots__ = ("rate", "estimator", "clock", "canceller", "gate", "_tail", "_est_block", "_ref_end", "_burst",
                 "_first", "_vad_pos", "_grid", "_anchors", "_gaps", "_hint", "_pending", "_block", "_erle", "_sampled",
                 "cancelled_samples", "vetoed_chunks", "failures")  # fmt: skip

    def __init__(self, sample_rate: int, *, cancel: bool = True, max_delay_ms: float = 400.0) -> None:
        if sample_rate not in ECHO_RATES:
            raise ValueError(f"the echo stage runs at {ECHO_RATES} Hz, not {sample_rate!r}")
        self.rate = sample_rate
        self.estimator = EchoPathEstimator(sample_rate, max_delay_ms=max_delay_ms, duty_every=ESTIMATOR_DUTY)
        self.clock = CallerClock(sample_rate)
        # the canceller reads the estimator's reference ring (the same samples: one write per message)
        self.canceller = EchoCanceller(sample_rate, ring=self.estimator._ref) if cancel else None
        self.gate = DoubleTalkGate(sample_rate) if cancel else None
        est = self.estimator
        self._est_block = est._b  # the estimator's block: its grid is on multiples of it
        self._tail = est._d + est._b
        self._ref_end: int | None = None  # one past the last reference sample (as played)
        self._burst = 0  # first sample of the current run of agent audio
        self._first: int | None = None  # first reference sample of the call
        self._vad_pos = 0  # caller samples handed to the VAD so far (the gate's and the VAD's count)
        self._grid = 0  # the VAD count at which the canceller's block grid starts
        self._anchors = 0  # the clock's re-anchors seen
        self._gaps = 0  # the clock's moves by refused frames seen
        self._hint: EchoEstimate | None = None  # the estimator's estimate last seen
        # a new estimate waiting for the canceller's next block: (estimate, first sample it applies from)
        self._pending: tuple[EchoEstimate | None, int] | None = None
        self._block = self.canceller.block if self.canceller is not None else 0
        self._sampled = 0  # pieces with agent audio seen (ERLE is measured on every 4th)
        self._erle = [0.0, 0.0]  # caller-leg and residual energy over echo-only pieces
        self.cancelled_samples = 0
        self.vetoed_chunks = 0
        self.failures = 0

    # ------------------------------------------------------------------ agent side
    def reference(self, pcm: np.ndarray, at_sample: int) -> None:
        """Agent audio as it plays: int16 ``[n]`` at :attr:`rate`, first sample at timeline index
        ``at_sample`` (the ledger's play time × rate / 1000)."""
        n = int(pcm.size)
        if n == 0:
            return
        if self._ref_end is None or at_sample > self._ref_end + self._tail:
            self._burst = at_sample  # a new run of agent audio after the echo tail of the last
        elif at_sample > self._ref_end and self.canceller is not None:
            self.canceller.unsettle()  # a gap inside the run: where the carrier resumed is a guess
        if self._first is None:
            self._first = at_sample
        self._ref_end = max(self._ref_end or 0, at_sample + n)
        self.estimator.reference(pcm, at_sample)  # (it writes the ring the canceller reads)
        if self.canceller is not None:
            self.canceller.reference(pcm, at_sample)

    def truncate(self, at_sample: int) -> None:
        """A ``clear`` dropped the carrier's buffer: agent audio from ``at_sample`` on never played."""
        if self._ref_end is not None and at_sample < self._ref_end:
            self._ref_end = max(at_sample, self._burst)
            if self.canceller is not None:  # first: it truncates the shared ring, seeing its old end
                self.canceller.truncate_reference(at_sample)
            self.estimator.truncate_reference(at_sample)

    @property
    def played(self) -> bool:
        """Whether any agent audio played (was given and not all truncated before it played)."""
        return self._first is not None and self._ref_end is not None and self._ref_end > self._first

    # ------------------------------------------------------------------ caller side
    def near_reference(self, start: int, n: int) -> bool:
        """Whether caller samples ``[start, start + n)`` may carry agent audio's echo: from the
        first sample of a run of agent audio to the echo tail after its last.

        Never earlier than the run's first sample: that sample's reference is written when its
        message is sent, at the latest when it starts to play, and a caller sample at or after
        that position arrives later still, so whether a caller sample is worked on never depends
        on when a tick ran (the caller leg before it reads as silence to the estimator)."""
        end = self._ref_end
        return end is not None and start + n > self._burst and start < end + self._tail

    def caller(self, pcm: np.ndarray, arrival_ms: float) -> np.ndarray:
        """One block of the caller leg (int16 ``[n]`` at :attr:`rate`, its end arrived at
        ``arrival_ms``, ms from the call's start); returns what the VAD scores (int16 ``[n]``:
        the residual, or ``pcm`` itself). ``process_many([self], [pcm], [arrival_ms])[0]``."""
        try:
            return process_many([self], [pcm], [arrival_ms])[0]
        except Exception:  # noqa: BLE001 - echo handling is a refinement: the VAD hears the raw leg
            log.exception("echo stage failed; the VAD hears the raw caller leg for this frame")
            self.failures += 1
            return pcm

    def refused(self, n_bytes: int, queued_bytes: int, fmt: AudioFormat) -> None:
        """A caller frame of ``n_bytes`` (in ``fmt``, the carrier's format at :attr:`rate`) was
        refused and dropped after ``queued_bytes`` admitted but not yet processed (a tick's
        queue; 0 when frames are processed as they come): the caller clock skips its samples
        (:meth:`CallerClock.skip`), so the leg stays on real time against the reference."""
        self.clock.skip(fmt.samples_for_bytes(n_bytes), fmt.samples_for_bytes(queued_bytes))

    def analyse(self, pcm: np.ndarray, start: int) -> None:
        """The estimator's share of a caller block placed at ``start``: exactly its samples
        near agent audio (:meth:`near_reference`; the rest reads as silence). Its first block
        starts on a multiple of its block length, so its block grid, and so its estimate, never
        depends on how the caller leg was split into frames or ticks. A new estimate goes to the
        canceller (:meth:`~gateway.audio.aec.EchoCanceller.set_delay`: its filter narrows around
        the delay) and to the gate (its return loss, used before the canceller has adapted) at
        the first canceller block that starts at or after the end of the estimator block that
        produced it (:meth:`_apply_pending`), never in the middle of one."""
        end = self._ref_end
        if end is None:
            return
        n = int(pcm.size)
        lo, hi = max(start, self._burst), min(start + n, end + self._tail)
        if hi <= lo:
            return
        if lo != start or hi != start + n:
            pcm, start = pcm[lo - start : hi - start], lo  # exactly the samples near agent audio
        est = self.estimator
        if est._next is None:  # its grid from the multiple of its block at or before the start
            pad = start % self._est_block
            pcm, start = np.concatenate((np.zeros(pad, np.int16), pcm)), start - pad
        est.caller(pcm, start)
        found = est._last  # (its estimate)
        if found is not self._hint:  # a new estimate: the canceller narrows to its delay ...
            self._hint = found
            if self.gate is not None and self.canceller is not None:  # ... at its next block
                self._pending = (found, int(est._next))  # est._next: the end of the block that made it

    def _apply_pending(self, at: int, fresh: bool) -> None:
        """Hands a new estimate (:meth:`analyse`) to the canceller and the gate when a canceller
        block starts at timeline index ``at`` (``fresh``: a block starts there) at or after the
        estimator block that produced it: the filter changes between two of its blocks, at the
        same sample however the caller leg was split into frames and pieces."""
        pending = self._pending
        if pending is None or not fresh or at < pending[1]:
            return
        found, self._pending = pending[0], None
        self.gate.set_erl(found.erl_db if found is not None else None)  # type: ignore[union-attr]
        self.canceller.set_delay(found.delay_ms if found is not None else None)  # type: ignore[union-attr]

    def allows(self, start: int, stop: int) -> bool:
        """The double-talk rule on VAD samples ``[start, stop)`` (counted as the VAD counts them):
        may that chunk count as caller speech? Always with ``cancel=False``."""
        if self.gate is None or self.gate.allows(start, stop):
            return True
        self.vetoed_chunks += 1
        return False

    def cue_allows(self, start: int, stop: int) -> bool:
        """The stricter rule for a barge-in cue's chunk (:class:`gateway.vadrun.VadCue`): the
        double-talk rule, and the residual :data:`CUE_FLOOR_DB` above the noise floor even where
        no agent audio is predicted (the echo's tail, a gap between words: there the rule
        alone allows anything, and a cue detector calls the line's noise speech)."""
        if self.gate is None:
            return True
        d = self.gate.decide(start, stop)
        return d.allowed and d.residual_dbfs >= d.floor_dbfs + CUE_FLOOR_DB

    def bind(self, vad: object) -> None:
        """Give ``vad`` (a :class:`gateway.vadrun._Runner`) this stage's double-talk rule (and
        the stricter one for barge-in cues)."""
        if self.gate is not None and hasattr(vad, "echo_gate"):
            vad.echo_gate = self.allows  # type: ignore[attr-defined]
            vad.cue_gate = self.cue_allows  # type: ignore[attr-defined]

    def _pieces(self, start: int, n: int) -> list[tuple[int, int]]:
        """``(offset, length)`` of the pieces of a block of ``n`` samples placed at ``start``, cut
        on the canceller's block grid (restarted where the clock re-anchored: :func:`process_many`)."""
        b = self._block
        if n == b and (self._vad_pos - self._grid) % b == 0:  # the usual frame: one whole block
            return [(0, n)]
        first = min(n, -(self._vad_pos - self._grid) % b or b)
        out = [(0, first)]
        out += [(o, min(b, n - o)) for o in range(first, n, b)]
        return out

    def _near_block(self, start: int, offset: int, n: int = 1) -> bool:
        """:meth:`near_reference` over the canceller blocks (on its grid) that samples
        ``[start + offset, start + offset + n)`` of a block placed at ``start`` touch: the
        canceller gets a block whole or not at all, however it was split."""
        b = self._block
        g = (self._vad_pos + offset - self._grid) % b  # where the first sample sits in its block
        return self.near_reference(start + offset - g, g + n + (-(g + n) % b))

    def _measure(self, leg: np.ndarray, residual: np.ndarray, at: int) -> None:
        """ERLE's sums over a piece with agent audio once the canceller has adapted (every 4th:
        a statistic, and the rule's verdict costs three ring reads), if it is echo alone by the
        double-talk rule's account and at least 10 dB above the line's noise floor (noise is
        not echo)."""
        d = leg.astype(np.float64)
        pd = float(np.dot(d, d))
        gate = self.gate
        if pd > 10.0 * gate.floor * d.size and not gate.allows(at, at + d.size):  # type: ignore[union-attr]
            e = residual.astype(np.float64)
            self._erle[0] += pd
            self._erle[1] += float(np.dot(e, e))

    # ------------------------------------------------------------------ the record
    def metrics(self) -> dict | None:
        """The record's ``metrics.echo`` (see :func:`gateway.audio.echo.to_metrics`): ``delayMs``,
        ``erlDb``, ``confidence`` (and ``erlMinDb`` without a confident estimate), and with the
        canceller ``erleDb``: the echo return loss enhancement (G.168 §3: caller-leg power over
        residual power, dB) over the pieces with agent audio, once the canceller has adapted, that
        the double-talk rule judged echo alone and that stand 10 dB above the line's noise floor
        (``None`` if none did), ``cancelledMs`` (caller audio the canceller worked on
        with agent audio in its span) and ``vetoedChunks`` (VAD chunks the rule kept from
        counting as speech); ``None`` when no agent audio played."""
        if not self.played:
            return None
        est = self.estimator
        out = to_metrics(est.estimate, erl_lower_bound_db=est.erl_lower_bound_db)
        aec = self.canceller
        if aec is not None:
            d, e = self._erle
            out["erleDb"] = round(float(10 * np.log10((d + 1.0) / (e + 1.0))), 1) if d > 0 else None
            out["cancelledMs"] = round(self.cancelled_samples * 1000 / self.rate)
            out["vetoedChunks"] = self.vetoed_chunks
        return out


def process_many(stages: Sequence[EchoStage], pcms: Sequence[np.ndarray], arrivals: Sequence[float]) -> list:
    """Many calls' caller-leg blocks through their echo stages, the canceller batched.

    Each block is placed on its stage's clock and given to its estimator (near agent audio);
    with a canceller, near agent audio, it is cut into pieces on the canceller's block grid,
    round ``r`` runs piece ``r`` of every such call in one :func:`~gateway.audio.aec.cancel_many`,
    and every piece's output goes to the call's double-talk gate.

    Args:
        stages: distinct stages, one per call.
        pcms: each call's block, int16 ``[n_i]`` at its stage's rate.
        arrivals: when each block's end arrived (ms from its call's start).

    Returns:
        What each call's VAD scores: int16 ``[n_i]``, the residual where the canceller worked,
        else the block itself.
    """
    out = list(pcms)
    starts: list[int] = []
    work: list[int] = []  # calls whose canceller works on this block: cut into pieces
    pieces: dict[int, list[tuple[int, int]]] = {}
    ready: list[int] = []  # calls whose block is one aligned canceller block, near: analysed, in round 0
    for i, (st, p, a) in enumerate(zip(stages, pcms, arrivals)):  # each call on its own state
        n, clock = int(p.size), st.clock
        if clock.reanchors != st._anchors:  # the last block moved the count: the grid restarts here
            st._anchors, st._grid = clock.reanchors, st._vad_pos
        start = clock.place(n, a)
        starts.append(start)
        if clock.gaps != st._gaps:  # refused frames moved this block: the grid restarts at it
            st._gaps, st._grid = clock.gaps, st._vad_pos
        if st.canceller is None or not n or not st._near_block(start, 0, n):
            st.analyse(p, start)
            continue
        if n == st._block and (st._vad_pos - st._grid) % n == 0:  # the usual frame: one whole block
            st.analyse(p, start)  # (its one piece at once, as a round would)
            if st._pending is not None:
                c = st.canceller
                st._apply_pending(start, c._fill == 0 or c._next != start)
            ready.append(i)
        else:
            work.append(i)
            pieces[i] = st._pieces(start, n)
    for r in range(max((len(p) for p in pieces.values()), default=1 if ready else 0)):
        now = [i for i in work if len(pieces[i]) > r]
        for i in now:  # piece by piece: a new estimate reaches the canceller at the same sample
            o, k = pieces[i][r]
            stages[i].analyse(pcms[i][o : o + k], starts[i] + o)
        near = [i for i in now if stages[i]._near_block(starts[i], pieces[i][r][0])]
        for i in near:
            if stages[i]._pending is not None:
                c, at = stages[i].canceller, starts[i] + pieces[i][r][0]
                stages[i]._apply_pending(at, c._fill == 0 or c._next != at)  # type: ignore[union-attr]
        cuts = [pieces[i][r] for i in near]
        if r == 0 and ready:
            near, cuts = ready + near, [(0, int(pcms[i].size)) for i in ready] + cuts
        if near:
            _cancel_round(stages, near, cuts, pcms, starts, out)
    for st, p in zip(stages, pcms):
        st._vad_pos += int(p.size)
    return out


def _cancel_round(stages: Sequence[EchoStage], near: list[int], cuts: list[tuple[int, int]],
                  pcms: Sequence[np.ndarray], starts: list[int], out: list) -> None:
    """One round of :func:`process_many`: piece ``cuts[j]`` (offset, length) of call ``near[j]``
    through the cancellers in one :func:`~gateway.audio.aec.cancel_batch`, the residual into
    ``out``, every output to its call's gate (whole blocks in one
    :func:`~gateway.audio.doubletalk.feed_blocks`), ERLE's sums on every 4th adapted piece."""
    chunks = [pcms[i] if k == pcms[i].size else pcms[i][o : o + k] for i, (o, k) in zip(near, cuts)]
    batches, outs = cancel_batch([stages[i].canceller for i in near], chunks,  # type: ignore[misc]
                                 [starts[i] + o for i, (o, _) in zip(near, cuts)])
    for blocks in batches:
        here = [stages[near[j]] for j in blocks.rows]
        feed_blocks([st.gate for st in here], blocks,  # type: ignore[misc]
                    [st._vad_pos + cuts[j][0] for st, j in zip(here, blocks.rows)])
        for j, st, active, adapted, res in zip(blocks.rows, here, blocks.active.tolist(), blocks.adapted.tolist(),
                                               blocks.residual):
            if not active:
                continue
            i, cut = near[j], cuts[j]
            if cut[0] == 0 and cut[1] == pcms[i].size and out[i] is pcms[i]:  # the whole block: _took's first case
                out[i] = res
                st.cancelled_samples += cut[1]
                if adapted:
                    st._sampled += 1
                    if st._sampled % 4 == 0:
                        st._measure(pcms[i], res, st._vad_pos)
            else:
                _took(st, i, cut, pcms, out, res, adapted)
    for j, res in enumerate(outs):
        if res is not None:
            st = stages[near[j]]
            st.gate.feed(res, st._vad_pos + cuts[j][0])  # type: ignore[union-attr]
            if res.active:
                _took(st, near[j], cuts[j], pcms, out, res.residual, res.adapted)


def _took(st: EchoStage, i: int, cut: tuple[int, int], pcms: Sequence[np.ndarray], out: list,
          residual: np.ndarray, adapted: bool) -> None:
    """A piece the canceller worked on (agent audio in its span): its residual into ``out[i]``,
    the count, and ERLE's sums on every 4th once adapted (after the gate was fed)."""
    o, k = cut
    if out[i] is pcms[i]:
        if o == 0 and k == pcms[i].size:  # the piece is the whole block: its residual is the output
            out[i] = residual
            st.cancelled_samples += k
            if adapted:
                st._sampled += 1
                if st._sampled % 4 == 0:
                    st._measure(pcms[i], residual, st._vad_pos)
            return
        out[i] = pcms[i].copy()
    out[i][o : o + k] = residual
    st.cancelled_samples += k
    if adapted:
        st._sampled += 1
        if st._sampled % 4 == 0:
            st._measure(pcms[i][o : o + k], residual, st._vad_pos + o)


def echo_many(lanes: Sequence[Lane], pcms: Sequence[np.ndarray], vad_pcms: list, work: Sequence[int],
              results: Sequence[TickResult]) -> None:
    """The media engine's echo stage for one tick: every working lane with an
    :class:`EchoStage` through :func:`process_many` together (its decoded caller audio,
    ``pcms[i]``, at the carrier's rate, which is the VAD's, placed by its result's arrival
    time); ``vad_pcms[i]`` becomes what its VAD scores. If that raises (a bug), those lanes'
    VADs hear their raw audio this tick (each stage counts a failure) and the calls go on."""
    idx = [i for i in work if lanes[i].echo is not None and results[i].error is None]
    if not idx:
        return
    stages = [lanes[i].echo for i in idx]
    try:
        heard = process_many(stages, [pcms[i] for i in idx], [results[i].at_ms for i in idx])  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - echo handling is a refinement: the VAD falls back to the raw leg
        log.exception("echo stage failed for %d calls; their VADs hear the raw caller leg this tick", len(idx))
        for st in stages:
            st.failures += 1  # type: ignore[union-attr]
        return
    for i, pcm in zip(idx, heard):
        vad_pcms[i] = pcm
