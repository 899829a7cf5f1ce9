"""Control requests from the app (the REST API) to one live call: hang up, send DTMF, say a
line, mute or unmute the agent.

:class:`ControlPolicy` is always present on a :class:`~gateway.session.call.CallSession`
(``session.control``), so the app can do ``services.live[call_id].control.hang_up()`` or
``.play_dtmf("123#")``. A request is queued and returns at once; the session's control task
wakes on it and carries it out as a policy action (``EndCall``, ``PlayDtmf``) in the call's own
task. Latency: the next turn of the event loop (no tick to wait for); the on-tick drain is only
a fallback. Requests made before the stream started are carried out once it has (DTMF then
plays at once; a hang-up before the start is :meth:`CallSession.request_end`'s job).

Bounded per call: at most :data:`MAX_PENDING` requests wait to be carried out (before the stream
starts nothing drains them), and the tones asked for reach at most :data:`MAX_DTMF_BACKLOG_S`
ahead of the call's clock (200 ms a digit, back to back: what the playout would queue); a DTMF
request past either bound raises :class:`ControlBusy`, which the API answers 429. A hang-up is
always taken (it supersedes the rest), and :attr:`requests` keeps only the latest
:data:`MAX_KEPT_REQUESTS`.

:meth:`ControlPolicy.say` asks the model to speak a line (the session's ``Say`` action, bounded
by its ``SAY_TIMEOUT_S``). :meth:`ControlPolicy.mute_agent` silences the agent at once: what it
is saying stops (``StopAgentAudio``, as a barge-in cuts it, not counted as one) and its audio is
dropped, never sent, until :meth:`ControlPolicy.unmute_agent`, which first stops (as above) what
the agent said meanwhile, if anything, so its turns show 0 ms heard and the model knows the
caller heard none of it. The model hears the caller throughout (journal events ``agent_muted``
/ ``agent_unmuted``).
Both are bounded by :data:`MAX_PENDING` like DTMF.

Not thread-safe: call it from the event loop that runs the call (an API route handler is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from gateway.audio.tones import DTMF_KEYS
from gateway.clock import Clock, MonotonicClock
from gateway.session.agent import DTMF_OFF_MS, DTMF_ON_MS
from gateway.session.policies import Action, AudioGate, EndCall, Note, PlayDtmf, Policy, Say, StopAgentAudio

__all__ = [
    "ControlBusy", "ControlPolicy", "DTMF_DIGITS", "MAX_DTMF_BACKLOG_S", "MAX_DTMF_DIGITS", "MAX_KEPT_REQUESTS",
    "MAX_PENDING", "MAX_SAY_CHARS",
]  # fmt: skip

#: Keys :meth:`ControlPolicy.play_dtmf` takes (ITU-T Q.23 keypad), upper case.
DTMF_DIGITS = frozenset("".join(DTMF_KEYS))
#: At most this many digits per request (each takes 200 ms of playout).
MAX_DTMF_DIGITS = 64
#: At most this many characters in one :meth:`ControlPolicy.say` line.
MAX_SAY_CHARS = 2000
#: At most this many requests wait to be carried out; more raise :class:`ControlBusy`.
MAX_PENDING = 32
#: :attr:`ControlPolicy.requests` keeps the latest this many.
MAX_KEPT_REQUESTS = 32
#: Tones asked for may reach this far (s) ahead of the clock; more raise :class:`ControlBusy`.
MAX_DTMF_BACKLOG_S = 60.0
_DIGIT_S = (DTMF_ON_MS + DTMF_OFF_MS) / 1000.0


class ControlBusy(RuntimeError):
    """:data:`MAX_PENDING` requests already wait to be carried out (e.g. the call's stream has
    not started yet), or the tones asked for would reach more than :data:`MAX_DTMF_BACKLOG_S`
    ahead: this one is refused (the API answers 429 ``too_many_requests``)."""


class ControlPolicy(Policy):
    """The app's requests to one call, as actions the session carries out.

    Args:
        clock: the call's clock, for the tones' backlog (default: the real one).

    Attributes:
        requests: the latest :data:`MAX_KEPT_REQUESTS` requests taken, ``("hang_up", reason)``,
            ``("play_dtmf", digits)``, ``("say", text)``, ``("mute_agent", "")`` or
            ``("unmute_agent", "")`` (for the record and tests).
        taken: how many requests were taken in all.
        agent_muted: the agent's audio is dropped (:meth:`mute_agent`).
    """

    #: Asked about each piece of agent audio: dropped while the agent is muted.
    gates_audio: ClassVar[bool] = True

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or MonotonicClock()
        self._tones_until = 0.0  # clock time the tones asked for so far would have played by
        self._queue: list[Action] = []
        self._ready = asyncio.Event()
        self._ended = False
        self.requests: list[tuple[str, str]] = []
        self.taken = 0
        self.agent_muted = False
        self._dropped = False  # agent audio was dropped since the mute

    def hang_up(self, reason: str = "api_hangup") -> None:
        """End the call (``completed``, end reason ``reason``) as soon as the session can.

        Later requests are ignored once a hang-up is queued. Raises ValueError for an empty
        reason.
        """
        if not reason:
            raise ValueError("a hang-up needs a reason")
        if self._ended:
            return
        self._ended = True
        self._push(EndCall(reason), ("hang_up", reason))

    def play_dtmf(self, digits: str) -> None:
        """Send ``digits`` (``0-9 * # A-D``, case-insensitive) to the callee: the carrier's own
        stream message where it has one (Plivo ``sendDTMF``), else in-band ITU-T Q.23 tones.

        Raises:
            ValueError: no digits, more than :data:`MAX_DTMF_DIGITS`, or a character that is
                not a DTMF key.
            ControlBusy: :data:`MAX_PENDING` requests already wait, or the tones would reach
                more than :data:`MAX_DTMF_BACKLOG_S` ahead.
        """
        keys = digits.upper()
        if not keys or len(keys) > MAX_DTMF_DIGITS or not set(keys) <= DTMF_DIGITS:
            raise ValueError(f"DTMF digits must be 1-{MAX_DTMF_DIGITS} of 0-9 * # A-D, got {digits!r}")
        if len(self._queue) >= MAX_PENDING:
            raise ControlBusy(f"{MAX_PENDING} control requests already wait to be carried out")
        now = self._clock.now()
        until = max(now, self._tones_until) + len(keys) * _DIGIT_S
        if until - now > MAX_DTMF_BACKLOG_S:
            raise ControlBusy(f"the DTMF asked for already reaches {self._tones_until - now:.0f} s ahead")
        if not self._ended:
            self._tones_until = until
            self._push(PlayDtmf(keys), ("play_dtmf", keys))

    def say(self, text: str) -> None:
        """Have the agent say ``text`` now (the model speaks it; a muted agent is not heard).

        Raises:
            ValueError: empty (or blank) or longer than :data:`MAX_SAY_CHARS`.
            ControlBusy: :data:`MAX_PENDING` requests already wait.
        """
        if not text.strip() or len(text) > MAX_SAY_CHARS:
            raise ValueError(f"a line to say must be 1-{MAX_SAY_CHARS} characters, not blank")
        self._check_room()
        if not self._ended:
            self._push(Say(text), ("say", text))

    def mute_agent(self) -> None:
        """Silence the agent: its audio playing now stops and later audio is dropped.

        Raises:
            ControlBusy: :data:`MAX_PENDING` requests already wait.
        """
        self._check_room()
        if self._ended or self.agent_muted:
            return
        self.agent_muted = True  # audio arriving from now on is dropped (on_agent_audio)
        self._push(StopAgentAudio("agent_muted"), ("mute_agent", ""))
        self._queue.append(Note("agent_muted"))

    def unmute_agent(self) -> None:
        """Let the agent be heard again (its next audio plays).

        Raises:
            ControlBusy: :data:`MAX_PENDING` requests already wait.
        """
        self._check_room()
        if self._ended or not self.agent_muted:
            return
        self.agent_muted = False
        self._push(Note("agent_unmuted"), ("unmute_agent", ""))
        if self._dropped:  # what the agent said while muted was never heard: its turns say so
            self._dropped = False
            self._queue.append(StopAgentAudio("agent_unmuted"))

    def on_agent_audio(self, item_id: str, now_ms: float) -> AudioGate:
        if self.agent_muted:
            self._dropped = True
            return AudioGate.DROP
        return AudioGate.ALLOW

    def _check_room(self) -> None:
        if len(self._queue) >= MAX_PENDING:
            raise ControlBusy(f"{MAX_PENDING} control requests already wait to be carried out")

    def _push(self, action: Action, request: tuple[str, str]) -> None:
        self._queue.append(action)
        self.requests.append(request)
        self.taken += 1
        if len(self.requests) > MAX_KEPT_REQUESTS:
            del self.requests[0]
        self._ready.set()

    @property
    def pending(self) -> bool:
        """Whether requests wait to be carried out."""
        return bool(self._queue)

    async def wait(self) -> None:
        """Return once a request is waiting (the session's control task awaits this)."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()

    def take(self) -> Sequence[Action]:
        """The waiting requests as actions, in order (the queue empties)."""
        out, self._queue = self._queue, []
        return tuple(out)

    def on_tick(self, now_s: float, last_activity_s: float) -> Sequence[Action]:
        return self.take()
