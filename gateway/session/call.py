"""CallSession: the one asyncio owner of a live call, composed of small synchronous parts.

It owns the carrier socket (through a :class:`~gateway.session.common.Transport`), the model
bridge, the call's tasks (one :class:`asyncio.TaskGroup`: carrier, model, pacer, policies, end
watch) and its record, and it is the only place that awaits sockets. The work is in its parts:

- :class:`~gateway.session.caller.CallerPath`: carrier audio → decode → resample → VAD, and
  caller audio to the model in chunks;
- :class:`~gateway.session.playout.Playout`: agent audio → transcode → playout ledger → paced
  frames, marks, ``clear``, and what the caller heard;
- :class:`~gateway.session.agent.AgentAudio`: agent audio from the model to the playout
  (policy gates and the greeting hold, barge-in and stop, in-band DTMF, end after playout);
- :class:`~gateway.session.turns.Turns`: transcript, barge-in cuts, latency samples;
- :mod:`~gateway.session.policies`: timers, :mod:`~gateway.session.control` (the API's
  requests) and :mod:`~gateway.session.voicemail` (answering-machine detection) as
  :class:`~gateway.session.policies.Policy` objects whose actions the session carries out;
- :mod:`~gateway.session.finish`: the bounded close steps and the outcome.

Barge-in (caller speech while agent audio is playing, on an interruptible call): send the
carrier ``clear`` first, then drop queued audio, reset the outbound resampler, and tell the
bridge to cancel its reply and cut its memory to the ms the caller heard (from mark
acknowledgements). The call's barge-in mode (``CallPolicy.barge_in_mode``, :mod:`~gateway.session.bargein`)
makes that ``immediate``, ``pause_then_commit`` (pause first; commit only on speech longer than
the threshold, else resume) or ``off``. The gateway's VAD decides it in every turn mode: with
the model's own turn detection the model is told not to interrupt itself, its ``SpeechStarted``
is no barge-in (unless :attr:`~gateway.llm.base.ModelBridge.model_interrupts`), and the bridge
hears the gateway's verdict on each caller utterance (:meth:`~gateway.llm.base.ModelBridge.turn_verdict`:
a resumed backchannel is neither answered nor kept).

A call ends on the carrier's ``stop``, the socket closing, a policy (``maxDuration``,
inactivity, voicemail, a control request), a fatal model error, or
:meth:`CallSession.request_end`; whichever it is, the record is finalised once with status,
reason, transcript, events, metrics, the recording and the voicemail outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.audio.playout import PlayoutLedger
from gateway.carriers import events as ev
from gateway.clock import Clock, MonotonicClock, wait_for
from gateway.engine.echo import ECHO_RATES, EchoStage
from gateway.journal import CallJournal
from gateway.llm import base as llm
from gateway.recording_guard import BestEffortRecording
from gateway.session.agent import AgentAudio
from gateway.session.bargein import BargeInConfig
from gateway.session.caller import CallerPath, TickCallerPath
from gateway.session.common import CallEnded, CallHooks, CallOutcome, CallPolicy, CallStats, Transport
from gateway.session.control import ControlPolicy
from gateway.session.finish import CallParts, finish_call
from gateway.session.inbound import InboundSide
from gateway.session.playout import Playout
from gateway.session.policies import (
    TICK_S, Action, EndAfterPlayout, EndCall, MuteCaller, Note, PlayDtmf, Policy, ReleaseAudio, Say,
    StopAgentAudio, TimerPolicy,
)  # fmt: skip
from gateway.session.turns import Turns
from gateway.session.voicemail import VoicemailConfig, VoicemailPolicy
from gateway.vadrun import VadRunner, _Runner

if TYPE_CHECKING:
    from gateway.engine import MediaEngine

__all__ = ["CallSession"]

_START_TIMEOUT_S = 15.0
#: A send to the carrier pending this long (s) means the peer stopped reading: the call ends
#: (``carrier_stalled``) instead of holding its caller path and playout behind the send.
SEND_STALL_S = 5.0
#: A ``Say`` the bridge has not taken within this long (s, on the call's clock) is one it
#: cannot say (its ``or_else``): a stalled model never holds the call (e.g. a voicemail message).
SAY_TIMEOUT_S = 5.0


class CallSession(InboundSide):
    """One live call. Create, then ``await run()``; it returns when the call has ended.

    Args:
        call_id: our call id (for logs and the record).
        adapter: the carrier adapter (sans-I/O) for this socket.
        transport: the carrier socket.
        bridge_factory: makes the model bridge for this call.
        config: what the model is asked to do.
        policy: limits and switches.
        vad: makes this call's VAD runner (direct or batched across calls) for the carrier's
            sample rate (Hz); the runner says which rate it takes (8 or 16 kHz).
        hooks: store and recorder callbacks.
        clock: time source (tests inject a fake one).
        lead_ms: agent audio kept buffered at the carrier ahead of real time (ms).
        mark_every: frames between marks.
        send_every_ms: while agent audio plays, the pacer wakes this often (ms) and tops the
            carrier up (two 20 ms frames per wake at 40 ms: half the wake-ups of one per frame;
            the carrier then holds between ``lead_ms - 20`` and ``lead_ms + 20`` ms). New audio
            after a pause still leaves at once.
        model_chunk_ms: caller audio goes to the model in messages of this much audio (ms),
            flushed at once before every turn event (speech start, end of turn, barge-in).
        carrier_message_ms: agent audio per carrier media message at most (ms), within what
            the adapter accepts (its ``max_message_ms``); 20: one message per frame.
        policies: more :class:`~gateway.session.policies.Policy` objects, asked after the
            call's :class:`~gateway.session.policies.TimerPolicy` (built from ``policy``), its
            :attr:`control` and its voicemail policy.
        voicemail: the call's voicemail settings; with ``detect`` the session runs a
            :class:`~gateway.session.voicemail.VoicemailPolicy` at the carrier's rate from the
            stream's start, and the outcome's ``voicemail`` is its
            :meth:`~gateway.session.voicemail.VoicemailPolicy.outcome`.
        control: the call's :class:`~gateway.session.control.ControlPolicy` (default: a new
            one); the app reaches it as :attr:`control`.
        engine: the per-tick :class:`~gateway.engine.MediaEngine` that decodes and scores the
            caller's audio with every other call's (``None``, or a ``vad`` runner that is not one
            of :mod:`gateway.vadrun`'s: per frame, in the carrier task; see
            :mod:`gateway.session.inbound`).
        echo_cancel: with the call's :class:`~gateway.engine.echo.EchoStage` (8 and 16 kHz
            carriers), cancel the agent's echo on the caller leg before the VAD, with the
            double-talk rule, near agent audio (``GATEWAY_ECHO_CANCEL=on``); ``False``: the echo
            path is only estimated (``metrics.echo``) and the VAD hears the caller leg as it came.

    Attributes:
        control: the app's way in (``control.hang_up()``, ``control.play_dtmf("12#")``),
            carried out as soon as asked, from the call's own task.
        voicemail: the call's :class:`~gateway.session.voicemail.VoicemailPolicy` once its
            stream started, when ``voicemail.detect``; else ``None``.
    """

    def __init__(
        self,
        *,
        call_id: str,
        adapter: ev.CarrierAdapter,
        transport: Transport,
        bridge_factory: Callable[[llm.AgentConfig], llm.ModelBridge],
        config: llm.AgentConfig,
        policy: CallPolicy,
        vad: Callable[[int], VadRunner],
        hooks: CallHooks | None = None,
        clock: Clock | None = None,
        lead_ms: float = 80.0,
        mark_every: int = 5,
        send_every_ms: float = 40.0,
        model_chunk_ms: float = 40.0,
        carrier_message_ms: float = 20.0,
        policies: Sequence[Policy] = (),
        voicemail: VoicemailConfig | None = None,
        control: ControlPolicy | None = None,
        engine: MediaEngine | None = None,
        echo_cancel: bool = True,
    ) -> None:
        self.call_id = call_id
        self.adapter = adapter
        self.transport = transport
        if config.interruptible and policy.barge_in_mode == "off":  # nor does the model cut itself
            config = dataclasses.replace(config, interruptible=False)
        self.config = config
        self.policy = policy
        self.hooks = hooks or CallHooks()
        self.clock = clock or MonotonicClock()
        self.log = logging.LoggerAdapter(logging.getLogger("gateway.call"), {"call_id": call_id})
        self._bridge_factory = bridge_factory
        self._vad_factory = vad
        self._engine = engine
        self._echo: EchoStage | None = None  # made at the stream's start (its rate)
        self._echo_cancel = echo_cancel
        self._playout_args = {"lead_ms": lead_ms, "mark_every": mark_every, "send_every_ms": send_every_ms,
                              "message_ms": carrier_message_ms}  # fmt: skip
        self._model_chunk_ms = model_chunk_ms
        self.bridge: llm.ModelBridge | None = None
        self.stats = CallStats()
        self.turns = Turns(self.stats)
        self.journal = CallJournal(self.log)
        observe = getattr(transport, "observe", None)  # optional: see Transport
        if observe is not None:  # e.g. the WebRTC data channel: the page's live view of the call
            self.journal.on_event = lambda event, kept: observe("event" if kept else "moment", event)
            self.turns.on_change = lambda index, turn: observe("turn", {"index": index, "turn": turn})
        self._t0 = self.clock.now()
        self.control = control if control is not None else ControlPolicy(self.clock)
        self._voicemail_config = voicemail if voicemail is not None and voicemail.detect else None
        self.voicemail: VoicemailPolicy | None = None  # made at the stream's start (its rate)
        self._policies: list[Policy] = [TimerPolicy(policy, self._t0), self.control, *policies]
        self._listeners: list[Policy] = []  # policies hearing the caller (hears_audio and listening)
        self._muted = False  # MuteCaller: the model does not hear the caller
        self._caller_speaking = False  # the gateway's VAD is in a caller utterance (start → end)
        self._barge = BargeInConfig(  # a call that is not interruptible never barges in
            policy.barge_in_mode if config.interruptible else "off",  # type: ignore[arg-type]
            policy.barge_in_commit_ms, policy.barge_in_resume_gap_ms,
        )  # fmt: skip
        self._caller: CallerPath | None = None
        self._playout: Playout | None = None
        self._agent: AgentAudio | None = None
        self._recorder: BestEffortRecording | None = None
        self._last_activity = self._t0
        self._started: ev.Started | None = None
        self._end_request: CallEnded | None = None
        self._finishing: asyncio.Task[CallOutcome] | None = None
        self._end_requested = asyncio.Event()

    # ------------------------------------------------------------------ views and helpers
    @property
    def ledger(self) -> PlayoutLedger | None:
        """The call's :class:`~gateway.audio.playout.PlayoutLedger` once its stream started."""
        return self._playout.ledger if self._playout is not None else None

    @property
    def transcript(self) -> list[dict[str, Any]]:
        """The call's turns so far (see :class:`~gateway.session.turns.Turns`)."""
        return self.turns.transcript

    @property
    def events(self) -> list[dict[str, Any]]:
        """The call's events so far (bounded: see :class:`~gateway.journal.CallJournal`)."""
        return self.journal.events

    def _ms(self) -> float:
        return (self.clock.now() - self._t0) * 1000.0

    def _event(self, kind: str, /, **data: Any) -> None:
        self.journal.event(kind, self._ms(), data)

    # ------------------------------------------------------------------ lifecycle
    def request_end(self, reason: str = "shutdown") -> None:
        """Ask the call to end now, e.g. with ``shutdown`` when the gateway gets SIGTERM.

        The call ends ``completed`` with ``reason`` (``failed``, ``no_start``, if its stream
        had not started yet), its record is finalised as for any other ending, and the carrier
        socket is closed with 1001 "going away" (RFC 6455 §7.4.1). Idempotent: the first
        reason wins. Returns at once; :meth:`run` returns when the call has ended.
        """
        if self._end_request is None:
            self._end_request = CallEnded(reason)
            self._end_requested.set()

    async def _end_watch(self) -> None:
        await self._end_requested.wait()
        assert self._end_request is not None
        raise self._end_request

    async def run(self) -> CallOutcome:
        """Run the call to its end and finalise its record. Never raises for call errors.

        The record is finalised whatever ends the call, cancellation of ``run()`` included:
        then the finalisation runs shielded from the cancellation (reason ``cancelled``, unless
        :meth:`request_end` gave one), and the cancellation is re-raised once it is done.
        """
        try:
            ended = await self._serve()
        except asyncio.CancelledError:
            await self._finish_once(self._end_request or CallEnded(
                "cancelled", "failed", "cancelled", "the call's task was cancelled"))
            raise
        return await self._finish_once(ended)

    async def _finish_once(self, ended: CallEnded) -> CallOutcome:
        """Finalise in a task of its own (once per call), shielded from ``run()``'s cancellation."""
        if self._finishing is None:
            parts = CallParts(
                clock=self.clock, t0=self._t0, log=self.log, journal=self.journal, stats=self.stats,
                transcript=self.turns.transcript, transport=self.transport, hooks=self.hooks, bridge=self.bridge,
                ledger=self.ledger, recorder=self._recorder, started=self._started,
                voicemail=self.voicemail.outcome if self.voicemail is not None else None,
                echo=self._echo.metrics if self._echo is not None else None,
            )  # fmt: skip
            finish = finish_call(parts, ended, requested=ended is self._end_request)
            self._finishing = asyncio.create_task(finish, name=f"finish-{self.call_id}")
        return await asyncio.shield(self._finishing)

    async def _serve(self) -> CallEnded:
        """The call itself, from the carrier's ``start`` to whatever ends it."""
        ended = CallEnded("carrier_closed")
        try:
            try:
                started = await asyncio.wait_for(self._await_start(), _START_TIMEOUT_S)
            except TimeoutError:  # only this wait: any other TimeoutError is a bug, not a start
                raise CallEnded("start_timeout", "failed", "start_timeout", "no start message within 15 s") from None
            await self._setup(started)
            assert self._playout is not None
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._carrier_loop())
                if isinstance(self._caller, TickCallerPath):
                    tg.create_task(self._caller_loop())
                tg.create_task(self._model_loop())
                tg.create_task(self._playout.run())
                tg.create_task(self._policy_loop())
                tg.create_task(self._control_loop())
                tg.create_task(self._end_watch())
        except* CallEnded as group:
            ended = group.exceptions[0]
        except* llm.BridgeFailed as group:
            exc = group.exceptions[0]
            ended = CallEnded("model_error", "failed", exc.code, str(exc))
        except* Exception as group:  # a bug of ours: end the call, keep the record
            self.log.exception("call failed", exc_info=group.exceptions[0])
            ended = CallEnded("internal_error", "failed", "internal_error", type(group.exceptions[0]).__name__)
        finally:
            if isinstance(self._caller, TickCallerPath):
                self._caller.close()  # out of the engine, whatever ended the call
        return ended

    async def _await_start(self) -> ev.Started:
        while True:
            frame = await self._receive_before_start()
            if frame is None:
                raise CallEnded("carrier_closed_before_start", "failed", "no_start", "socket closed before start")
            for event in self.adapter.receive(frame):
                if isinstance(event, ev.Started):
                    return event
                if isinstance(event, ev.Stopped):
                    raise CallEnded("stop_before_start", "failed", "no_start", "stop before start")
                self._count(event)
                if isinstance(event, ev.ProtocolError) and event.fatal:  # a refused start: no format
                    raise CallEnded("bad_start", "failed", "bad_start", f"{event.kind}: {event.detail}")

    async def _receive_before_start(self) -> ev.Frame | None:
        """The next frame, unless :meth:`request_end` comes first (then the call ends)."""
        if self._end_request is None:
            receive = asyncio.ensure_future(self.transport.receive())
            ended = asyncio.ensure_future(self._end_requested.wait())
            try:
                await asyncio.wait((receive, ended), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (receive, ended):
                    task.cancel()
            if receive.done() and not receive.cancelled():
                return receive.result()
        assert self._end_request is not None
        reason = self._end_request.reason
        self._end_request = CallEnded(reason, "failed", "no_start", f"ended ({reason}) before the stream started")
        raise self._end_request

    async def _setup(self, started: ev.Started) -> None:
        self._started = started
        fmt = started.audio_format
        self._event("started", streamId=started.stream_id, carrierCallId=started.call_id, format=str(fmt))
        self.log.info("stream started: %s, %s", self.adapter.name, fmt)
        if self.hooks.on_started is not None:
            await self.hooks.on_started(started)
        vad = self._vad_factory(fmt.sample_rate)
        if self.policy.recording_enabled and self.hooks.open_recorder is not None:
            self._recorder = BestEffortRecording(
                self.hooks.open_recorder, fmt.sample_rate, logger=self.log,
                on_failure=lambda stage, error: self._event("recording_failed", stage=stage, error=error),
            )  # fmt: skip
        bridge = self.bridge = self._bridge_factory(self.config)
        await bridge.start(self.config, fmt)
        if fmt.sample_rate in ECHO_RATES and vad.sample_rate == fmt.sample_rate:  # the VAD hears this leg
            self._echo = EchoStage(fmt.sample_rate, cancel=self._echo_cancel)
        if isinstance(vad, _Runner):  # pause-then-commit pauses on a likely onset too (VadCue)
            vad.cues = self._barge.mode == "pause_then_commit" and self.policy.barge_in_cues
        if self._engine is not None and isinstance(vad, _Runner):  # a runner the engine can drive
            self._caller = TickCallerPath(fmt, vad, bridge.input_format, bridge.send_audio, engine=self._engine,
                                          hear=self._hear_now, recorder=self._recorder,
                                          model_chunk_ms=self._model_chunk_ms, echo=self._echo)  # fmt: skip
        else:
            self._caller = CallerPath(fmt, vad, bridge.input_format, bridge.send_audio, recorder=self._recorder,
                                      model_chunk_ms=self._model_chunk_ms, echo=self._echo)  # fmt: skip
        self._playout = Playout(self.adapter, fmt, bridge.output_format, self.transport.send, self.clock, self._t0,
                                self.stats, recorder=self._recorder, echo=self._echo,
                                **self._playout_args)  # fmt: skip
        if self._voicemail_config is not None:
            self.voicemail = VoicemailPolicy(self._voicemail_config, sample_rate=fmt.sample_rate)
            self._policies.append(self.voicemail)
        self._listeners = [p for p in self._policies if p.hears_audio]
        gates = [p for p in self._policies if p.gates_audio]
        self._agent = AgentAudio(self._playout, self.turns, self.stats, bridge, gates, self._ms, self._event, self.log,
                                 barge=self._barge)  # fmt: skip
        self._agent.on_turn = self._turn_proven
        for policy in self._policies:  # before any caller audio is read
            await self._act(policy.on_started(self.clock.now()))

    # ------------------------------------------------------------------ model side
    async def _model_loop(self) -> None:
        assert self.bridge is not None and self._agent is not None
        agent, playout = self._agent, self._agent.playout
        async for event in self.bridge.events():
            if isinstance(event, llm.AudioOut):
                if agent.offer(event):
                    await playout.pump()  # the first frames leave now, from this task
            elif isinstance(event, llm.Transcript):
                now_ms = self._ms()
                self.turns.add(event, now_ms)
                self._last_activity = self.clock.now()
                if event.role == "user" and self._listeners:
                    for policy in self._listeners:
                        if policy.listening:
                            await self._act(policy.on_caller_text(event.text, now_ms))
            elif isinstance(event, llm.ResponseDone):
                agent.item_done(event)
            elif isinstance(event, (llm.SpeechStarted, llm.Interrupted)):
                # The model's VAD starting is a barge-in only where the model cuts itself on it
                # (model_interrupts); elsewhere the gateway's echo-aware VAD decides.
                cut = isinstance(event, llm.Interrupted) or self.bridge.model_interrupts
                over_agent = playout.playing(self._ms()) and self._barge.enabled and not self._muted
                if cut and over_agent:
                    await agent.barge_in("model" if isinstance(event, llm.Interrupted) else "model_vad")
                elif over_agent and not self._caller_speaking and not agent.paused:
                    await self.bridge.turn_verdict("unheard")  # its VAD heard what ours did not: echo
            elif isinstance(event, llm.SessionRenewed):  # the bridge moved to a new model session
                self._event("model_session", reason=event.reason, attempts=event.attempts, gapMs=event.gap_ms,
                            carried=event.carried, replayedBytes=event.replayed_bytes)  # fmt: skip
            elif isinstance(event, llm.BridgeError):
                self._event("model_error", code=event.code, message=event.message[:200])
                if event.fatal:
                    raise CallEnded("model_error", "failed", event.code, event.message)
                self.log.warning("model error %s: %s", event.code, event.message[:200])
        raise CallEnded("model_closed", "failed", "model_closed", "the model connection ended")

    # ------------------------------------------------------------------ policies
    async def _policy_loop(self) -> None:
        """Tick the policies every :data:`~gateway.session.policies.TICK_S` seconds."""
        assert self._playout is not None
        playout, clock = self._playout, self.clock
        send_pending_s = getattr(self.transport, "send_pending_s", None)
        while True:
            await clock.sleep(TICK_S)
            now = clock.now()
            if send_pending_s is not None and send_pending_s() > SEND_STALL_S:
                raise CallEnded("carrier_stalled", "failed", "carrier_stalled",
                                f"the carrier took no frame for {SEND_STALL_S:.0f} s")  # fmt: skip
            last = self._last_activity
            if playout.playing_at is not None and playout.playing_at > last:
                last = playout.playing_at
            for policy in self._policies:
                await self._act(policy.on_tick(now, last))
            await self._agent.check_pause()  # type: ignore[union-attr]
            due = self._agent.due_end(now)  # type: ignore[union-attr]
            if due is not None:
                end, by_limit = due
                self._event("end_after_playout", reason=end.reason, byLimit=by_limit)
                raise CallEnded(end.reason, end.status, end.code, end.message)

    async def _control_loop(self) -> None:
        """The app's control requests (:attr:`control`), carried out as soon as they are made."""
        while True:
            await self.control.wait()
            await self._act(self.control.take())

    async def _act(self, actions: Sequence[Action]) -> None:
        """Carry out a policy's actions in order (an ``EndCall`` ends the call here)."""
        agent = self._agent
        assert agent is not None and self.bridge is not None and self._caller is not None
        for action in actions:
            if isinstance(action, EndCall):
                raise CallEnded(action.reason, action.status, action.code, action.message)
            if isinstance(action, Note):
                self._event(action.kind, **action.data)
            elif isinstance(action, Say):
                await self._say(action)
            elif isinstance(action, ReleaseAudio):
                await agent.release()
            elif isinstance(action, StopAgentAudio):
                await agent.stop(action.reason)
            elif isinstance(action, EndAfterPlayout):
                agent.end_after(action.end, action.limit_s, self.clock.now())
            elif isinstance(action, PlayDtmf):
                await agent.play_dtmf(action.digits)
            elif isinstance(action, MuteCaller) and action.muted != self._muted:
                self._muted = self._caller.muted = action.muted
                if action.muted:  # the caller's speech no longer barges in: a pause plays on
                    await agent.resume("muted")
                self._event("caller_muted" if action.muted else "caller_unmuted")

    async def _say(self, action: Say) -> None:
        """``bridge.say``, bounded by :data:`SAY_TIMEOUT_S`; if the bridge cannot say the line
        or does not return in time (journal ``say_timeout``), the Say's ``or_else``."""
        assert self.bridge is not None
        try:
            await wait_for(self.clock, self.bridge.say(action.text), SAY_TIMEOUT_S)
        except (NotImplementedError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                self._event("say_timeout", timeoutS=SAY_TIMEOUT_S)
            if action.or_else is not None:
                end = action.or_else
                raise CallEnded(end.reason, end.status, end.code, end.message) from None
