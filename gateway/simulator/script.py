"""What a simulated call does and measures: its script steps, how they are played
(:class:`ScriptPlayer`, a part of the caller), its report, and the caller-side timings
(:func:`speech_bounds`, :func:`pacing_lateness`). Used by
:class:`~gateway.simulator.caller.SimulatedCaller` (which re-exports all of it)."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

__all__ = ["Say", "Pause", "WaitForAgent", "BargeIn", "Backchannel", "Listen", "PressDigit", "Step", "Onset",
           "CallerReport", "ScriptPlayer", "speech_bounds", "pacing_lateness"]

FRAME_MS = 20


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
class _OverAgent:
    """Wait until agent audio is playing for ``after_ms``, then speak ``pcm`` over it."""

    pcm: np.ndarray
    after_ms: int = 800
    timeout_s: float = 30.0
    label: str = ""


@dataclass(frozen=True)
class BargeIn(_OverAgent):
    """Wait until agent audio is playing for ``after_ms``, then speak ``pcm`` over it."""


@dataclass(frozen=True)
class Backchannel(_OverAgent):
    """Wait until agent audio is playing for ``after_ms``, then say ``pcm`` (a short "mm-hm",
    ~250 ms) over it: speech that should not stop the agent. Its onset is reported
    (:attr:`CallerReport.onsets`, kind ``backchannel``), not timed as a barge-in."""


@dataclass(frozen=True)
class Listen:
    """Wait until agent audio is playing for ``after_ms``, then stay silent for ``ms`` while the
    agent talks (only the line noise and, with an echo path, the echo are on the line); the
    window is reported (:attr:`CallerReport.listen_windows_ms`)."""

    ms: int
    after_ms: int = 0
    timeout_s: float = 30.0
    label: str = ""


@dataclass(frozen=True)
class PressDigit:
    """Send one DTMF digit."""

    digit: str


Step = Union[Say, Pause, WaitForAgent, BargeIn, Backchannel, Listen, PressDigit]


@dataclass(frozen=True)
class Onset:
    """A line the caller spoke over the agent: ``kind`` ``barge-in`` or ``backchannel``, its
    label, and its speech's onset and end (ms from the caller's first frame, by
    :func:`speech_bounds` on the caller's own schedule)."""

    kind: str
    label: str
    onset_ms: float
    end_ms: float


class ScriptPlayer:
    """The script's steps, played in real time: the part of
    :class:`~gateway.simulator.caller.SimulatedCaller` that speaks, waits and listens (it uses
    the caller's mouth, ear state, waits and report)."""

    async def _play(self, script: list[Step]) -> None:
        for step in script:
            if self._closed.is_set() or self._hang_up_requested:
                return
            if isinstance(step, Say):
                await self._say(step.pcm, step.label)
            elif isinstance(step, Pause):
                await self._sleep(step.ms / 1000)
            elif isinstance(step, WaitForAgent):
                await self._wait_for_agent(step)
            elif isinstance(step, (BargeIn, Backchannel, Listen)):
                await self._over_agent(step)
            elif isinstance(step, PressDigit):
                self._send(self.dialect.dtmf(step.digit))
                if self.link == "websockets":
                    await self._flush()
        await self._sleep(self.hangup_quiet_ms / 1000)

    async def _over_agent(self, step: BargeIn | Backchannel | Listen) -> None:
        """Wait until agent audio has played for ``step.after_ms``, then speak over it (or, for
        :class:`Listen`, stay silent for ``step.ms``: only the echo is on the line)."""
        kind = {BargeIn: "barge-in", Backchannel: "backchannel", Listen: "listen"}[type(step)]
        await self._wait_until(lambda: self._agent_playing_since is not None, step.timeout_s)
        if self._agent_playing_since is None:
            self._note(f"{kind} skipped: agent never spoke")
            return
        wait = step.after_ms - (self._now_ms() - self._agent_playing_since)
        if wait > 0:
            await asyncio.sleep(wait / 1000)
        if isinstance(step, Listen):
            start = self._now_ms()
            self._note(f"listen {step.label}")
            await self._sleep(step.ms / 1000)
            self.report.listen_windows_ms.append((start, self._now_ms()))
            return
        await self._say(step.pcm, step.label or kind, barge_in=isinstance(step, BargeIn), over_agent=kind)

    async def _say(self, pcm: np.ndarray, label: str, *, barge_in: bool = False, over_agent: str = "") -> None:
        rate = self.dialect.audio_format.sample_rate
        onset, end = speech_bounds(pcm, rate)
        n = self._frame_samples
        padded = np.concatenate([pcm, np.zeros((-pcm.size) % n, np.int16)])
        start_ms = self._now_ms() + (len(self._mouth)) * FRAME_MS
        frames = padded.reshape(-1, n)
        self._mouth.extend(self._mouth_payloads(frames))
        onset_ms = start_ms + onset * 1000 / rate
        end_ms = start_ms + end * 1000 / rate
        self._turn_ends.append(end_ms)
        self._note(f"say {label}")
        if barge_in:
            self._onset_ms = onset_ms
        if over_agent:
            self.report.onsets.append(Onset(over_agent, label, onset_ms, end_ms))
        await self._wait_until(lambda: not self._mouth, len(frames) * FRAME_MS / 1000 + 10)
        self._speech_end_ms = end_ms
        self._agent_playing_since = None
        if barge_in:  # the interrupted reply does not count as the agent having answered
            self._last_agent_audio_ms = None

    async def _wait_for_agent(self, step: WaitForAgent) -> None:
        def quiet_after_speaking() -> bool:
            last = self._last_agent_audio_ms
            return last is not None and not self._playback and self._now_ms() - last >= step.quiet_ms

        await self._wait_until(quiet_after_speaking, step.timeout_s)
        self._last_agent_audio_ms = None



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
    #: lines spoken over the agent (:class:`BargeIn`, :class:`Backchannel`), in order
    onsets: list[Onset] = field(default_factory=list)
    #: gaps in the agent audio the caller heard, ``(ran dry, audio again)`` ms, not ended by a
    #: ``clear``: a pause of the agent (or the wait between two of its turns)
    agent_gaps_ms: list[tuple[float, float]] = field(default_factory=list)
    #: :class:`Listen` windows, ``(start, end)`` ms
    listen_windows_ms: list[tuple[float, float]] = field(default_factory=list)
    #: with an echo path: the return loss achieved (dB: agent audio played over its echo sent)
    echo_return_loss_db: float | None = None

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
            "clearAtMs": [round(x, 1) for x in self.clear_at_ms],
            "playedBeforeClearMs": [round(x, 1) for x in self.played_before_clear_ms],
            "onsets": [{"kind": o.kind, "label": o.label, "onsetMs": round(o.onset_ms, 1), "endMs": round(o.end_ms, 1)}
                       for o in self.onsets],
            "agentGapsMs": [[round(a, 1), round(b, 1)] for a, b in self.agent_gaps_ms],
            "echoReturnLossDb": None if self.echo_return_loss_db is None else round(self.echo_return_loss_db, 1),
        }
