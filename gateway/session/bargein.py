"""Barge-in settings and the pause-then-commit decision, as an explicit state machine.

A call's barge-in mode (:data:`BargeInMode`) says what caller speech over agent audio does:

- ``off``: nothing (the agent keeps talking; what ``interruptible: false`` means);
- ``immediate``: the gateway's VAD confirming speech (its shorter barge-in confirmation)
  clears the carrier, cancels the model's reply and truncates it at the ms the caller heard;
- ``pause_then_commit``: that confirmation only **pauses** the agent (nothing more is sent; the
  carrier plays out its short lead; no ``clear``, the model is not told). The pause then ends
  one of two ways, decided on the caller's *voiced* time on the VAD's timeline, not on its
  end-of-speech event (which comes ``vad_min_silence_ms`` after the speech ends):

  * **commit** as soon as the caller has been voiced ``commit_ms`` since the onset (the speech
    is a real barge-in): ``clear``, cancel and truncate exactly as ``immediate``, at what the
    caller heard before the pause;
  * **resume** once no voiced chunk came for ``resume_gap_ms`` before that (a backchannel, "mm-hm",
    a cough): playback goes on from the next unsent frame, nothing lost.

:class:`PauseGate` is the pure decision; :class:`~gateway.session.agent.AgentAudio` carries it
out (pause, resume, commit) and ends a pause on every other path (a policy's stop, a model that
cut itself, a muted caller, the call's end). Time here is ms on one timeline of the caller's
audio (the VAD's samples, or the call's clock for a VAD runner that cannot tell voiced time).

Pure and synchronous.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "BargeInMode", "BARGE_IN_MODES", "BargeInConfig", "COMMIT_MS", "RESUME_GAP_MS",
    "PauseState", "PauseInput", "TRANSITIONS", "BargeInStateError", "PauseGate", "PAUSE_GRACE_MS",
]  # fmt: skip

BargeInMode = Literal["off", "immediate", "pause_then_commit"]
BARGE_IN_MODES: tuple[str, ...] = get_args(BargeInMode)

#: Caller speech (ms from its onset) that commits a paused barge-in: longer than a backchannel
#: ("mm-hm", "yeah": 150–350 ms) or a cough, short enough that a real interruption is obeyed
#: within about half a second.
COMMIT_MS = 400.0
#: Unvoiced caller audio (ms) after the last voiced chunk that ends a short speech: the pause
#: resumes. Longer than the gaps inside one word's voicing (stops, 50–150 ms) and than the
#: short pause a caller often takes after a first word when interrupting ("Sorry — can I …",
#: pauses inside a phrase run 200–400 ms; at 200 ms such a barge-in resumed, paused again and
#: committed late, a stutter), shorter than the VAD's end of speech (``vad_min_silence_ms``,
#: 600 ms). A backchannel of 250 ms holds the agent about 0.7 s.
RESUME_GAP_MS = 400.0
#: A pause the caller's audio has not decided within ``commit_ms + resume_gap_ms`` plus this
#: (ms) resumes (``timeout``): the caller's audio stopped arriving, so nothing will decide it.
PAUSE_GRACE_MS = 1000.0


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    """One call's barge-in settings.

    Attributes:
        mode: ``off``, ``immediate`` or ``pause_then_commit`` (:data:`BargeInMode`).
        commit_ms: caller speech from its onset that commits a pause (ms, 50–5,000).
        resume_gap_ms: unvoiced audio after shorter speech that resumes a pause (ms, 20–2,000).

    Raises:
        ValueError: an unknown mode or a time out of range.
    """

    mode: BargeInMode = "immediate"
    commit_ms: float = COMMIT_MS
    resume_gap_ms: float = RESUME_GAP_MS

    def __post_init__(self) -> None:
        if self.mode not in BARGE_IN_MODES:
            raise ValueError(f"barge-in mode {self.mode!r}: choose one of {', '.join(BARGE_IN_MODES)}")
        if not 50.0 <= self.commit_ms <= 5000.0:
            raise ValueError(f"commit_ms must be within 50–5,000 ms, not {self.commit_ms!r}")
        if not 20.0 <= self.resume_gap_ms <= 2000.0:
            raise ValueError(f"resume_gap_ms must be within 20–2,000 ms, not {self.resume_gap_ms!r}")

    @property
    def enabled(self) -> bool:
        """Whether caller speech barges in at all (any mode but ``off``)."""
        return self.mode != "off"


class PauseState(enum.Enum):
    """States of :class:`PauseGate`."""

    IDLE = "idle"  # agent audio flows (or none is playing)
    PAUSED = "paused"  # a barge-in candidate: no agent audio released, the decision pending


class PauseInput(enum.Enum):
    """What moves a :class:`PauseGate`."""

    CANDIDATE = "candidate"  # caller speech confirmed over agent audio: pause
    RESUME = "resume"  # the speech was short (or the pause no longer matters): play on
    COMMIT = "commit"  # the speech is a barge-in: clear, cancel, truncate
    ABANDON = "abandon"  # another path cleared the audio (a policy's stop)


class BargeInStateError(RuntimeError):
    """An illegal :class:`PauseGate` transition: a bug of the session, never bad input."""


#: Legal transitions: (state, input) → next state. A candidate while paused keeps the pause
#: (and its first onset).
TRANSITIONS: dict[tuple[PauseState, PauseInput], PauseState] = {
    (PauseState.IDLE, PauseInput.CANDIDATE): PauseState.PAUSED,
    (PauseState.PAUSED, PauseInput.CANDIDATE): PauseState.PAUSED,
    (PauseState.PAUSED, PauseInput.RESUME): PauseState.IDLE,
    (PauseState.PAUSED, PauseInput.COMMIT): PauseState.IDLE,
    (PauseState.PAUSED, PauseInput.ABANDON): PauseState.IDLE,
}


class PauseGate:
    """Whether a paused barge-in commits or resumes, from the caller's voiced time.

    Args:
        commit_ms: voiced span from the onset that commits (ms).
        resume_gap_ms: unvoiced audio after the last voiced chunk that resumes (ms).

    Attributes:
        state: :class:`PauseState`.
        onset_ms: the paused speech's onset (ms on the caller-audio timeline), while paused.
    """

    __slots__ = ("commit_ms", "resume_gap_ms", "state", "onset_ms", "_voiced_to_ms")

    def __init__(self, commit_ms: float = COMMIT_MS, resume_gap_ms: float = RESUME_GAP_MS) -> None:
        self.commit_ms = commit_ms
        self.resume_gap_ms = resume_gap_ms
        self.state = PauseState.IDLE
        self.onset_ms: float | None = None
        self._voiced_to_ms = 0.0

    @property
    def paused(self) -> bool:
        return self.state is PauseState.PAUSED

    @property
    def voiced_ms(self) -> float:
        """The paused speech's voiced span so far: onset → end of its last voiced chunk (ms)."""
        if self.onset_ms is None:
            return 0.0
        return max(0.0, self._voiced_to_ms - self.onset_ms)

    @property
    def voiced_to_ms(self) -> float:
        """The end of the paused speech's last voiced chunk so far (ms)."""
        return self._voiced_to_ms

    def _go(self, event: PauseInput) -> None:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise BargeInStateError(f"illegal barge-in transition {self.state.name} --{event.name}-->")
        self.state = nxt

    def pause(self, onset_ms: float, voiced_to_ms: float) -> bool:
        """A barge-in candidate: speech from ``onset_ms``, voiced up to ``voiced_to_ms``.

        Returns:
            True if this paused (False: already paused; the first onset is kept, the voice
            it reached counts).
        """
        first = not self.paused
        self._go(PauseInput.CANDIDATE)
        if first:
            self.onset_ms = onset_ms
            self._voiced_to_ms = max(onset_ms, voiced_to_ms)
        else:
            self._voiced_to_ms = max(self._voiced_to_ms, voiced_to_ms)
        return first

    def hear(self, voiced_to_ms: float, heard_to_ms: float,
             runs_ms: tuple[tuple[float, float], ...] = ()) -> PauseInput | None:
        """The VAD's progress: its last voiced chunk ended at ``voiced_to_ms``, and it has
        scored the caller's audio up to ``heard_to_ms``; ``runs_ms``: its latest voiced runs
        ``(start, end)`` (oldest first), so that whichever came first, a gap of
        ``resume_gap_ms`` or ``commit_ms`` of voice, decides however seldom this is asked. The
        verdict (the caller then ends the pause with :meth:`end`): ``COMMIT``, ``RESUME``, or
        ``None`` (not yet; or not paused)."""
        if not self.paused:
            return None
        assert self.onset_ms is not None
        for start, end in runs_ms:  # the voice since the last progress, in order
            if end <= self._voiced_to_ms:
                continue
            if start - self._voiced_to_ms >= self.resume_gap_ms:
                return PauseInput.RESUME  # a gap that closed before this progress came
            self._voiced_to_ms = end
            if self.voiced_ms >= self.commit_ms:
                return PauseInput.COMMIT
        self._voiced_to_ms = max(self._voiced_to_ms, voiced_to_ms)
        if self.voiced_ms >= self.commit_ms:
            return PauseInput.COMMIT
        if heard_to_ms - self._voiced_to_ms >= self.resume_gap_ms:
            return PauseInput.RESUME
        return None

    def speech_ended(self) -> PauseInput | None:
        """The VAD's end of speech came while paused: the verdict on the voiced span so far
        (``None`` if not paused)."""
        if not self.paused:
            return None
        return PauseInput.COMMIT if self.voiced_ms >= self.commit_ms else PauseInput.RESUME

    def end(self, event: PauseInput) -> None:
        """End the pause with ``RESUME``, ``COMMIT`` or ``ABANDON``.

        Raises:
            BargeInStateError: not paused, or ``event`` is ``CANDIDATE``.
        """
        if event is PauseInput.CANDIDATE:
            raise BargeInStateError("a candidate does not end a pause")
        self._go(event)
        self.onset_ms = None
        self._voiced_to_ms = 0.0
