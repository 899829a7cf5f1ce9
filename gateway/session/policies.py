"""Call policies: the rules that decide, on the call's clock, when a call ends or what it does.

A policy is a small synchronous object the session calls at fixed points (the hooks of
:class:`Policy`); it never awaits and never touches a socket. It answers with *actions*
(:class:`EndCall`, :class:`Say`, :class:`Note`, :class:`ReleaseAudio`) that the session, the
call's one asyncio owner, carries out in order. The hooks:

- ``on_started(now_s)``: the carrier's stream started (the bridge is up);
- ``on_vad(event, now_ms)``: the caller's VAD confirmed speech (:class:`~gateway.vadrun.VadStart`)
  or its end (:class:`~gateway.vadrun.VadEnd`);
- ``on_agent_audio(item_id, now_ms)``: agent audio of ``item_id`` is about to be queued for the
  caller; answer :attr:`AudioGate.ALLOW`, :attr:`AudioGate.HOLD` (the session keeps it, and
  the ends of its items, in order, until a policy returns :class:`ReleaseAudio`; the caller
  hears none of it, so a barge-in does not cut it) or :attr:`AudioGate.DROP`. The strictest
  answer wins (DROP, then HOLD). Only policies with ``gates_audio = True`` are asked, so the
  agent's audio path costs nothing otherwise;
- ``on_tick(now_s, last_activity_s)``: every :data:`TICK_S` seconds; ``last_activity_s`` is the
  clock time of the call's last activity (caller speech start or end, a transcript turn, agent
  audio playing);
- ``on_caller_audio(pcm, now_ms)``: each inbound caller frame, decoded to int16 PCM at the
  carrier's rate; and ``on_caller_text(text, now_ms)``: each caller transcript (the model's
  ``Transcript`` of role ``user``). Both only for policies with ``hears_audio = True`` and only
  while their :attr:`Policy.listening` is true: once no policy listens, a frame costs nothing.

Actions beyond ending and speaking: :class:`StopAgentAudio` (stop the agent at once, as a
barge-in does, but not counted as one), :class:`EndAfterPlayout` (end the call once the audio
that follows has played), :class:`PlayDtmf` (in-band ITU-T Q.23 tones, an agent audio item of
their own) and :class:`MuteCaller` (the model stops hearing the caller: no caller audio, no turn
events, no barge-in, e.g. while a voicemail greeting plays).

:class:`TimerPolicy` (``maxDuration``, inactivity prompt and hang-up) is the first policy;
:class:`~gateway.session.control.ControlPolicy` (the API's hang-up and DTMF requests) and
:class:`~gateway.session.voicemail.VoicemailPolicy` (answering-machine detection, the greeting
hold and the voicemail action) plug in the same way.

Pure and synchronous: time comes in from the session's clock.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gateway.session.common import CallPolicy
from gateway.vadrun import VadEnd, VadStart

__all__ = ["Policy", "TimerPolicy", "AudioGate", "Action", "EndCall", "Say", "Note", "ReleaseAudio",
           "StopAgentAudio", "EndAfterPlayout", "PlayDtmf", "MuteCaller", "TICK_S"]  # fmt: skip

#: Seconds between two ``on_tick`` calls.
TICK_S = 0.25


class AudioGate(enum.Enum):
    """What happens to agent audio a policy was asked about (see ``on_agent_audio``)."""

    ALLOW = "allow"
    HOLD = "hold"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class EndCall:
    """End the call: ``status`` ``completed``, ``voicemail`` or ``failed`` (then with ``code``
    and ``message``)."""

    reason: str
    status: str = "completed"
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Say:
    """Ask the model to say ``text``; if it cannot (``NotImplementedError``) or does not take it
    within the session's ``SAY_TIMEOUT_S`` (5 s), do ``or_else``."""

    text: str
    or_else: EndCall | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """Add an event ``kind`` with ``data`` to the call's record."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReleaseAudio:
    """Let the agent audio held by ``HOLD`` play (in the order it came), and stop holding."""


@dataclass(frozen=True, slots=True)
class StopAgentAudio:
    """Stop the agent now: the carrier's ``clear``, queued and held agent audio dropped, the
    model's reply cancelled and its memory cut to what the caller heard
    (``bridge.interrupt(item, heard_ms)``); journal event ``agent_stopped`` with ``reason``.
    Not a barge-in (not counted as one)."""

    reason: str


@dataclass(frozen=True, slots=True)
class EndAfterPlayout:
    """Do ``end`` once the agent audio queued after this action has played (and any playing
    when it was given): some audio playing then or queued since, every item queued since
    finished by the model, the carrier's buffer played out and no audio held; or after
    ``limit_s`` seconds whatever happened. Checked on each tick (≤ ``TICK_S`` late)."""

    end: EndCall
    limit_s: float


@dataclass(frozen=True, slots=True)
class PlayDtmf:
    """Send ``digits`` (``0-9 * # A-D``) as in-band ITU-T Q.23 tones (100 ms on, 100 ms off),
    queued after the agent audio already queued, as an agent audio item of its own; journal
    event ``dtmf_sent``."""

    digits: str


@dataclass(frozen=True, slots=True)
class MuteCaller:
    """``muted``: the model stops hearing the caller (no caller audio, no speech-start or
    end-of-turn events) and caller speech no longer barges in; ``False`` undoes it. The VAD,
    the recording and the policies still get the caller's audio."""

    muted: bool = True


Action = EndCall | Say | Note | ReleaseAudio | StopAgentAudio | EndAfterPlayout | PlayDtmf | MuteCaller
_NONE: tuple[Action, ...] = ()


class Policy:
    """A call policy: every hook is optional (the defaults do nothing and allow all audio).

    Attributes:
        gates_audio: whether ``on_agent_audio`` is to be asked about agent audio.
        hears_audio: whether ``on_caller_audio`` and ``on_caller_text`` are to be called
            (while :attr:`listening`).
    """

    gates_audio: ClassVar[bool] = False
    hears_audio: ClassVar[bool] = False

    @property
    def listening(self) -> bool:
        """Whether this policy still wants the caller's audio and text (read once per frame;
        once it is false the session stops asking it, for the rest of the call)."""
        return self.hears_audio

    def on_started(self, now_s: float) -> Sequence[Action]:
        """The stream started at clock time ``now_s`` (s)."""
        return _NONE

    def on_vad(self, event: VadStart | VadEnd, now_ms: float) -> Sequence[Action]:
        """The caller's VAD event, at ``now_ms`` (ms from the call's start)."""
        return _NONE

    def on_agent_audio(self, item_id: str, now_ms: float) -> AudioGate:
        """Agent audio of ``item_id`` is about to play (asked only if :attr:`gates_audio`)."""
        return AudioGate.ALLOW

    def on_tick(self, now_s: float, last_activity_s: float) -> Sequence[Action]:
        """A tick at clock time ``now_s``; the call was last active at ``last_activity_s`` (s)."""
        return _NONE

    def on_caller_audio(self, pcm: np.ndarray, now_ms: float) -> Sequence[Action]:
        """One caller frame: int16 ``[n]`` PCM at the carrier's rate (asked if :attr:`hears_audio`)."""
        return _NONE

    def on_caller_text(self, text: str, now_ms: float) -> Sequence[Action]:
        """What the caller said, as the model transcribed it (asked if :attr:`hears_audio`)."""
        return _NONE


class TimerPolicy(Policy):
    """``maxDuration`` and inactivity: hang up, or (``prompt``) ask once and then hang up.

    Args:
        policy: the call's limits (s) and inactivity action.
        started_at: clock time (s) the call's duration counts from.

    ``on_tick`` returns ``EndCall("max_duration")`` once the call has lasted
    ``max_duration_s``; after ``inactivity_timeout_s`` without activity, ``EndCall("inactivity")``
    or, the first time with ``inactivity_action == "prompt"``, an ``inactivity_prompt`` note and
    ``Say(prompt)`` (ending the call if the model cannot say it); the prompt restarts the
    inactivity count.
    """

    def __init__(self, policy: CallPolicy, started_at: float) -> None:
        self._policy = policy
        self._started_at = started_at
        self._prompted_at: float | None = None

    def on_tick(self, now_s: float, last_activity_s: float) -> Sequence[Action]:
        policy = self._policy
        if now_s - self._started_at >= policy.max_duration_s:
            return (EndCall("max_duration"),)
        if self._prompted_at is not None:
            last_activity_s = max(last_activity_s, self._prompted_at)
        if now_s - last_activity_s < policy.inactivity_timeout_s:
            return _NONE
        if policy.inactivity_action == "prompt" and self._prompted_at is None:
            self._prompted_at = now_s
            end = EndCall("inactivity")
            return (Note("inactivity_prompt"), Say(policy.inactivity_prompt, or_else=end))
        return (EndCall("inactivity"),)
