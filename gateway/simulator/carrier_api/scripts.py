"""What the simulated callee does when a call reaches it: the scripts and the number → script book.

A :class:`CalleeScript` is one of:

============  ==========================================================================
kind          the callee
============  ==========================================================================
person        answers, waits ``answer_pause_ms``, speaks ``lines[0]``, listens until the
              agent has spoken and gone quiet, speaks each further line the same way
voicemail     answers, plays the greeting (``lines``), the beep, then records silence
              for ``silence_ms`` (a voicemail box listening) and hangs up
screening     answers with a call-screening prompt (``lines[0]``), listens, then stays
              silent for ``silence_ms``
silence       answers and says nothing for ``silence_ms``
busy          rings, then the line is busy (no media)
no_answer     rings for ``ring_ms`` and nobody answers (no media)
failed        the carrier cannot complete the call (no media)
declined      rings, then the callee rejects the call (SIP 603; no media)
============  ==========================================================================

Audio is int16 PCM at any rate (resampled to the carrier's rate when played). Scripts built by
:func:`person`, :func:`voicemail`, … use real recordings when given and otherwise a
synthesised stand-in (:func:`synth_speech`: a voiced harmonic series in syllables, which the
gateway's VAD treats as speech, and :func:`tone` for beeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gateway.simulator.caller import Pause, Say, Step, WaitForAgent
from gateway.simulator.run import load_wav, to_rate

__all__ = [
    "ScriptKind", "CalleeScript", "ScriptBook", "ApiFault", "Line", "synth_speech", "tone", "line_from_wav",
    "person", "voicemail", "screening", "simple", "ANSWERING_KINDS", "DEFAULT_NUMBERS", "DEFAULT_NUMBERS_BY_KIND",
]

ScriptKind = Literal["person", "voicemail", "screening", "silence", "busy", "no_answer", "failed", "declined"]
#: Scripts in which the callee answers (and a media stream opens).
ANSWERING_KINDS = frozenset({"person", "voicemail", "screening", "silence"})

#: One recorded or synthesised line: (int16 samples, sample rate in Hz).
Line = tuple[np.ndarray, int]


def synth_speech(ms: int = 1600, rate: int = 8000, *, f0: float = 130.0, seed: int = 1) -> Line:
    """A speech-like stand-in: ``ms`` of 180–260 ms voiced syllables (harmonics of ``f0``
    under two vowel formants, Hann envelope) separated by 50–90 ms gaps, at about −14 dBFS."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = [np.zeros(rate // 5, np.float64)]
    total = 0
    while total < ms:
        syl = int(rng.integers(180, 260))
        n = rate * syl // 1000
        t = np.arange(n) / rate
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 3 * t))
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        f1, f2 = rng.uniform(450, 800), rng.uniform(1100, 2200)
        sig = np.zeros(n)
        for h in range(1, int(3400 // f0)):
            fh = h * f0
            gain = np.exp(-((fh - f1) / 250) ** 2) + 0.6 * np.exp(-((fh - f2) / 350) ** 2) + 0.05
            sig += gain * np.sin(h * phase)
        sig *= np.hanning(n)
        gap = np.zeros(rate * int(rng.integers(50, 90)) // 1000)
        out += [sig, gap]
        total += syl + gap.size * 1000 // rate
    out.append(np.zeros(rate // 5))
    pcm = np.concatenate(out)
    pcm *= 0.2 / (np.sqrt(np.mean(pcm**2)) + 1e-12)
    return np.clip(pcm * 32767, -32768, 32767).astype(np.int16), rate


def tone(hz: float = 1000.0, ms: int = 400, rate: int = 8000, *, dbfs: float = -10.0) -> Line:
    """A steady sine tone (a voicemail beep), 5 ms raised-cosine edges."""
    n = rate * ms // 1000
    t = np.arange(n) / rate
    sig = np.sin(2 * np.pi * hz * t) * 10 ** (dbfs / 20)
    edge = min(n // 2, rate // 200)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
    sig[:edge] *= ramp
    sig[n - edge:] *= ramp[::-1]
    return (sig * 32767).astype(np.int16), rate


def line_from_wav(path: Path | str) -> Line:
    """A recorded line (PCM16 WAV, any rate)."""
    return load_wav(path)


@dataclass(frozen=True)
class CalleeScript:
    """What the callee does (see the module table).

    Attributes:
        kind: the script.
        lines: what the callee says, in order (person / screening: one line per turn;
            voicemail: the greeting, played back to back).
        beep: the voicemail's beep (voicemail only).
        ring_ms: how long it rings before answering, rejecting or giving up (ms; ``no_answer``
            rings ``min(ring_ms, the request's ring timeout)``).
        answer_pause_ms: silence after answering before the first line (ms).
        silence_ms: voicemail / screening / silence: how long the callee stays on the line
            silent at the end (ms).
        listen_timeout_s: person / screening: longest wait for the agent to speak and finish.
        duplicate: send the ringing callback twice (carriers retry).
        late: after the final callback, send an earlier one again (out of order).
    """

    kind: ScriptKind
    lines: tuple[Line, ...] = ()
    beep: Line | None = None
    ring_ms: int = 300
    answer_pause_ms: int = 300
    silence_ms: int = 2000
    listen_timeout_s: float = 20.0
    duplicate: bool = True
    late: bool = True

    @property
    def answers(self) -> bool:
        return self.kind in ANSWERING_KINDS

    def steps(self, rate: int) -> list[Step]:
        """The caller steps that play this script at ``rate`` Hz (answering scripts only)."""
        say = [Say(to_rate(pcm, r, rate), f"line{i}") for i, (pcm, r) in enumerate(self.lines)]
        steps: list[Step] = [Pause(self.answer_pause_ms)]
        listen = WaitForAgent(timeout_s=self.listen_timeout_s, quiet_ms=1200)
        if self.kind == "person":
            for s in say:
                steps += [s, listen]
        elif self.kind == "voicemail":
            steps += say
            if self.beep is not None:
                steps.append(Say(to_rate(self.beep[0], self.beep[1], rate), "beep"))
            steps.append(Pause(self.silence_ms))
        elif self.kind == "screening":
            steps += say[:1] + [listen, Pause(self.silence_ms)]
        elif self.kind == "silence":
            steps.append(Pause(self.silence_ms))
        return steps


def person(*lines: Line, **kw) -> CalleeScript:
    """A person: each of ``lines`` (default: two synthesised lines) then a listen."""
    return CalleeScript("person", lines or (synth_speech(1400, seed=1), synth_speech(1200, seed=2)), **kw)


def voicemail(*greeting: Line, beep: Line | None = None, **kw) -> CalleeScript:
    """A voicemail box: the greeting (default synthesised), the beep (default 1 kHz 400 ms)."""
    return CalleeScript("voicemail", greeting or (synth_speech(3500, seed=3),), beep or tone(), **kw)


def screening(prompt: Line | None = None, **kw) -> CalleeScript:
    """A call-screening assistant asking who is calling (default synthesised prompt)."""
    return CalleeScript("screening", (prompt or synth_speech(2500, seed=4),), **kw)


def simple(kind: ScriptKind, **kw) -> CalleeScript:
    """A script with no audio of its own (``silence``, ``busy``, ``no_answer``, ``failed``, ``declined``)."""
    return CalleeScript(kind, **kw)


@dataclass(frozen=True)
class ApiFault:
    """Make the carrier's REST API refuse a call to this number (in the carrier's error format).

    Attributes:
        status: HTTP status (4xx / 5xx).
        code: the carrier's error code (Twilio ``21211``, …); the HTTP status if it has none.
        message: the carrier's message.
    """

    status: int
    code: str
    message: str


#: Numbers with a fixed meaning in the simulator (fictional +1 555 01xx range).
DEFAULT_NUMBERS: dict[str, ScriptKind] = {
    "+15550100001": "person",
    "+15550100002": "voicemail",
    "+15550100003": "screening",
    "+15550100004": "silence",
    "+15550100005": "busy",
    "+15550100006": "no_answer",
    "+15550100007": "failed",
    "+15550100008": "declined",
}
DEFAULT_NUMBERS_BY_KIND: dict[str, str] = {kind: number for number, kind in DEFAULT_NUMBERS.items()}


@dataclass
class ScriptBook:
    """Number → what the callee does (a :class:`CalleeScript`) or how the API refuses (an
    :class:`ApiFault`). Numbers not in the book get ``default``; :data:`DEFAULT_NUMBERS` are
    pre-filled with synthesised scripts unless given."""

    entries: dict[str, CalleeScript | ApiFault] = field(default_factory=dict)
    default: CalleeScript = field(default_factory=person)

    def __post_init__(self) -> None:
        builders = {"person": person, "voicemail": voicemail, "screening": screening}
        for number, kind in DEFAULT_NUMBERS.items():
            self.entries.setdefault(number, builders.get(kind, lambda k=kind: simple(k))())

    def add(self, number: str, entry: CalleeScript | ApiFault) -> None:
        self.entries[number] = entry

    def lookup(self, number: str) -> CalleeScript | ApiFault:
        return self.entries.get(number, self.default)

    @classmethod
    def of(cls, mapping: Mapping[str, CalleeScript | ApiFault]) -> ScriptBook:
        return cls(dict(mapping))

    @classmethod
    def from_recordings(cls, audio: Path | str) -> ScriptBook:
        """The :data:`DEFAULT_NUMBERS` book with real recordings from ``audio`` (the layout of
        ``../shared/audio``): the person says ``caller/hello`` then ``caller/confirm``; the
        voicemail plays ``voicemail/vm-nobodyavail`` and ``voicemail/beep``; the other scripts
        stay as they are (there is no recorded screening prompt: it stays synthesised).

        Raises:
            FileNotFoundError: a recording is missing.
        """
        root = Path(audio)
        book = cls()
        book.add(DEFAULT_NUMBERS_BY_KIND["person"],
                 person(line_from_wav(root / "caller/hello.wav"), line_from_wav(root / "caller/confirm.wav")))
        book.add(DEFAULT_NUMBERS_BY_KIND["voicemail"],
                 voicemail(line_from_wav(root / "voicemail/vm-nobodyavail.wav"),
                           beep=line_from_wav(root / "voicemail/beep.wav")))
        book.default = book.lookup(DEFAULT_NUMBERS_BY_KIND["person"])  # type: ignore[assignment]
        return book
