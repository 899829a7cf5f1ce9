"""The caller leg's sample clock for the echo stage (:mod:`gateway.engine.echo`): caller-leg
blocks placed on the call's timeline from their sample counts and arrival times.

Pure Python, no I/O; one instance per call, used by its echo stage.
"""

from __future__ import annotations

__all__ = ["CallerClock"]


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

    Frames the call refused (the audio budget dropped them before the echo stage) are real time
    on the line: :meth:`skip` moves the origin by their samples where they fell in the count, so
    the positions stay on real time instead of falling behind until a window re-anchors.

    Attributes:
        reanchors: how many times the origin moved by a window's lag.
        gaps: how many times it moved by refused frames (:meth:`skip`).
    """

    __slots__ = ("rate", "_bound", "_window", "_origin", "_counted", "_min_lag", "_since", "reanchors",
                 "_gaps", "gaps")  # fmt: skip

    @property
    def origin(self) -> int | None:
        """The timeline index the count starts from (``None`` before the first block); it moves
        when the clock re-anchors."""
        return self._origin

    def __init__(self, sample_rate: int, *, bound_ms: float = 30.0, window_ms: float = 2000.0) -> None:
        self.rate = sample_rate
        self._bound = bound_ms * sample_rate / 1000.0
        self._window = int(window_ms * sample_rate / 1000)
        self._origin: int | None = None
        self._counted = 0
        self._min_lag = float("inf")
        self._since = 0
        self.reanchors = 0
        self._gaps: list[tuple[int, int]] = []  # (count position, samples) of refused frames
        self.gaps = 0

    def skip(self, n: int, queued: int = 0) -> None:
        """``n`` samples of the caller leg were refused (dropped, never placed) after everything
        placed so far and ``queued`` samples more (admitted, waiting for a tick): the blocks
        after them are placed ``n`` samples later. The block they fall in or before takes the
        move before it is placed (its end, which arrived last, is right)."""
        if n > 0:
            self._gaps.append((self._counted + max(queued, 0), n))

    def place(self, n: int, arrival_ms: float) -> int:
        """The timeline index of the first of ``n`` samples whose end arrived at ``arrival_ms``
        (ms from the call's start)."""
        arrived = arrival_ms * self.rate / 1000.0
        if self._gaps and self._gaps[0][0] < self._counted + n:  # refused frames before this block's end
            due = [g for g in self._gaps if g[0] < self._counted + n]
            self._gaps = self._gaps[len(due):]
            if self._origin is not None:  # (the first block's arrival already counts them)
                self._origin += sum(k for _, k in due)
                self.gaps += 1
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
