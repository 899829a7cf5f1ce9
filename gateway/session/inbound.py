"""The carrier side of a :class:`~gateway.session.call.CallSession`: frames in, caller speech out.

:class:`InboundSide` is the part of the session that reads the carrier socket and acts on the
caller's audio: marks, ``stop``, DTMF and protocol errors; caller frames down the
:class:`~gateway.session.caller.CallerPath` to the VAD, the model and the listening policies;
and the VAD's events (turns, barge-in). Caller frames take one of two paths:

- **per frame** (a ``vad`` runner factory and no engine): each frame is decoded, heard by the
  listening policies and fed to the VAD, awaited, in the carrier task;
- **per tick** (the session has a :class:`~gateway.engine.MediaEngine`): the carrier task only
  queues each frame (:meth:`~gateway.session.caller.TickCallerPath.submit`, nothing awaited);
  the engine's tick decodes, converts and scores every call at once, and the session's caller
  task (:meth:`InboundSide._caller_loop`) records, sends to the model, and acts on the VAD
  events and the policies' actions of each tick's result, in order. When the carrier ends, the
  queued frames are processed at once and the caller task ends the call after the last result.

Barge-in (caller speech confirmed while agent audio plays, the call's mode not ``off``):
``immediate`` clears and interrupts at once; ``pause_then_commit`` pauses, then each frame's (or
tick's) :class:`~gateway.vadrun.VadVoicing` decides whether to resume or commit
(:mod:`gateway.session.bargein`); while paused the caller task wakes on every tick. With a VAD
runner that cannot tell voiced time (no ``voicing()``), the caller counts as voiced from the
onset until the VAD's end of speech, on the call's clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.carriers import events as ev
from gateway.codecs.transcode import decode
from gateway.session.caller import TickCallerPath
from gateway.session.common import CallEnded
from gateway.vadrun import VadCue, VadEnd, VadStart, VadVoicing

if TYPE_CHECKING:
    import numpy as np

__all__ = ["InboundSide"]


class InboundSide:
    """Mixed into :class:`~gateway.session.call.CallSession` (its state lives there)."""

    def _count(self: Any, event: ev.CarrierEvent) -> None:
        if isinstance(event, ev.ProtocolError):
            self.journal.protocol_error(event.kind, event.detail, self._ms())
        elif isinstance(event, ev.Unhandled):
            self.journal.unhandled_event(event.event)

    async def _carrier_loop(self: Any) -> None:
        """Carrier frames → typed events: caller audio down the caller path, marks, stop, DTMF."""
        assert self._caller is not None and self._playout is not None
        receive, adapter, stats = self.transport.receive, self.adapter, self.stats
        caller, playout = self._caller, self._playout
        ledger, interruptible = playout.ledger, self._barge.enabled
        ticked = isinstance(caller, TickCallerPath)
        voicing = getattr(caller.vad, "voicing", None)
        while True:
            frame = await receive()
            if frame is None:
                return await self._carrier_ended(CallEnded("carrier_closed"))
            for event in adapter.receive(frame):
                if isinstance(event, ev.Media):
                    if not event.track.startswith("inbound"):  # never feed our own outbound track back
                        stats.other_track_frames += 1
                        continue
                    stats.frames_in += 1
                    now_ms = self._ms()
                    refused = caller.admit(event.payload, now_ms)
                    if refused is not None:  # a message or a pace no carrier sends: dropped
                        self.journal.protocol_error(refused, f"{len(event.payload)} bytes of audio", now_ms)
                        if caller.echo is not None:  # its samples were real time: the echo clock skips them
                            caller.echo.refused(len(event.payload), caller.lane.queued_bytes if ticked else 0,
                                                caller.fmt)
                        continue
                    if ticked:
                        caller.submit(event.payload, now_ms, interruptible and not self._muted and ledger.playing(now_ms))
                        continue
                    if self._listeners:  # first: a verdict may mute the caller or release agent audio
                        await self._hear(decode(event.payload, self._started.audio_format.encoding), now_ms)
                    barge_mode = interruptible and not self._muted and ledger.playing(now_ms)
                    vad_events = await caller.feed(event.payload, now_ms, barge_mode)
                    if not vad_events and not self._agent.watching:
                        continue  # the usual frame: no voiced time is needed
                    voiced = voicing() if voicing is not None else None
                    for vad_event in vad_events:
                        await self._on_vad(vad_event, voicing=voiced)
                    if self._agent.watching:
                        await self._voiced(voiced, now_ms)
                elif isinstance(event, ev.MarkAck):
                    playout.acknowledge(event.name, self._ms())
                elif isinstance(event, ev.Stopped):
                    return await self._carrier_ended(CallEnded("carrier_stop"))
                elif isinstance(event, ev.Dtmf):
                    self._event("dtmf", digit=event.digit)
                elif isinstance(event, (ev.Connected, ev.Cleared, ev.Started)):
                    pass
                else:
                    self._count(event)

    async def _carrier_ended(self: Any, ending: CallEnded) -> None:
        """The carrier closed or stopped: the model hears all the caller said, then the call ends
        (per tick: once the caller task has taken the queued frames' results)."""
        caller = self._caller
        if isinstance(caller, TickCallerPath):
            caller.finish(ending)
            return
        await caller.flush()  # less than a chunk may wait
        raise ending

    async def _caller_loop(self: Any) -> None:
        """Per tick: each result of the call's lane, in order (see the module docstring)."""
        caller: TickCallerPath = self._caller
        async for result in caller.lane.results():
            if result.error is not None:
                raise result.error  # a bug in this call's own work: this call alone ends
            if result.fallback:
                self.stats.vad_fallback_ticks += 1
            await caller.take(result)
            if result.actions:
                await self._act(result.actions)
            for vad_event in result.vad:
                await self._on_vad(vad_event, result.at_ms, result.voicing)
            if self._agent.watching:
                await self._voiced(result.voicing, result.at_ms)
                caller.lane.wake_bytes = 1  # while watching, every tick's result may decide
        await caller.flush()
        raise caller.ending or CallEnded("carrier_closed")

    def _hear_now(self: Any, pcm: np.ndarray, now_ms: float) -> list:
        """Per tick: decoded caller PCM to the listening policies; their actions (the engine's
        synchronous :data:`~gateway.engine.Hear` listener)."""
        actions: list = []
        done = False
        for policy in self._listeners:
            if policy.listening:
                actions.extend(policy.on_caller_audio(pcm, now_ms))
            else:
                done = True
        if done:
            self._listeners = [p for p in self._listeners if p.listening]
        return actions

    async def _hear(self: Any, pcm: np.ndarray, now_ms: float) -> None:
        """Per frame: one decoded caller frame to the listening policies; drop those done listening."""
        done = False
        for policy in self._listeners:
            if policy.listening:
                actions = policy.on_caller_audio(pcm, now_ms)
                if actions:
                    await self._act(actions)
            else:
                done = True
        if done:
            self._listeners = [p for p in self._listeners if p.listening]

    async def _voiced(self: Any, voicing: VadVoicing | None, now_ms: float) -> None:
        """While a barge-in is paused (or just resumed): the VAD's progress to the pause's
        decision (``None``: the runner cannot tell, the caller counts as voiced until now)."""
        if voicing is None:
            await self._agent.caller_voiced(now_ms, now_ms)
        else:
            ms = 1000.0 / voicing.sample_rate
            runs = tuple((start * ms, end * ms) for start, end in voicing.runs)
            await self._agent.caller_voiced(voicing.voiced_to * ms, voicing.scored_to * ms, runs)

    async def _turn_proven(self: Any) -> None:
        """A paused barge-in proved a caller turn: the model's start of turn, held back till now
        (:meth:`~gateway.session.agent.AgentAudio.hold_turn`)."""
        if self.config.turn_mode == "gateway" and not self._muted and self.bridge is not None:
            await self.bridge.speech_started()

    async def _barge_in(self: Any, event: VadStart | VadCue, onset_ms: float, voicing: VadVoicing | None) -> None:
        """Caller speech confirmed over agent audio: barge in, or pause (pause-then-commit)."""
        if self._barge.mode != "pause_then_commit":
            return await self._agent.barge_in("vad", onset_ms)
        if voicing is None:  # on the call's clock: voiced from the onset, until now
            now_ms = onset_ms + event.confirm_delay_ms
            return await self._agent.pause(onset_ms, onset_ms, now_ms, now_ms)
        ms = 1000.0 / voicing.sample_rate
        await self._agent.pause(onset_ms, event.onset_sample * ms, voicing.voiced_to * ms, voicing.scored_to * ms)

    async def _on_vad(self: Any, event: VadStart | VadEnd | VadCue, at_ms: float | None = None,
                      voicing: VadVoicing | None = None) -> None:
        """The caller started or stopped speaking: turn events, barge-in, then the policies.
        A :class:`~gateway.vadrun.VadCue` (a likely onset the VAD has not confirmed) only
        pauses agent audio in pause-then-commit mode: no turn, no policy hears of it.

        ``at_ms``: when the audio the event was decided on ended (ms on the call's clock; per
        tick, the arrival of the tick's last frame); default now. ``voicing``: the VAD's voiced
        time with the event (pause-then-commit barge-in), if its runner tells it.
        """
        assert self._caller is not None and self._agent is not None and self.bridge is not None
        now_ms = self._ms() if at_ms is None else at_ms
        if isinstance(event, VadCue):
            if self._barge.mode == "pause_then_commit" and not self._muted and self._agent.playout.playing(self._ms()):
                await self._barge_in(event, now_ms - event.confirm_delay_ms, voicing)
            return
        self._last_activity = self.clock.now()
        gateway_turns = self.config.turn_mode == "gateway" and not self._muted
        self._caller_speaking = isinstance(event, VadStart)
        if isinstance(event, VadStart):
            onset_ms = now_ms - event.confirm_delay_ms
            self.turns.speech_started(onset_ms)
            self._event("caller_speech_start", onsetMs=int(onset_ms))
            await self._caller.flush()
            if self._barge.enabled and not self._muted and self._agent.playout.playing(self._ms()):
                await self._barge_in(event, onset_ms, voicing)
            elif not self._agent.paused:  # speech with no agent audio: a turn, whatever came before
                await self.bridge.turn_verdict("turn")
            if gateway_turns:
                if self._agent.paused:  # the model hears of this turn only once the pause proves it
                    self._agent.hold_turn()
                else:
                    await self.bridge.speech_started()
        else:
            self.turns.speech_ended(now_ms)
            self._event("caller_speech_end")
            if self._agent.watching:
                await self._agent.caller_speech_ended()
            backchannel = self._agent.drop_held_turn()  # it paused the agent, which resumed
            await self._caller.flush()
            if gateway_turns and not backchannel:
                await self.bridge.end_of_turn()
        for policy in self._policies:
            await self._act(policy.on_vad(event, now_ms))
