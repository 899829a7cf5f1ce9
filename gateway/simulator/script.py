"""What a simulated call does and measures: its script steps, its report, and the caller-side
timings (:func:`speech_bounds`, :func:`pacing_lateness`). Used by
:class:`~gateway.simulator.caller.SimulatedCaller` (which re-exports all of it)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

__all__ = ["Say", "Pause", "WaitForAgent", "BargeIn", "PressDigit", "Step", "CallerReport", "speech_bounds",
           "pacing_lateness"]


@dataclass(frozen=True)
class Say:
    """Speak ``pcm`` (int16 at the dialect's rate), then continue."""

    pcm: np.ndarray
    label: str = ""


@dataclass(frozen=True)
class Pause:
    """Stay silent for ``ms`` milliseconds."""

    ms: int


@dataclass(frozen=True)
class WaitForAgent:
    """Wait until the agent has spoken and then been quiet for ``quiet_ms`` (or time out)."""

    timeout_s: float = 30.0
    quiet_ms: int = 1500


@dataclass(frozen=True)
class BargeIn:
    """Wait until agent audio is playing for ``after_ms``, then speak ``pcm`` over it."""

    pcm: np.ndarray
    after_ms: int = 800
    timeout_s: float = 30.0
    label: str = ""


@dataclass(frozen=True)
class PressDigit:
    """Send one DTMF digit."""

    digit: str


Step = Union[Say, Pause, WaitForAgent, BargeIn, PressDigit]


def speech_bounds(pcm: np.ndarray, sample_rate: int, *, threshold_db: float = -40.0) -> tuple[int, int]:
    """First and last sample of ``pcm`` whose 10 ms energy is within ``threshold_db`` of the peak.

    Used to time a line's onset and end (recordings carry leading and trailing silence).
    """
    win = max(1, sample_rate // 100)
    n = pcm.size // win
    if n == 0:
        return 0, pcm.size
    frames = pcm[: n * win].astype(np.float64).reshape(n, win)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    active = np.flatnonzero(energy > energy.max() + threshold_db)
    if active.size == 0:
        return 0, pcm.size
    return int(active[0] * win), int((active[-1] + 1) * win)


def pacing_lateness(arrivals_ms: Sequence[float], durations_ms: Sequence[float], *, resets_ms: Sequence[float] = (),
                    turn_ends_ms: Sequence[float] = ()) -> tuple[list[float], list[float]]:
    """How late each agent frame reached the caller's ear, from what arrived when.

    The ear plays agent audio continuously: it runs dry at ``end`` (the previous frames'
    arrival plus their audio). A frame that arrives at ``a`` after ``end`` is ``a − end`` late,
    *however long the gap* (the worst gaps are the ones a user hears); one that arrives before
    ``end`` is 0 late. Two things are not lateness, and both are known from the schedule rather
    than guessed from a gap's length:

    * the first frame of the call and the first after a ``clear`` (``resets_ms``): nothing was
      playing, so nothing ran dry (their delay is turn latency or barge-in, measured apart);
    * a *turn pause*: a gap inside which the caller finished one of its lines
      (``turn_ends_ms``, the caller's own schedule), so the agent was waiting for the caller,
      not stalling: the frame that ends it is the agent's answer (turn latency).

    Args:
        arrivals_ms: arrival time of each agent audio frame (ms, non-decreasing).
        durations_ms: the audio each frame carries (ms), same length.
        resets_ms: times a ``clear`` emptied the playback buffer (ms).
        turn_ends_ms: times the caller's lines ended (ms).

    Returns:
        ``(lateness, pauses)``: one lateness value (ms) per frame that followed playing audio,
        and the length (ms) of each turn pause.

    Raises:
        ValueError: ``arrivals_ms`` and ``durations_ms`` differ in length.
    """
    if len(arrivals_ms) != len(durations_ms):
        raise ValueError("one duration per arrival")
    resets = sorted(resets_ms)
    turns = sorted(turn_ends_ms)
    lateness: list[float] = []
    pauses: list[float] = []
    end: float | None = None
    r = 0
    for a, dur in zip(arrivals_ms, durations_ms):
        while r < len(resets) and resets[r] <= a:
            end, r = None, r + 1
        if end is not None:
            if a <= end:
                lateness.append(0.0)
            elif bisect.bisect_left(turns, end) < bisect.bisect_right(turns, a):
                pauses.append(a - end)  # the caller ended a line inside the gap
            else:
                lateness.append(a - end)
        end = max(end if end is not None else a, a) + dur
    return lateness, pauses


@dataclass
class CallerReport:
    """What a simulated call measured. Times in ms from the caller's first frame."""

    heard: np.ndarray
    sample_rate: int
    turn_latency_ms: list[float] = field(default_factory=list)
    barge_in_reaction_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)
    turn_pauses_ms: list[float] = field(default_factory=list)
    send_slip_ms: list[float] = field(default_factory=list)
    clears: int = 0
    marks_acked: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    frames_after_hangup: int = 0
    hangup_at_ms: float | None = None
    agent_audio_ms: float = 0.0
    media_arrivals_ms: list[float] = field(default_factory=list)
    clear_at_ms: list[float] = field(default_factory=list)
    played_before_clear_ms: list[float] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    log: list[tuple[float, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "turnLatencyMs": [round(x, 1) for x in self.turn_latency_ms],
            "bargeInReactionMs": [round(x, 1) for x in self.barge_in_reaction_ms],
            "clears": self.clears,
            "marksAcked": self.marks_acked,
            "framesReceived": self.frames_received,
            "framesSent": self.frames_sent,
            "framesAfterHangup": self.frames_after_hangup,
            "agentAudioMs": round(self.agent_audio_ms, 1),
            "closeCode": self.close_code,
            "closeReason": self.close_reason,
        }
