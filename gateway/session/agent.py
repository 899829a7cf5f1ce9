"""The agent's audio between the model and the playout: gates, hold, stop, DTMF, end after playout.

:class:`AgentAudio` decides what becomes of each chunk of agent audio (``AudioOut``) before it
reaches the :class:`~gateway.session.playout.Playout`:

- **gates**: policies with ``gates_audio`` answer ALLOW, HOLD or DROP per chunk (the strictest
  wins). Held chunks, and the ends of their items, are kept in arrival order until a policy's
  ``ReleaseAudio``; while anything is held, later audio is held behind it;
- **pause-then-commit** (:meth:`AgentAudio.pause`, :meth:`AgentAudio.caller_voiced`,
  :meth:`AgentAudio.resume`; :mod:`gateway.session.bargein`): a barge-in candidate pauses the
  playout (no ``clear``, the model not told); short speech resumes it, long speech commits it
  as a barge-in. Any barge-in while paused (the model's too) commits it; a stop ends it. Each
  step is told to the bridge (``bridge.turn_verdict``: ``pending``, then ``backchannel`` or
  ``turn``), which, with the model's own turn detection, holds the model's committed user
  turn until then and answers or deletes it;
- **barge-in** (:meth:`AgentAudio.barge_in`) and **stop** (:meth:`AgentAudio.stop`, a policy's
  ``StopAgentAudio``): the carrier ``clear`` first, the queue dropped (and, for a stop, the
  held audio too), every reply cut marked in the transcript so its late audio is dropped, and
  the model told what the caller heard (``bridge.interrupt``). Only a barge-in is counted;
- **DTMF** (:meth:`AgentAudio.play_dtmf`): on a carrier whose stream protocol plays DTMF
  (:class:`~gateway.carriers.events.StreamDtmf`: Plivo ``sendDTMF``) the adapter's frame, sent
  at once; otherwise ITU-T Q.23 tones made with :func:`gateway.audio.tones.dtmf_sequence` in the
  model's output format and queued as an item of their own (``dtmf_<n>``), so heard-ms
  accounting stays right; a barge-in or stop that cuts them tells the model about its own latest
  item, never about the tones (the latest :data:`LOCAL_ITEMS_KEPT` tone items are remembered);
- **end after playout** (:meth:`AgentAudio.end_after`, :meth:`AgentAudio.due_end`): the end of
  a call deferred until the audio queued after the request has played.

Synchronous except where it sends (the carrier ``clear``, the first frames, the bridge's
``interrupt``); it runs in the session's tasks only.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from gateway.audio.playout import Heard
from gateway.audio.tones import dtmf_sequence
from gateway.carriers.events import StreamDtmf
from gateway.codecs.transcode import encode
from gateway.llm import base as llm
from gateway.session.bargein import PAUSE_GRACE_MS, BargeInConfig, PauseGate, PauseInput
from gateway.session.common import CallStats
from gateway.session.playout import Playout
from gateway.session.policies import AudioGate, EndCall, Policy
from gateway.session.turns import Turns

__all__ = ["AgentAudio", "DTMF_ON_MS", "DTMF_OFF_MS", "DTMF_LEVEL_DBFS", "LOCAL_ITEMS_KEPT"]

#: In-band DTMF timing (ms) and low-group level (dBFS; the high group is 2 dB above): ITU-T
#: Q.24 asks for ≥ 40 ms tones and pauses; 100 / 100 ms is the usual dialler timing.
DTMF_ON_MS = 100.0
DTMF_OFF_MS = 100.0
DTMF_LEVEL_DBFS = -10.0
#: Tone items remembered as ours (not the model's). The item a barge-in finds is the latest one
#: sent, so an older one could only matter behind this many newer tone items still queued.
LOCAL_ITEMS_KEPT = 64
_GATE_RANK = {AudioGate.ALLOW: 0, AudioGate.HOLD: 1, AudioGate.DROP: 2}


@dataclass(slots=True)
class _PendingEnd:
    """An ``EndAfterPlayout`` waiting: the items queued since, and which of them ended."""

    end: EndCall
    deadline_s: float
    armed: bool  # agent audio was playing when it was asked for: its end counts too
    items: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)


class AgentAudio:
    """Agent audio for one call, from the model's events to the playout.

    Args:
        playout: the call's playout.
        turns: the call's transcript (barge-in and stop cuts, turn latency).
        stats: the call's counters (``barge_ins``).
        bridge: the model bridge (``interrupt``, ``output_format``).
        gates: the policies with ``gates_audio``.
        ms: ms from the call's start, now.
        event: adds a journal event ``(kind, **data)``.
        log: the call's logger.
        barge: the call's barge-in settings (:class:`~gateway.session.bargein.BargeInConfig`).
    """

    def __init__(
        self,
        playout: Playout,
        turns: Turns,
        stats: CallStats,
        bridge: llm.ModelBridge,
        gates: Sequence[Policy],
        ms: Callable[[], float],
        event: Callable[..., None],
        log: logging.LoggerAdapter,
        barge: BargeInConfig | None = None,
    ) -> None:
        self.playout = playout
        self.turns = turns
        self.stats = stats
        self.bridge = bridge
        self.gates = list(gates)
        self._ms = ms
        self._event = event
        self.log = log
        self.held: list[llm.AudioOut | llm.ResponseDone] = []  # held agent audio and item ends, in order
        self._gated: dict[str, None] = {}  # items held or dropped since the last stop (ordered)
        self._local: deque[str] = deque(maxlen=LOCAL_ITEMS_KEPT)  # tone items made here: not the model's
        self._model_item: str | None = None  # the model's latest item queued
        self._dtmf_seq = itertools.count(1)
        self._pending: _PendingEnd | None = None
        self.barge = barge if barge is not None else BargeInConfig()
        self._pause = PauseGate(self.barge.commit_ms, self.barge.resume_gap_ms)
        self._pause_onset_ms: float | None = None  # the paused speech's onset (ms, call clock)
        self._paused_at_ms = 0.0
        self._rearm_ms: float | None = None  # after a short resume: voiced up to here, until the VAD's end
        self._heard_to_ms = 0.0  # the caller audio scored at the last progress (caller-audio ms)
        self._model_done = True  # the model's latest item has ended (its ResponseDone came)
        #: Told when a paused barge-in proves to be a caller turn (:meth:`hold_turn`): the
        #: session's start of the model's turn, held back while the pause was undecided.
        self.on_turn: Callable[[], Awaitable[None]] | None = None
        self._turn_held = False

    # ------------------------------------------------------------------ model audio in
    def offer(self, event: llm.AudioOut) -> bool:
        """Agent audio from the model: queue, hold or drop it; True if it was queued."""
        if not event.audio:
            return False
        if self.gates:
            gate = self._gate(event.item_id)
            if gate is AudioGate.DROP:
                self._gated[event.item_id] = None
                return False
            if gate is AudioGate.HOLD or self.held:  # held audio keeps its order
                self._gated[event.item_id] = None
                self.held.append(event)
                return False
        return self._queue(event)

    def item_done(self, event: llm.ResponseDone) -> None:
        """The model finished an item (or a response): end its playout, after any held audio."""
        if self.held:
            self.held.append(event)
        elif event.response_id:
            self._end_item(event.response_id)

    async def release(self) -> None:
        """Queue the held agent audio (and end its items) in arrival order; send what is due."""
        held, self.held = self.held, []
        for event in held:
            if isinstance(event, llm.AudioOut):
                self._queue(event)
            elif event.response_id:
                self._end_item(event.response_id)
        if held:
            await self.playout.pump()

    def _queue(self, event: llm.AudioOut) -> bool:
        audio_ms = self.bridge.output_format.ms_for_bytes(len(event.audio))
        if not self.turns.agent_audio(event.item_id, self._ms(), audio_ms):
            return False  # a barge-in or stop cut this item
        self.playout.enqueue(event.item_id, event.audio)
        if event.item_id != self._model_item:
            self._model_done = False
        self._model_item = event.item_id
        if self._pending is not None:
            self._pending.items.add(event.item_id)
        return True

    def _end_item(self, item_id: str) -> None:
        self.playout.end_item(item_id)
        if item_id == self._model_item:
            self._model_done = True
        if self._pending is not None:
            self._pending.ended.add(item_id)

    def _gate(self, item_id: str) -> AudioGate:
        """The strictest answer of the audio-gating policies (DROP > HOLD > ALLOW)."""
        now_ms = self._ms()
        gate = AudioGate.ALLOW
        for policy in self.gates:
            answer = policy.on_agent_audio(item_id, now_ms)
            if _GATE_RANK[answer] > _GATE_RANK[gate]:
                gate = answer
        return gate

    # ------------------------------------------------------------------ pause, then commit
    @property
    def paused(self) -> bool:
        """A pause-then-commit barge-in candidate is pending (agent audio paused)."""
        return self._pause.paused

    @property
    def watching(self) -> bool:
        """The VAD's voiced time matters now: a pause is pending, or one resumed on short speech
        and the VAD has not yet ended that utterance (new voice in it pauses again: the VAD
        will not confirm a new start before its end of speech)."""
        return self._pause.paused or self._rearm_ms is not None

    def hold_turn(self) -> None:
        """The caller's speech paused the agent: the session holds back the model's start of
        turn until the pause proves a turn (a commit, or any end but short speech: then
        :attr:`on_turn` is awaited). A backchannel that resumes never reaches the model as a
        turn (it would cut a Gemini reply, or be answered after the agent's sentence)."""
        self._turn_held = True

    def drop_held_turn(self) -> bool:
        """The VAD's end of speech: whether that utterance's turn was still held (a backchannel:
        the session then sends no end of turn either); the hold ends."""
        held, self._turn_held = self._turn_held, False
        return held

    async def _release_turn(self) -> None:
        if self._turn_held:
            self._turn_held = False
            if self.on_turn is not None:
                await self.on_turn()

    async def pause(self, onset_ms: float, speech_onset_ms: float, voiced_to_ms: float, heard_to_ms: float) -> None:
        """A barge-in candidate in ``pause_then_commit`` mode: stop sending agent audio now.

        Journal ``barge_in_paused``. The verdict may come at once (a threshold below the VAD's
        confirmation). Nothing happens if already paused.

        Args:
            onset_ms: the speech's onset (ms from the call's start; the commit's reaction time).
            speech_onset_ms, voiced_to_ms, heard_to_ms: the onset, the end of the last voiced
                chunk and of the audio scored, on the caller-audio timeline
                (:meth:`~gateway.session.bargein.PauseGate.hear`).
        """
        if not self._pause.pause(speech_onset_ms, voiced_to_ms):
            return
        self._pause_onset_ms = onset_ms
        self._paused_at_ms = self._ms()
        await self.playout.pause()
        self.stats.barge_in_pauses += 1
        self._event("barge_in_paused", onsetMs=int(onset_ms), itemId=self.playout.ledger.latest_sent_item())
        self.log.info("barge-in candidate: agent audio paused")
        await self.bridge.turn_verdict("pending")  # a turn the model's VAD commits now waits
        await self.caller_voiced(voiced_to_ms, heard_to_ms)

    async def caller_voiced(self, voiced_to_ms: float, heard_to_ms: float,
                            runs_ms: tuple[tuple[float, float], ...] = ()) -> None:
        """The VAD's progress while :attr:`watching` (same timeline as :meth:`pause`): commit or
        resume once the verdict is in; after a short resume, a voiced chunk pauses again (its
        onset taken as the end of the audio scored at the previous progress)."""
        rearm, previous = self._rearm_ms, self._heard_to_ms
        self._heard_to_ms = heard_to_ms
        if not self._pause.paused and rearm is not None:
            if voiced_to_ms > rearm:
                self._rearm_ms = None
                if not self.playout.playing(self._ms()):  # the caller talks on with no agent audio:
                    await self.bridge.turn_verdict("turn")
                    return await self._release_turn()  # a turn, not a backchannel
                onset = min(voiced_to_ms, max(previous, rearm))
                now_ms = self._ms()
                await self.pause(now_ms - (heard_to_ms - onset), onset, voiced_to_ms, heard_to_ms)
            return
        await self._decide(self._pause.hear(voiced_to_ms, heard_to_ms, runs_ms), rearm=True)

    async def caller_speech_ended(self) -> None:
        """The VAD's end of speech while :attr:`watching`: the verdict on the voiced span so far."""
        self._rearm_ms = None
        await self._decide(self._pause.speech_ended())

    async def check_pause(self) -> None:
        """Resume a pause no caller audio decided in time (``timeout``; the session's policy
        tick asks): commit + resume gap + :data:`~gateway.session.bargein.PAUSE_GRACE_MS`."""
        limit_ms = self.barge.commit_ms + self.barge.resume_gap_ms + PAUSE_GRACE_MS
        if self._pause.paused and self._ms() - self._paused_at_ms > limit_ms:
            await self.resume("timeout")

    async def _decide(self, verdict: PauseInput | None, *, rearm: bool = False) -> None:
        if verdict is PauseInput.RESUME:
            voiced_to = self._pause.voiced_to_ms
            await self.resume("short")
            if rearm:  # the VAD is still in the caller's utterance: watch it for more voice
                self._rearm_ms = voiced_to
        elif verdict is PauseInput.COMMIT:
            # The reply is cut unless it had ended and played out during the pause: a model
            # pausing between chunks (or sentences) leaves the ledger empty for a moment.
            if self.playout.playing(self._ms()) or not self._model_done or self.held:
                await self.barge_in("vad", self._pause_onset_ms)
            else:  # nothing is left to cut
                await self.resume("played_out")

    async def resume(self, reason: str) -> None:
        """End a pause by playing on from the next unsent frame (no-op if not paused).

        Journal ``barge_in_resumed`` with ``reason`` (``short``: the caller's speech was shorter
        than the commit threshold; ``played_out``; ``muted``; ``timeout``), ``pausedMs`` and
        ``voicedMs``. Any watch for more voice after an earlier short resume ends too.
        """
        self._rearm_ms = None
        if not self._pause.paused:
            return
        voiced_ms = self._pause.voiced_ms
        self._pause.end(PauseInput.RESUME)
        paused_ms = await self.playout.resume()
        self.stats.barge_in_resumes += 1
        self._event("barge_in_resumed", reason=reason, pausedMs=round(paused_ms), voicedMs=round(voiced_ms))
        self.log.info("barge-in candidate resumed (%s) after %d ms", reason, paused_ms)
        await self.bridge.turn_verdict("backchannel" if reason == "short" else "turn")
        if reason != "short":  # the caller's speech was no backchannel
            await self._release_turn()

    # ------------------------------------------------------------------ stopping
    async def barge_in(self, source: str, onset_ms: float | None = None) -> None:
        """The caller (or the model's VAD) interrupted: clear, drop the queue, cut the reply.

        While paused (pause-then-commit) this is the pause's commit, whatever its source: the
        caller heard what played before the pause; the ``barge_in`` event then has
        ``pausedMs`` and ``voicedMs`` too.

        Args:
            source: ``vad`` (our VAD), ``model_vad`` or ``model`` (the model cut itself: it is
                not told to interrupt).
            onset_ms: when the caller's speech began (ms from the call's start), for the
                reaction-time sample.
        """
        extra: dict[str, int] = {}
        self._rearm_ms = None
        if self._pause.paused:
            extra = {"pausedMs": round(self._ms() - self._paused_at_ms), "voicedMs": round(self._pause.voiced_ms)}
            self._pause.end(PauseInput.COMMIT)
            self.stats.barge_in_commits += 1
        heard, cut, now_ms = await self.playout.clear()
        self.stats.barge_ins += 1
        reaction_ms = now_ms - onset_ms if onset_ms is not None else None
        item_id, heard_ms = self._cut(heard, cut, reaction_ms)
        self._event("barge_in", source=source, itemId=item_id, heardMs=heard_ms, **extra)
        self.log.info("barge-in (%s): caller heard %d ms of %s", source, heard_ms, item_id)
        if source != "model":
            await self._interrupt(heard, now_ms)
        await self.bridge.turn_verdict("turn")  # after the cancel: the caller's turn is answered
        await self._release_turn()

    async def stop(self, reason: str) -> None:
        """A policy stops the agent: as a barge-in, and held audio is dropped too; not counted.

        Every item held or dropped by a gate since the last stop is cut at 0 ms heard (its late
        audio is dropped); the model is told about the one it was saying. A pause ends with it.
        """
        self._rearm_ms = None
        paused = self._pause.paused
        if paused:
            self._pause.end(PauseInput.ABANDON)
        heard, cut, now_ms = await self.playout.clear()
        item_id, heard_ms = self._cut(heard, cut, None)
        self.held.clear()
        gated, self._gated = list(self._gated), {}
        for gated_id in gated:
            if gated_id not in self.turns.cancelled:
                self.turns.barge_in(gated_id, 0, 0, None)
        self._event("agent_stopped", reason=reason, itemId=item_id, heardMs=heard_ms, dropped=len(gated))
        self.log.info("agent stopped (%s): caller heard %d ms of %s", reason, heard_ms, item_id)
        if heard is None and gated:  # nothing played: the model's reply is the one it was gated on
            heard = Heard(gated[-1], 0, 0)
        await self._interrupt(heard, now_ms)
        if paused:
            await self.bridge.turn_verdict("turn")
        await self._release_turn()  # the caller's speech that paused the agent goes on as a turn

    def _cut(self, heard: Heard | None, cut: list[Heard], reaction_ms: float | None) -> tuple[str | None, int]:
        """Mark the items a clear cut in the transcript; the item playing and its heard ms."""
        item_id = heard.item_id if heard else None
        heard_ms = heard.heard_ms if heard else 0
        self.turns.barge_in(item_id, heard_ms, heard.queued_ms if heard else 0, reaction_ms)
        for later in cut:  # replies queued after the one playing: the caller heard none of them
            if later.item_id != item_id:
                self.turns.barge_in(later.item_id, later.heard_ms, later.queued_ms, None)
        if self._pending is not None:  # cut items will never play on: they count as ended
            self._pending.ended.update(h.item_id for h in cut)
            if item_id is not None:
                self._pending.ended.add(item_id)
        return item_id, heard_ms

    async def _interrupt(self, heard: Heard | None, now_ms: float) -> None:
        """``bridge.interrupt`` about the model's own latest item (DTMF tones are not its)."""
        if heard is not None and heard.item_id in self._local:
            model_item = self._model_item
            heard = self.playout.ledger.heard(now_ms, model_item) if model_item is not None else None
        await self.bridge.interrupt(heard.item_id if heard else None, heard.heard_ms if heard else 0)

    # ------------------------------------------------------------------ DTMF
    async def play_dtmf(self, digits: str) -> str | None:
        """Send ``digits`` to the callee; the tones' item id, or ``None`` if the carrier plays them.

        With a :class:`~gateway.carriers.events.StreamDtmf` adapter its frame is sent now (journal
        ``dtmf_sent``, ``source: "stream"``); otherwise ``digits`` are queued as Q.23 tones (item
        ``dtmf_<n>``, ``source: "in-band"``) and what is due is sent.

        Raises:
            ValueError: a character that is not a DTMF key.
        """
        adapter = self.playout.adapter
        if isinstance(adapter, StreamDtmf):
            await self.playout.send(adapter.send_dtmf(digits))
            self._event("dtmf_sent", digits=digits, source="stream")
            return None
        out = self.bridge.output_format
        rate = out.sample_rate
        pcm = dtmf_sequence(digits, rate, on_ms=DTMF_ON_MS, off_ms=DTMF_OFF_MS, level_dbfs=DTMF_LEVEL_DBFS)
        item_id = f"dtmf_{next(self._dtmf_seq)}"
        self._local.append(item_id)
        self.playout.enqueue(item_id, encode(pcm, out.encoding))
        self._end_item(item_id)
        if self._pending is not None:
            self._pending.items.add(item_id)
        self._event("dtmf_sent", digits=digits, source="in-band", itemId=item_id,
                    durationMs=round(len(pcm) * 1000 / rate))  # fmt: skip
        await self.playout.pump()
        return item_id

    # ------------------------------------------------------------------ end after playout
    def end_after(self, end: EndCall, limit_s: float, now_s: float) -> None:
        """Do ``end`` once the audio playing now and queued from now on has played (if none is
        playing now: once some has been queued and played), or at ``now_s + limit_s``."""
        self._pending = _PendingEnd(end, now_s + max(0.0, limit_s), armed=self.playout.playing(self._ms()))

    def due_end(self, now_s: float) -> tuple[EndCall, bool] | None:
        """The deferred end once due, with whether it came by its time limit; else ``None``."""
        pending = self._pending
        if pending is None:
            return None
        if now_s >= pending.deadline_s:
            return pending.end, True
        played = (
            (pending.items or pending.armed) and pending.items <= pending.ended
            and not self.held and not self.playout.playing(self._ms())
        )  # fmt: skip
        return (pending.end, False) if played else None

