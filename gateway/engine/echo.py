"""One call's echo stage: the played agent audio as the echo reference, the caller leg on the same
sample clock, the echo path estimate for the record.

The gateway knows which agent audio played and when (the playout ledger's play times); the
caller leg carries it back as residual echo. :class:`EchoStage` puts both legs on one sample
clock counted from the call's start (samples at the carrier's rate) and feeds the
:class:`~gateway.audio.echo.EchoPathEstimator`:

- **reference** (:meth:`EchoStage.reference`): each agent message as it leaves
  :meth:`gateway.session.playout.Playout.pump`, decoded, at its play position
  (``play_at_ms × rate / 1000``); a barge-in ``clear`` truncates it at the clear time
  (:meth:`EchoStage.truncate`: audio dropped at the carrier never played, so never echoes);
- **caller leg** (:meth:`EchoStage.place`): inbound frames are contiguous audio, but their
  arrival times jitter (tens of ms; a tick joins several). Each block's position is therefore
  counted in samples from an anchor, the first block's arrival (its *end* arrived then), by
  :class:`CallerClock`, re-anchored only when the count drifts from the arrivals by more than a
  bound (lost frames, a late first frame, a carrier clock that runs fast or slow). A constant
  offset between the two legs (network, carrier buffering) is absorbed by the estimator as
  echo delay.

Cost while the agent is silent: the caller leg goes to the estimator only while some reference
may still be seen by one of its blocks (from one block before the first agent audio of a burst
to the echo tail after its last); otherwise :meth:`EchoStage.caller` only counts samples.

Pure numpy, no I/O, synchronous (rule 4 of the architecture); one instance per call, used from
the call's own tasks (the playout and the caller path) and the media engine's tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gateway.audio.echo import EchoPathEstimator, to_metrics

if TYPE_CHECKING:
    from gateway.engine.lane import Lane, TickResult

__all__ = ["CallerClock", "EchoStage", "ECHO_RATES", "echo_many"]

#: Carrier rates the echo stage runs at (Hz): those where the VAD runs at the carrier's rate too
#: (:meth:`gateway.vadrun.VadFactory.rate_for`), so the caller leg it sees is the VAD's input.
ECHO_RATES = (8000, 16000)


class CallerClock:
    """Caller-leg sample positions on the call's timeline, from sample counts and arrival times.

    A block of ``n`` samples whose last frame arrived at ``arrival_ms`` is placed right after the
    previous block (``origin + counted``). The lag of a block is its arrival (in samples) minus
    the counted end; network jitter only ever delays an arrival, so the *smallest* lag seen over a
    window of ``window_ms`` of audio is how far the count is off. At the end of each window, if
    that smallest lag is more than ``bound_ms`` away from zero, the origin moves by it (the next
    block is placed that much later or earlier): a gap (lost frames) or a late first frame is
    corrected within one or two windows, jitter never moves it.

    Args:
        sample_rate: Hz.
        bound_ms: drift tolerated before re-anchoring (ms).
        window_ms: audio (ms of samples counted) over which the smallest lag is taken.

    Attributes:
        reanchors: how many times the origin moved.
    """

    __slots__ = ("rate", "_bound", "_window", "_origin", "_counted", "_min_lag", "_since", "reanchors")

    def __init__(self, sample_rate: int, *, bound_ms: float = 30.0, window_ms: float = 2000.0) -> None:
        self.rate = sample_rate
        self._bound = bound_ms * sample_rate / 1000.0
        self._window = int(window_ms * sample_rate / 1000)
        self._origin: int | None = None
        self._counted = 0
        self._min_lag = float("inf")
        self._since = 0
        self.reanchors = 0

    def place(self, n: int, arrival_ms: float) -> int:
        """The timeline index of the first of ``n`` samples whose end arrived at ``arrival_ms``
        (ms from the call's start)."""
        arrived = arrival_ms * self.rate / 1000.0
        if self._origin is None:
            self._origin = int(round(arrived)) - n
        start = self._origin + self._counted
        self._counted += n
        lag = arrived - (start + n)
        if lag < self._min_lag:
            self._min_lag = lag
        self._since += n
        if self._since >= self._window:
            if abs(self._min_lag) > self._bound:
                self._origin += int(round(self._min_lag))
                self.reanchors += 1
            self._min_lag, self._since = float("inf"), 0
        return start


class EchoStage:
    """One call's echo reference, caller-leg clock and echo path estimate (see the module).

    Args:
        sample_rate: the carrier's rate, one of :data:`ECHO_RATES` (Hz).
        max_delay_ms: the largest echo delay searched (ms; the echo tail after the last agent
            audio during which the caller leg is still analysed).

    Raises:
        ValueError: a rate not in :data:`ECHO_RATES`.

    Attributes:
        estimator: the call's :class:`~gateway.audio.echo.EchoPathEstimator`.
        clock: the caller leg's :class:`CallerClock`.
    """

    __slots__ = ("rate", "estimator", "clock", "_tail", "_lead", "_ref_end", "_burst", "_first")

    def __init__(self, sample_rate: int, *, max_delay_ms: float = 400.0) -> None:
        if sample_rate not in ECHO_RATES:
            raise ValueError(f"the echo stage runs at {ECHO_RATES} Hz, not {sample_rate!r}")
        self.rate = sample_rate
        self.estimator = EchoPathEstimator(sample_rate, max_delay_ms=max_delay_ms)
        self.clock = CallerClock(sample_rate)
        est = self.estimator
        self._lead = est._b  # a caller block [t0, t0 + B) sees the reference over [t0 - D, t0 + B)
        self._tail = est._d + est._b
        self._ref_end: int | None = None  # one past the last reference sample (as played)
        self._burst = 0  # first sample of the current run of agent audio
        self._first: int | None = None  # first reference sample of the call

    # ------------------------------------------------------------------ agent side
    def reference(self, pcm: np.ndarray, at_sample: int) -> None:
        """Agent audio as it plays: int16 ``[n]`` at :attr:`rate`, first sample at timeline index
        ``at_sample`` (the ledger's play time × rate / 1000)."""
        n = int(pcm.size)
        if n == 0:
            return
        if self._ref_end is None or at_sample > self._ref_end + self._tail:
            self._burst = at_sample  # a new run of agent audio after the echo tail of the last
        if self._first is None:
            self._first = at_sample
        self._ref_end = max(self._ref_end or 0, at_sample + n)
        self.estimator.reference(pcm, at_sample)

    def truncate(self, at_sample: int) -> None:
        """A ``clear`` dropped the carrier's buffer: agent audio from ``at_sample`` on never played."""
        if self._ref_end is not None and at_sample < self._ref_end:
            self._ref_end = max(at_sample, self._burst)
            self.estimator.truncate_reference(at_sample)

    # ------------------------------------------------------------------ caller side
    def near_reference(self, start: int, n: int) -> bool:
        """Whether caller samples ``[start, start + n)`` may meet agent audio or its echo tail."""
        end = self._ref_end
        return end is not None and start + n + self._lead > self._burst and start < end + self._tail

    def place(self, n: int, arrival_ms: float) -> int:
        """The timeline index of ``n`` caller samples whose end arrived at ``arrival_ms``."""
        return self.clock.place(n, arrival_ms)

    def caller(self, pcm: np.ndarray, arrival_ms: float) -> np.ndarray:
        """One block of the caller leg (int16 ``[n]`` at :attr:`rate`, its end arrived at
        ``arrival_ms``, ms from the call's start); returns what the VAD scores."""
        start = self.clock.place(int(pcm.size), arrival_ms)
        self.analyse(pcm, start)
        return pcm

    def analyse(self, pcm: np.ndarray, start: int) -> None:
        """The estimator's share of a caller block placed at ``start`` (skipped far from agent
        audio). Its first block starts on a multiple of its block length, so its block grid, and
        so its estimate, never depends on how the caller leg was split into frames or ticks."""
        n = int(pcm.size)
        if not n or not self.near_reference(start, n):
            return
        est = self.estimator
        if est._next is None:
            skip = -start % self._lead
            if skip >= n:
                return
            pcm, start = pcm[skip:], start + skip
        est.caller(pcm, start)

    @property
    def played(self) -> bool:
        """Whether any agent audio played (was given and not all truncated before it played)."""
        return self._first is not None and self._ref_end is not None and self._ref_end > self._first

    # ------------------------------------------------------------------ the record
    def metrics(self) -> dict | None:
        """The record's ``metrics.echo`` (see :func:`gateway.audio.echo.to_metrics`): ``delayMs``,
        ``erlDb``, ``confidence`` (and ``erlMinDb`` without a confident estimate); ``None`` when no
        agent audio played."""
        if not self.played:
            return None
        est = self.estimator
        return to_metrics(est.estimate, erl_lower_bound_db=est.erl_lower_bound_db)


def echo_many(lanes: Sequence[Lane], pcms: Sequence[np.ndarray], vad_pcms: list, work: Sequence[int],
              results: Sequence[TickResult]) -> None:
    """The media engine's echo stage for one tick: each working lane with an :class:`EchoStage`
    gets its decoded caller audio (``pcms[i]``, at the carrier's rate, which is the VAD's) placed
    on its sample clock by its result's arrival time, and ``vad_pcms[i]`` becomes what its VAD
    scores. An exception in one lane's stage (a bug) becomes that lane's error alone."""
    for i in work:
        stage, result = lanes[i].echo, results[i]
        if stage is None or result.error is not None:
            continue
        try:
            vad_pcms[i] = stage.caller(pcms[i], result.at_ms)
        except Exception as exc:  # noqa: BLE001 - one lane's bug is that lane's error
            result.error = exc
