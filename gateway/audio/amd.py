"""Answering-machine detection on the callee's first seconds: pure, synchronous numpy.

:class:`AmdDetector` is fed one 20 ms frame of int16 PCM (8 or 16 kHz) at a time with the
VAD's speech / non-speech decision for that frame (any VAD's per-frame decision; or
:class:`~gateway.audio.amd_runner.AmdRunner` runs WebRTC VAD or Silero itself, for the call
loop's voicemail policy and for ``gateway amd``). It may also be told recognised text (:meth:`AmdDetector.hear`). It returns
:class:`AmdEvent` verdicts as they are reached, in simulated time (ms from answer).

Cues, after Asterisk ``app_amd`` (``amd.conf``: ``initial_silence`` 2500 ms, ``greeting``
1500 ms, ``after_greeting_silence`` 800 ms, ``total_analysis_time`` 5000 ms,
``min_word_length`` 100 ms, ``between_words_silence`` 50 ms, ``maximum_number_of_words`` 2–3,
``maximum_word_length`` 5000 ms) and carrier practice:

* **words**: VAD speech runs ≥ ``min_word_ms``; shorter blips are noise and never break a
  silence. Words closer than ``word_gap_ms`` are one word. A word also needs one frame above
  ``min_speech_dbfs`` and ``floor_margin_db`` above the line's noise floor (a minimum tracker
  rising ``floor_rise_db_s``), as Asterisk's ``silence_threshold``: a VAD's start-up
  transient or a noisy line never makes a greeting, while quiet speech frames inside a word
  (the VAD's call) still count.
* **greeting length**: from the first word's start to the last word's end, and its voiced
  share (machines read a continuous text; a person's "Hello? … hello?" is mostly gaps).
* **after-greeting silence**: a person says a short greeting and waits for the caller.
* **beep** (:class:`~gateway.audio.tones.BeepDetector`): decisive whenever it comes; beep
  frames never count as speech.
* **phrases** from a transcript, when the local recogniser runs ("leave a message", "not
  available", "after the tone" → machine; "screening", "say your name" → screening).

Verdicts and the trade-off. ``human`` fires after ``after_greeting_ms`` (800 ms) of silence
following a greeting up to ``human_greeting_ms`` (2.2 s), or after ``long_after_greeting_ms``
(1.2 s, so a beep right after a machine greeting wins) following a longer one that is not
machine-like. ``machine`` needs a greeting of ``machine_greeting_ms`` (5.5 s) that is at least
``min_voiced`` voiced, or a machine phrase: length alone at the usual 2.5–3 s would hang up on
people answering with a 3–5 s business greeting ("Thank you for calling Acme Dental, this is
Maria, how can I help you?"), and never hanging up on a person matters more than catching
every machine. The price: a short machine greeting (< 5.5 s) with no beep and no transcript
is called ``human`` (the agent then speaks into the recording, i.e. leaves a message anyway);
with a beep it is ``machine_end_beep`` as soon as the beep ends, and a beep up to
``revise_ms`` after a ``human`` verdict revises it (a machine phrase never does: a person
says "she's not available, can I take a message?"). After ``machine`` the detector waits for
the beep (``machine_end_beep``, ``join_gap_ms`` + ≤ 2 frames after the beep ends) or
``end_silence_ms`` of silence (``machine_end_silence``). Without a transcript a screening
prompt is a greeting ending in silence: ``machine_end_silence`` when long, ``human`` when
short (speaking then is the right action for a screener too). No speech for ``initial_silence_ms`` is ``unknown`` (a
person who waits for the caller to speak; Asterisk says machine, which would hang up on them).

Events are a sequence: ``unknown`` and ``human`` may later become another verdict (a greeting
starts, a beep follows); ``machine_end_beep``, ``machine_end_silence`` and ``screening`` are
final. The state machine is explicit: :class:`AmdState` and :data:`TRANSITIONS`.

Measured on 168 generated openings (``tests/audio/make_amd_fixtures.py`` cases × 6 more
espeak-ng voices and speeds, levels −18…+6 dB, white / pink noise to −35 dBFS; none from
``../shared``): 78/78 people ``human`` (none ever a machine verdict), short greetings decided
1.1–2.9 s after their speech began (median 1.6 s); 59/60 beeps ``machine_end_beep``
107–126 ms after the beep ended (the miss: speech at ~5 dB SNR in pink noise ended the
greeting early: ``machine_end_silence``); no-beep machines and screening prompts: 11/24
``machine_end_silence``, the short ones ``human``; with the transcript 166/168 right (the
other miss: a greeting opening with "Hi," and a 1 s pause is ``human`` before the phrase).
Line noise alone (white / pink, −60…−30 dBFS) stays ``unknown``.

Cost per 20 ms frame at 8 kHz, one EPYC core (shared): ~1.6 µs on silence, ~6 µs on speech,
~11 µs on a steady tone (a Goertzel term on every frame); ~11–13 µs at 100 calls in
``gateway bench media`` (stage ``amd``); WebRTC VAD in :class:`~gateway.audio.amd_runner.AmdRunner` adds ~4 µs.

Feeding it from the session: give it the VAD's per-frame decision (score ≥ threshold), not a
gate's debounced state, whose release delay (``min_silence_ms``) would add to every
after-greeting silence; or run an :class:`~gateway.audio.amd_runner.AmdRunner` on the callee's first seconds.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import numpy as np

from gateway.audio.tones import Beep, BeepDetector

__all__ = [
    "Verdict",
    "AmdState",
    "AmdStateError",
    "TRANSITIONS",
    "AmdConfig",
    "AmdEvent",
    "AmdDetector",
    "MACHINE_PHRASES",
    "SCREENING_PHRASES",
]


class Verdict(str, enum.Enum):
    """What answered."""

    HUMAN = "human"
    MACHINE = "machine"
    MACHINE_END_BEEP = "machine_end_beep"
    MACHINE_END_SILENCE = "machine_end_silence"
    SCREENING = "screening"
    UNKNOWN = "unknown"


class AmdState(enum.Enum):
    """Detector state."""

    LISTENING = "listening"  # answered, no word yet
    GREETING = "greeting"    # words heard, not decided
    HUMAN = "human"          # human verdict given; only a beep within revise_ms revises it
    UNKNOWN = "unknown"      # unknown verdict given; still listening
    MACHINE = "machine"      # machine verdict given; waiting for the beep or end silence
    DONE = "done"            # final


#: Allowed state changes.
TRANSITIONS: dict[AmdState, frozenset[AmdState]] = {
    AmdState.LISTENING: frozenset({AmdState.GREETING, AmdState.UNKNOWN, AmdState.MACHINE, AmdState.DONE}),
    AmdState.GREETING: frozenset({AmdState.HUMAN, AmdState.MACHINE, AmdState.UNKNOWN, AmdState.DONE}),
    AmdState.HUMAN: frozenset({AmdState.DONE}),  # a beep (final) or revise_ms passed
    AmdState.UNKNOWN: frozenset({AmdState.GREETING, AmdState.MACHINE, AmdState.DONE}),
    AmdState.MACHINE: frozenset({AmdState.DONE}),
    AmdState.DONE: frozenset(),
}


class AmdStateError(RuntimeError):
    """A transition outside :data:`TRANSITIONS` (a bug)."""


#: Phrases that mark a machine greeting (lower case, matched on word boundaries).
MACHINE_PHRASES = (
    "leave a message", "leave your message", "leave me a message", "leave a brief message",
    "leave your name",
    "not available", "unavailable", "after the tone", "after the beep", "at the tone",
    "record your message", "can't come to the phone", "cannot come to the phone",
    "can't take your call", "cannot take your call", "voicemail", "voice mail", "mailbox",
)
#: Phrases that mark a call-screening assistant: the first two always, the others only in a
#: text with no machine phrase ("record your name and message after the tone" is voicemail).
SCREENING_PHRASES = (
    "screening", "screen your call", "say your name", "state your name", "record your name",
    "why you are calling", "why you're calling",
)


@dataclass(frozen=True, slots=True)
class AmdConfig:
    """Detector thresholds (all ms unless noted; defaults and their sources in the module doc)."""

    min_word_ms: float = 100.0
    word_gap_ms: float = 60.0
    initial_silence_ms: float = 5000.0
    after_greeting_ms: float = 800.0
    long_after_greeting_ms: float = 1200.0
    human_greeting_ms: float = 2200.0
    machine_greeting_ms: float = 5500.0
    min_voiced: float = 0.45         # voiced share of a machine greeting (0–1)
    end_silence_ms: float = 1500.0
    total_analysis_ms: float = 15000.0
    revise_ms: float = 5000.0
    max_machine_wait_ms: float = 30000.0
    min_speech_dbfs: float = -55.0   # quieter frames are never speech, dBFS
    floor_margin_db: float = 6.0     # speech frames stand this far above the noise floor, dB
    floor_rise_db_s: float = 2.0     # how fast the floor follows a louder line, dB/s


@dataclass(frozen=True, slots=True)
class AmdEvent:
    """A verdict.

    Attributes:
        verdict: What answered.
        decided_ms: When it was decided, ms from answer (end of the deciding frame).
        cues: What decided, e.g. ``("greeting_ms=820", "after_silence_ms=800", "words=2")``.
        beep_end_ms: For ``machine_end_beep``: the beep's end, ms from answer.
        final: No later verdict will follow.
    """

    verdict: Verdict
    decided_ms: float
    cues: tuple[str, ...] = ()
    beep_end_ms: float | None = None
    final: bool = False


def _phrase_re(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(p) for p in phrases) + r")\b")


_MACHINE_RE = _phrase_re(MACHINE_PHRASES)
_SCREENING_RE = _phrase_re(SCREENING_PHRASES)


@dataclass(slots=True)
class _Speech:
    """Word segmentation counters, in frames."""

    run: int = 0              # consecutive speech frames now
    loud: bool = False        # the current run has a frame well above the noise floor
    first: int = -1           # first frame of the first word
    last_end: int = -1        # frame after the last speech frame of a confirmed word
    words: int = 0
    voiced: int = 0           # frames inside confirmed words
    longest: int = 0          # longest word, frames
    word_start: int = -1


class AmdDetector:
    """The detector for one call: frames and VAD decisions in, :class:`AmdEvent` verdicts out.

    Args:
        sample_rate: Hz of the frames (8,000 or 16,000 on the phone path).
        config: Thresholds.
        frame_ms: Frame length, ms (20).

    Time is counted in frames from the first frame fed (the answer).
    """

    def __init__(self, sample_rate: int = 8000, *, config: AmdConfig | None = None,
                 frame_ms: int = 20) -> None:
        self.config = c = config or AmdConfig()
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.beeps = BeepDetector(sample_rate, frame_ms)

        def frames(ms: float) -> int:
            return max(1, int(round(ms / frame_ms)))

        self._min_word = frames(c.min_word_ms)
        self._word_gap = frames(c.word_gap_ms)
        self._initial = frames(c.initial_silence_ms)
        self._after = frames(c.after_greeting_ms)
        self._long_after = frames(c.long_after_greeting_ms)
        self._human_span = frames(c.human_greeting_ms)
        self._machine_span = frames(c.machine_greeting_ms)
        self._end_silence = frames(c.end_silence_ms)
        self._total = frames(c.total_analysis_ms)
        self._revise = frames(c.revise_ms)
        self._max_wait = frames(c.max_machine_wait_ms)
        full = 0.5 * 32768.0**2 * self.frame_samples          # energy of a full-scale sine frame
        self._min_energy = full * 10.0 ** (c.min_speech_dbfs / 10.0)
        self._margin = 10.0 ** (c.floor_margin_db / 10.0)
        self._rise = 10.0 ** (c.floor_rise_db_s * frame_ms / 1000.0 / 10.0)
        self.reset()

    def reset(self) -> None:
        """Forget everything, as at the answer."""
        self.frames = 0
        self._state = AmdState.LISTENING
        self._sp = _Speech()
        self._decided = 0
        self._noise = -1.0        # noise-floor energy (sum of squares per frame), -1 before any
        self.events: list[AmdEvent] = []
        self.beeps.reset()

    @property
    def state(self) -> AmdState:
        """The current :class:`AmdState`."""
        return self._state

    @property
    def result(self) -> AmdEvent | None:
        """The latest verdict, or None before the first."""
        return self.events[-1] if self.events else None

    @property
    def now_ms(self) -> float:
        """Audio time fed so far, ms from answer."""
        return float(self.frames * self.frame_ms)

    @property
    def words(self) -> int:
        """Words heard so far (speech runs of ``min_word_ms`` or more, apart by ``word_gap_ms``)."""
        return self._sp.words

    @property
    def silence_ms(self) -> float:
        """The callee's silence now, ms: 0 while the VAD hears speech, else since the last word
        ended (since the answer before any word). For a caller deciding whether to speak."""
        s = self._sp
        if s.run > 0:
            return 0.0
        return float((self.frames - max(0, s.last_end)) * self.frame_ms)

    def _go(self, dst: AmdState) -> None:
        if dst is not self._state and dst not in TRANSITIONS[self._state]:
            raise AmdStateError(f"{self._state.name} -> {dst.name}")
        self._state = dst

    def _emit(self, verdict: Verdict, cues: tuple[str, ...], dst: AmdState, *,
              at_ms: float | None = None, beep_end_ms: float | None = None) -> AmdEvent:
        self._go(dst)
        self._decided = self.frames
        ev = AmdEvent(verdict, self.now_ms if at_ms is None else at_ms, cues, beep_end_ms,
                      final=dst is AmdState.DONE)
        self.events.append(ev)
        return ev

    def _cues(self, *extra: str) -> tuple[str, ...]:
        s, ms = self._sp, self.frame_ms
        if s.first < 0:
            return (f"initial_silence_ms={self.frames * ms}", *extra)
        span = max(1, s.last_end - s.first)
        return (f"initial_silence_ms={s.first * ms}", f"greeting_ms={span * ms}", f"words={s.words}",
                f"voiced_pct={round(100 * s.voiced / span)}", *extra)

    def push(self, frame: np.ndarray, speech: bool) -> AmdEvent | None:
        """Feed the next frame and its VAD decision; returns a verdict when one is reached.

        Args:
            frame: int16 ``[frame_samples]`` (20 ms).
            speech: The VAD calls this frame speech.

        Raises:
            ValueError: Wrong frame shape.
        """
        if self._state is AmdState.DONE:
            self.frames += 1
            return None
        beep = self.beeps.push(frame)
        idx = self.frames
        self.frames += 1
        if beep is not None:
            return self._on_beep(beep)
        e = self.beeps.energy
        self._noise = e if self._noise < 0 or e < self._noise else self._noise * self._rise
        loud = e >= self._min_energy and e >= self._noise * self._margin
        self._track(idx, speech and not self.beeps.in_beep, loud)
        return self._decide()

    def _track(self, idx: int, speech: bool, loud: bool) -> None:
        s = self._sp
        if not speech:
            s.run = 0
            s.loud = False
            return
        s.run += 1
        s.loud = s.loud or loud
        if s.run < self._min_word or not s.loud:
            return
        if s.last_end <= idx - s.run:                  # the run becomes a word now
            start = idx - s.run + 1
            if s.first < 0:
                s.first = start
            if s.last_end < 0 or start - s.last_end >= self._word_gap:
                s.words += 1
                s.word_start = start
            s.voiced += s.run
        else:
            s.voiced += 1
        s.last_end = idx + 1
        s.longest = max(s.longest, s.last_end - s.word_start)

    def _decide(self) -> AmdEvent | None:
        st, s, now = self._state, self._sp, self.frames
        if st is AmdState.LISTENING or st is AmdState.UNKNOWN:
            if s.first >= 0:
                self._go(AmdState.GREETING)
            elif st is AmdState.LISTENING and now >= self._initial:
                return self._emit(Verdict.UNKNOWN, self._cues("no_speech"), AmdState.UNKNOWN)
            elif now >= self._total:
                return self._emit(Verdict.UNKNOWN, self._cues("no_speech"), AmdState.DONE)
            return None
        silence = now - s.last_end if s.last_end >= 0 else now - self._decided
        if st is AmdState.GREETING:
            span = s.last_end - s.first
            machine_like = span >= self._machine_span and s.voiced >= self.config.min_voiced * span
            if machine_like:
                return self._emit(Verdict.MACHINE, self._cues("long_greeting"), AmdState.MACHINE)
            if silence >= (self._after if span <= self._human_span else self._long_after):
                return self._emit(Verdict.HUMAN, self._cues(f"after_silence_ms={silence * self.frame_ms}"),
                                  AmdState.HUMAN)
            if now >= self._total:
                return self._emit(Verdict.UNKNOWN, self._cues("too_long"), AmdState.DONE)
        elif st is AmdState.MACHINE:
            if silence >= self._end_silence:
                return self._emit(Verdict.MACHINE_END_SILENCE,
                                  self._cues(f"end_silence_ms={silence * self.frame_ms}"), AmdState.DONE)
            if now - self._decided >= self._max_wait:
                return self._emit(Verdict.UNKNOWN, self._cues("greeting_did_not_end"), AmdState.DONE)
        elif st is AmdState.HUMAN and now - self._decided >= self._revise:
            self._go(AmdState.DONE)
        return None

    def _on_beep(self, beep: Beep) -> AmdEvent:
        hz = "+".join(f"{f:.0f}" for f in beep.freqs_hz)
        cue = f"beep={hz}Hz/{beep.duration_ms:.0f}ms@{beep.level_dbfs:.0f}dBFS"
        return self._emit(Verdict.MACHINE_END_BEEP, self._cues(cue), AmdState.DONE,
                          beep_end_ms=beep.end_ms)

    def hear(self, text: str, at_ms: float | None = None) -> AmdEvent | None:
        """Recognised callee text (optional cue); returns a verdict if a phrase decides one.

        A machine phrase never revises a ``human`` verdict (a person may well say "not
        available"); a screening phrase still may.

        Args:
            text: What the recogniser heard (any case and punctuation).
            at_ms: When, ms from answer (default: now).
        """
        if self._state is AmdState.DONE:
            return None
        low = re.sub(r"\s+", " ", text.lower().replace("\u2019", "'"))
        m, mm = _SCREENING_RE.search(low), _MACHINE_RE.search(low)
        if m and (mm is None or m.group(1) in SCREENING_PHRASES[:2]):
            return self._emit(Verdict.SCREENING, self._cues(f"phrase={m.group(1)}"), AmdState.DONE, at_ms=at_ms)
        m = mm
        if m and self._state is not AmdState.MACHINE and self._state is not AmdState.HUMAN:
            return self._emit(Verdict.MACHINE, self._cues(f"phrase={m.group(1)}"), AmdState.MACHINE, at_ms=at_ms)
        return None
