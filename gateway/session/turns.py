"""Turns and transcript of one call: caller speech, agent turns, barge-in cuts, latency samples.

The transcript is a list of turns ``{"role", "text", "at_ms", "interrupted"}`` (``heard_ms``
too for an agent turn a barge-in cut), with the turn's span where it was measured: a caller
turn's ``start_ms`` / ``end_ms`` are the onset of its first speech and the end of its last
(the VAD's) since the previous caller turn; an agent turn's are its item's first audio queued
for the caller and that plus the item's audio (the heard part when cut), and ``latency_ms`` the
end of the caller's speech → that first audio, when the reply followed caller speech. A barge-in cuts the agent turn being played to the text
the caller heard (by the share of the item's audio heard, :func:`gateway.llm.common.cut_heard`)
and remembers the item, so its late audio is dropped and its late transcript is flagged (not
cut again: bridges send such transcripts already cut). A bridge corrects an agent turn by
sending its transcript again (the local agent does for a reply cut before all of it was
synthesised, whose queued share of audio was no measure of its text). Latency samples, at most
:data:`~gateway.session.common.MAX_SAMPLES` each, in ms: end of caller speech → first agent
audio (``turn_latency_ms``), speech onset → carrier ``clear`` (``barge_in_ms``).

Pure and synchronous: time comes in as ms from the call's start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.llm import base as llm
from gateway.llm.common import cut_heard
from gateway.session.common import MAX_SAMPLES, CallStats

__all__ = ["Turns"]


class Turns:
    """The call's transcript and turn timing.

    Args:
        stats: the call's counters (its latency sample lists).
    """

    __slots__ = ("transcript", "cancelled", "_agent_turns", "_stats", "speech_end_ms", "speech_onset_ms",
                 "_user_span", "_last_user", "_items", "on_change")

    def __init__(self, stats: CallStats) -> None:
        self.transcript: list[dict[str, Any]] = []
        self.cancelled: dict[str, int] = {}  # item cut by barge-in -> ms the caller heard
        self._agent_turns: dict[str, int] = {}  # item -> index of its turn in the transcript
        self._stats = stats
        self.speech_end_ms: float | None = None
        self.speech_onset_ms: float | None = None
        self._user_span: list[float | None] = [None, None]  # the next caller turn's first onset, last end
        self._last_user: dict[str, Any] | None = None  # the latest caller turn, while its speech may go on
        self._items: dict[str, _ItemSpan] = {}  # agent item -> its audio's span
        #: Optional observer, called with ``(index, turn)`` when a turn is added or changed (its
        #: text corrected or cut, its latency known): the WebRTC transport's live view.
        self.on_change: Callable[[int, dict[str, Any]], None] | None = None

    def _changed(self, idx: int) -> None:
        if self.on_change is not None:
            self.on_change(idx, self.transcript[idx])

    def speech_started(self, onset_ms: float) -> None:
        """The caller started speaking at ``onset_ms``."""
        self.speech_onset_ms = onset_ms
        self.speech_end_ms = None
        if self._user_span[0] is None:
            self._user_span[0] = onset_ms

    def speech_ended(self, now_ms: float) -> None:
        """The caller stopped speaking (the VAD's end of speech) at ``now_ms``.

        An end that comes after the speech's transcript (the model's own turn detection ends a
        turn before the gateway's VAD does) ends that caller turn, when no speech began since.
        """
        self.speech_end_ms = now_ms
        last = self._last_user
        if self._user_span[0] is None and last is not None:
            if now_ms >= last.get("start_ms", now_ms):
                last["end_ms"] = int(now_ms)
            return
        self._user_span[1] = now_ms

    def agent_audio(self, item_id: str, now_ms: float, audio_ms: float = 0.0) -> bool:
        """Agent audio of ``item_id`` (``audio_ms`` of it) arrived; False if a barge-in cut that
        item (drop it).

        The first audio after the caller stopped speaking gives one turn latency sample (and the
        item's ``latency_ms``).
        """
        if item_id in self.cancelled:
            return False
        span = self._items.get(item_id)
        first = span is None
        if span is None:
            span = self._items[item_id] = _ItemSpan(now_ms)
        if self.speech_end_ms is not None:
            latency = now_ms - self.speech_end_ms
            if len(self._stats.turn_latency_ms) < MAX_SAMPLES:
                self._stats.turn_latency_ms.append(latency)
            if span.latency_ms is None and span.audio_ms == 0.0:
                span.latency_ms = latency
            self.speech_end_ms = None
        span.audio_ms += audio_ms
        idx = self._agent_turns.get(item_id)
        if idx is not None:
            self._place(self.transcript[idx], span)
            if first:  # its first audio: the turn's start and latency are known now
                self._changed(idx)
        return True

    @staticmethod
    def _place(turn: dict[str, Any], span: _ItemSpan) -> None:
        """Put an agent item's span on its turn (the heard part when the turn was cut)."""
        turn["start_ms"] = int(span.start_ms)
        heard = turn.get("heard_ms") if turn.get("interrupted") else None
        turn["end_ms"] = int(span.start_ms + (heard if heard is not None else span.audio_ms))
        if span.latency_ms is not None:
            turn["latency_ms"] = max(0, int(round(span.latency_ms)))

    def add(self, event: llm.Transcript, now_ms: float) -> None:
        """Append a finished transcript (a caller's or an agent's turn).

        A second agent transcript of an item already in the transcript is the bridge's
        correction (what was said of a reply it cut or could not finish: the local agent sends
        its text before its audio is all made, so the session's own cut, by the share of the
        audio queued so far, is only provisional): it replaces that turn's text.
        """
        idx = self._agent_turns.get(event.item_id) if event.role == "agent" and event.item_id else None
        if idx is not None:
            self.transcript[idx]["text"] = event.text
            self._changed(idx)
            return
        turn: dict[str, Any] = {"role": event.role, "text": event.text, "at_ms": int(now_ms), "interrupted": False}
        if event.role == "agent" and event.item_id in self.cancelled:
            # The model finalised this transcript after the barge-in; bridges send such late
            # transcripts already cut to what was heard, so flag it without cutting again.
            turn["interrupted"] = True
            turn["heard_ms"] = self.cancelled[event.item_id]
        if event.role == "agent" and event.item_id:
            self._agent_turns[event.item_id] = len(self.transcript)
            span = self._items.get(event.item_id)
            if span is not None:
                self._place(turn, span)
        elif event.role == "user":
            start, end = self._user_span
            if start is not None:
                turn["start_ms"] = int(start)
            if end is not None and (start is None or end >= start):
                turn["end_ms"] = int(end)
            self._user_span = [None, None]
            self._last_user = turn if start is not None else None
        self.transcript.append(turn)
        self._changed(len(self.transcript) - 1)

    def barge_in(self, item_id: str | None, heard_ms: int, queued_ms: int, reaction_ms: float | None) -> None:
        """A barge-in cut ``item_id`` after ``heard_ms`` of its ``queued_ms`` (ms).

        Args:
            item_id: the item playing, or ``None`` if none had played.
            heard_ms: how much of it the caller heard.
            queued_ms: how much of it had been queued.
            reaction_ms: speech onset → ``clear`` (ms), when the caller's VAD caused it.
        """
        if reaction_ms is not None and len(self._stats.barge_in_ms) < MAX_SAMPLES:
            self._stats.barge_in_ms.append(reaction_ms)
        if item_id is None:
            return
        self.cancelled[item_id] = heard_ms
        idx = self._agent_turns.get(item_id)
        if idx is None:
            return
        turn = self.transcript[idx]
        turn["interrupted"] = True
        turn["heard_ms"] = heard_ms
        turn["text"] = cut_heard([(turn["text"], queued_ms)], heard_ms, suffix="")
        span = self._items.get(item_id)
        if span is not None:
            self._place(turn, span)
        self._changed(idx)


class _ItemSpan:
    """An agent item's audio: when its first audio was queued (ms since the call started), how
    much audio it had (ms), and the response time it answered with (ms), if it followed speech."""

    __slots__ = ("start_ms", "audio_ms", "latency_ms")

    def __init__(self, start_ms: float) -> None:
        self.start_ms = start_ms
        self.audio_ms = 0.0
        self.latency_ms: float | None = None
