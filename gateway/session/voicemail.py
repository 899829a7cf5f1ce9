"""Voicemail on an outbound call: answering-machine detection, the greeting hold, the action.

:class:`VoicemailPolicy` runs :class:`~gateway.audio.amd_runner.AmdRunner` (its own WebRTC VAD, at the
carrier's rate: 8 or 16 kHz; other rates are resampled to 16 kHz) on the callee's audio from the
stream's first frame, and feeds it the caller's transcripts (phrases such as "leave a message").
Its verdicts (:class:`~gateway.audio.amd.Verdict`) drive the call:

- **hold** (``hold_greeting_ms > 0``): the agent's first audio is HELD until a verdict, or until
  ``hold_greeting_ms`` after the stream's start (then ``ReleaseAudio``: the bound), so a person
  hears the agent as soon as they finish "Hello?" and a machine hears nothing. The bound never
  makes the agent talk over the callee: if they are speaking when it passes, the release waits
  for their first pause of :data:`PAUSE_MS`, at most the detector's ``machine_greeting_ms``
  (5.5 s) more: by then it has called a greeting that went on without such a pause a machine.
  On the generated openings of ``tests/audio/fixtures/amd`` (holds of 1–4 s) the greetings
  that run on past 5.5 s are all decided before any release; the machines released early all
  pause first, as a person would (``machine-paused`` 1.6 s before its verdict, the gap before
  a beep 0.16–0.3 s, ``machine-sorry-2000`` 40 ms), and are then stopped; people with a 4–5 s
  business greeting hear the agent at their pause instead of over their last words. With no
  caller audio arriving (or lagging the clock by 500 ms) the bound goes by the clock, on the
  tick. With ``hold_greeting_ms == 0`` the agent speaks at once and is stopped if a machine is
  found;
- ``human``, ``unknown`` (nobody spoke yet) and ``screening`` (a person's call-screening
  assistant: it wants an answer, so it is treated like a person; recorded as its verdict):
  ``ReleaseAudio``, and the call goes on;
- a machine (``machine``, ``machine_end_beep``, ``machine_end_silence``): ``StopAgentAudio`` (the
  carrier's buffer cleared, queued and held audio dropped, the model's reply cut), then
  ``hangup``: ``EndCall("voicemail_hangup", status="voicemail")``; or ``leave_message``: the
  model stops hearing the callee (``MuteCaller``, so it does not answer the greeting) and agent
  audio is DROPPED until the greeting ends (``machine_end_beep`` / ``machine_end_silence``;
  bounded by :attr:`AmdConfig.max_machine_wait_ms` <gateway.audio.amd.AmdConfig>: past it the
  call ends ``voicemail_hangup``), then ``StopAgentAudio`` (cancels replies in flight),
  ``EndAfterPlayout(EndCall("voicemail_message_left", status="voicemail"), limit)`` (first, so
  the limit runs while the bridge is asked), ``Say(message)`` (a bridge that cannot speak a
  line, or does not take it within the session's ``SAY_TIMEOUT_S``, ends the call
  ``voicemail_hangup``), and agent audio ALLOWED again (except the replies cut before).

**Never hang up on a human**: once ``human`` has been given, only a beep
(``machine_end_beep``) may act as a machine, and only within the detector's ``revise_ms`` of the
verdict (a beep right after a short greeting) and before the callee answers the agent (a word
begun after both the verdict and the agent's first audio: a machine does not answer). Phrases
never revise it ("she's not available right now, can I take a message?" is a receptionist);
any other machine verdict after ``human`` is only recorded. The detector is fed until its
final verdict, or until ``total_analysis_ms`` of audio unless it waits for a machine greeting's
end; then :attr:`VoicemailPolicy.listening` turns false and the session stops decoding frames for
it. Verdicts are journal events ``amd`` (``verdict``, ``decidedMs``, ``cues``, ``beepEndMs``,
``final``; ms of callee audio from the stream's first frame); :meth:`VoicemailPolicy.outcome`
is the record's ``voicemail`` dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.audio.amd import AmdConfig, AmdEvent, AmdState, Verdict
from gateway.audio.amd_runner import AmdRunner
from gateway.codecs.transcode import Transcoder
from gateway.formats import AudioFormat, Encoding
from gateway.session.policies import (
    Action, AudioGate, EndAfterPlayout, EndCall, MuteCaller, Note, Policy, ReleaseAudio, Say, StopAgentAudio,
)  # fmt: skip

__all__ = ["VoicemailConfig", "VoicemailPolicy", "ACTIONS", "MACHINE_VERDICTS", "PAUSE_MS"]

#: What to do on a machine.
ACTIONS = ("hangup", "leave_message")
#: Verdicts that mean a machine answered.
MACHINE_VERDICTS = frozenset({Verdict.MACHINE, Verdict.MACHINE_END_BEEP, Verdict.MACHINE_END_SILENCE})
_GREETING_ENDS = frozenset({Verdict.MACHINE_END_BEEP, Verdict.MACHINE_END_SILENCE})
_NONE: tuple[Action, ...] = ()
_DEFAULT_HOLD_MS = 2000
#: A held greeting released by its bound waits for a pause this long (ms) if the callee is
#: speaking (at most ``AmdConfig.machine_greeting_ms`` past the bound).
PAUSE_MS = 400.0
#: Caller audio this far (ms) behind the clock counts as none arriving (the bound goes by the clock).
_AUDIO_LAG_MS = 500.0


@dataclass(frozen=True, slots=True)
class VoicemailConfig:
    """A call's voicemail settings (the ``CallConfig.voicemail`` dict, snake_case).

    Attributes:
        detect: run the detector at all.
        action: on a machine, ``hangup`` or ``leave_message``.
        message: what to say after the beep (``leave_message``).
        hold_greeting_ms: hold the agent's first audio until a verdict, at most this long after
            the stream's start (ms); 0: speak at once.

    Raises:
        ValueError: an unknown action, a negative hold, or ``leave_message`` without a message.
    """

    detect: bool = True
    action: str = "hangup"
    message: str = ""
    hold_greeting_ms: int = _DEFAULT_HOLD_MS

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"voicemail action must be one of {ACTIONS}, got {self.action!r}")
        if self.hold_greeting_ms < 0:
            raise ValueError("hold_greeting_ms must be >= 0")
        if self.action == "leave_message" and not self.message.strip():
            raise ValueError("leave_message needs a message")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None) -> VoicemailConfig | None:
        """From ``{"detect", "action", "message", "hold_greeting_ms"}`` (``holdGreetingMs`` also
        read); ``None`` for ``None``. Missing keys take the defaults. Raises ValueError as above."""
        if d is None:
            return None
        hold = d.get("hold_greeting_ms", d.get("holdGreetingMs", _DEFAULT_HOLD_MS))
        return cls(detect=bool(d.get("detect", True)), action=str(d.get("action", "hangup")),
                   message=str(d.get("message") or ""), hold_greeting_ms=int(hold))  # fmt: skip


class VoicemailPolicy(Policy):
    """Answering-machine detection and the voicemail action for one call (see the module doc).

    Args:
        config: the call's settings.
        sample_rate: the carrier's rate (Hz) of the frames ``on_caller_audio`` gets.
        amd: detector thresholds (default :class:`~gateway.audio.amd.AmdConfig`).
        message_limit_s: longest wait (s) for the message to play before the call ends anyway
            (default 15 s plus 0.15 s per character of the message).

    Attributes:
        events: every verdict so far.
        action: ``none``, ``released`` (the held greeting was let through), ``hung_up`` or
            ``message_left`` (the message was asked for).
    """

    gates_audio = True
    hears_audio = True

    def __init__(self, config: VoicemailConfig, *, sample_rate: int = 8000, amd: AmdConfig | None = None,
                 message_limit_s: float | None = None) -> None:  # fmt: skip
        self.config = config
        rate = sample_rate if sample_rate in (8000, 16000) else 16000
        self._resample = None if rate == sample_rate else Transcoder(
            AudioFormat(Encoding.L16, sample_rate), AudioFormat(Encoding.L16, rate), aligned=True)
        self.runner = AmdRunner(rate, config=amd)
        self._amd = self.runner.detector.config
        self._limit_s = message_limit_s if message_limit_s is not None else 15.0 + 0.15 * len(config.message)
        self.events: list[AmdEvent] = []
        self.action = "none"
        self.phase = "detecting"  # detecting | human | screening | machine | message | ended
        self._holding = config.hold_greeting_ms > 0
        self._started_s: float | None = None
        self._now_s: float | None = None
        self._machine_s: float | None = None  # clock time the wait for the greeting's end began
        self._human_ms: float | None = None
        self._agent_began = False  # agent audio was let through (allowed or released)
        self._answer_base: int | None = None  # detector words when both human and agent audio began
        self._cut_items: set[str] = set()  # replies held or dropped before the message

    # ------------------------------------------------------------------ hooks
    @property
    def listening(self) -> bool:
        det = self.runner.detector
        if self.phase in ("message", "ended") or det.state is AmdState.DONE:
            return False
        return det.now_ms < self._amd.total_analysis_ms or det.state is AmdState.MACHINE

    def on_started(self, now_s: float) -> Sequence[Action]:
        self._started_s = self._now_s = now_s
        return _NONE

    def on_caller_audio(self, pcm: np.ndarray, now_ms: float) -> Sequence[Action]:
        if self._resample is not None:
            pcm = np.frombuffer(self._resample.process(pcm.tobytes()), dtype="<i2")
        out: list[Action] = []
        for event in self.runner.process(pcm):
            out += self._verdict(event)
        det = self.runner.detector
        if self._holding and det.now_ms >= self.config.hold_greeting_ms:
            past_ms = det.now_ms - self.config.hold_greeting_ms
            if det.silence_ms >= PAUSE_MS:
                out += self._release("hold_bound" if past_ms < det.frame_ms else "callee_pause")
            elif past_ms >= self._amd.machine_greeting_ms:
                out += self._release("hold_overrun")
        return out

    def on_caller_text(self, text: str, now_ms: float) -> Sequence[Action]:
        event = self.runner.hear(text)
        return self._verdict(event) if event is not None else _NONE

    def on_agent_audio(self, item_id: str, now_ms: float) -> AudioGate:
        phase = self.phase
        if phase == "message":
            return AudioGate.DROP if item_id in self._cut_items else AudioGate.ALLOW
        if phase in ("machine", "ended"):
            self._cut_items.add(item_id)
            return AudioGate.DROP
        if self._holding:
            self._cut_items.add(item_id)
            return AudioGate.HOLD
        self._agent_audio_began()
        return AudioGate.ALLOW

    def on_tick(self, now_s: float, last_activity_s: float) -> Sequence[Action]:
        self._now_s = now_s
        started = self._started_s if self._started_s is not None else now_s
        elapsed_ms = (now_s - started) * 1000.0
        if self._holding and elapsed_ms >= self.config.hold_greeting_ms:
            if self.runner.detector.now_ms < elapsed_ms - _AUDIO_LAG_MS:  # no caller audio: by the clock
                return self._release("hold_bound")
            if elapsed_ms >= self.config.hold_greeting_ms + self._amd.machine_greeting_ms + _AUDIO_LAG_MS:
                return self._release("hold_overrun")
        if self.phase == "machine":
            if self._machine_s is None:
                self._machine_s = now_s
            elif (now_s - self._machine_s) * 1000.0 >= self._amd.max_machine_wait_ms:
                return (Note("voicemail", {"action": "hung_up", "why": "greeting_did_not_end"}), *self._hang_up())
        return _NONE

    # ------------------------------------------------------------------ verdicts
    def _verdict(self, event: AmdEvent) -> list[Action]:
        """Record ``event`` and act on it."""
        self.events.append(event)
        out: list[Action] = [Note("amd", _event_dict(event))]
        verdict = event.verdict
        if self.phase in ("message", "ended"):
            return out
        if verdict in MACHINE_VERDICTS:
            if self.phase == "screening" or (self._human_ms is not None and not self._revises(event)):
                return out  # never hang up on a person: the machine verdict is only recorded
            return out + self._machine(event)
        if verdict is Verdict.HUMAN:
            self._human_ms = event.decided_ms
            self.phase = "human"
            self._mark_answer_base()
            return out + self._release("human")
        if verdict is Verdict.SCREENING:
            muted = self.phase == "machine"
            self.phase = "screening"
            return out + self._release("screening") + ([MuteCaller(False)] if muted else [])
        if self.phase == "machine":  # unknown while waiting for the greeting's end: it never ended
            return out + [Note("voicemail", {"action": "hung_up", "why": "greeting_did_not_end"}), *self._hang_up()]
        return out + self._release("unknown")

    def _revises(self, event: AmdEvent) -> bool:
        """Whether a machine verdict after ``human`` acts: a beep, within ``revise_ms`` of the
        verdict, with no word of the callee begun since the agent's audio (and the verdict)."""
        assert self._human_ms is not None
        if event.verdict is not Verdict.MACHINE_END_BEEP or event.decided_ms - self._human_ms > self._amd.revise_ms:
            return False
        return self._answer_base is None or self.runner.detector.words <= self._answer_base

    def _agent_audio_began(self) -> None:
        if not self._agent_began:
            self._agent_began = True
            self._mark_answer_base()

    def _mark_answer_base(self) -> None:
        """Once both ``human`` is given and the agent's audio began: later words answer the agent."""
        if self._agent_began and self._human_ms is not None and self._answer_base is None:
            self._answer_base = self.runner.detector.words

    def _machine(self, event: AmdEvent) -> list[Action]:
        self._holding = False
        out: list[Action] = [StopAgentAudio(f"voicemail_{event.verdict.value}")]
        if self.config.action == "hangup":
            return out + self._hang_up()
        if event.verdict in _GREETING_ENDS:
            return out + self._leave_message()
        if self.phase != "machine":
            self.phase = "machine"
            self._machine_s = self._now_s
            out.append(MuteCaller(True))
        return out

    def _hang_up(self) -> list[Action]:
        self.phase = "ended"
        self.action = "hung_up"
        return [EndCall("voicemail_hangup", status="voicemail")]

    def _leave_message(self) -> list[Action]:
        self.phase = "message"
        self.action = "message_left"
        left = EndCall("voicemail_message_left", status="voicemail")
        return [  # the limit's clock starts before the bridge is asked to speak
            MuteCaller(True),
            EndAfterPlayout(left, self._limit_s),
            Say(self.config.message, or_else=EndCall("voicemail_hangup", status="voicemail")),
        ]

    def _release(self, why: str) -> list[Action]:
        if not self._holding:
            return []
        self._holding = False
        if self.action == "none":
            self.action = "released"
        if self._cut_items:  # held agent audio plays now
            self._agent_audio_began()
        return [Note("greeting_released", {"why": why}), ReleaseAudio()]

    # ------------------------------------------------------------------ outcome
    def outcome(self, end_reason: str | None = None) -> dict[str, Any]:
        """The record's ``voicemail`` dict: ``{"verdict", "decidedMs", "cues", "beepEndMs",
        "action", "events"}`` (the latest verdict, or ``None`` and ``[]`` before any; ms of
        callee audio from the stream's first frame). ``end_reason`` ``voicemail_hangup`` (a
        message the bridge could not say) makes the action ``hung_up``."""
        last = self.events[-1] if self.events else None
        beep = next((e.beep_end_ms for e in reversed(self.events) if e.beep_end_ms is not None), None)
        action = "hung_up" if end_reason == "voicemail_hangup" else self.action
        return {
            "verdict": last.verdict.value if last else None,
            "decidedMs": round(last.decided_ms) if last else None,
            "cues": list(last.cues) if last else [],
            "beepEndMs": round(beep) if beep is not None else None,
            "action": action,
            "events": [_event_dict(e) for e in self.events],
        }


def _event_dict(event: AmdEvent) -> dict[str, Any]:
    return {
        "verdict": event.verdict.value,
        "decidedMs": round(event.decided_ms),
        "cues": list(event.cues),
        "beepEndMs": round(event.beep_end_ms) if event.beep_end_ms is not None else None,
        "final": event.final,
    }
