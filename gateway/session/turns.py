"""Turns and transcript of one call: caller speech, agent turns, barge-in cuts, latency samples.

The transcript is a list of turns ``{"role", "text", "at_ms", "interrupted"}`` (``heard_ms``
too for an agent turn a barge-in cut). A barge-in cuts the agent turn being played to the text
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

    __slots__ = ("transcript", "cancelled", "_agent_turns", "_stats", "speech_end_ms", "speech_onset_ms")

    def __init__(self, stats: CallStats) -> None:
        self.transcript: list[dict[str, Any]] = []
        self.cancelled: dict[str, int] = {}  # item cut by barge-in -> ms the caller heard
        self._agent_turns: dict[str, int] = {}  # item -> index of its turn in the transcript
        self._stats = stats
        self.speech_end_ms: float | None = None
        self.speech_onset_ms: float | None = None

    def speech_started(self, onset_ms: float) -> None:
        """The caller started speaking at ``onset_ms``."""
        self.speech_onset_ms = onset_ms
        self.speech_end_ms = None

    def speech_ended(self, now_ms: float) -> None:
        """The caller stopped speaking (the VAD's end of speech) at ``now_ms``."""
        self.speech_end_ms = now_ms

    def agent_audio(self, item_id: str, now_ms: float) -> bool:
        """Agent audio of ``item_id`` arrived; False if a barge-in cut that item (drop it).

        The first audio after the caller stopped speaking gives one turn latency sample.
        """
        if item_id in self.cancelled:
            return False
        if self.speech_end_ms is not None:
            if len(self._stats.turn_latency_ms) < MAX_SAMPLES:
                self._stats.turn_latency_ms.append(now_ms - self.speech_end_ms)
            self.speech_end_ms = None
        return True

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
            return
        turn = {"role": event.role, "text": event.text, "at_ms": int(now_ms), "interrupted": False}
        if event.role == "agent" and event.item_id in self.cancelled:
            # The model finalised this transcript after the barge-in; bridges send such late
            # transcripts already cut to what was heard, so flag it without cutting again.
            turn["interrupted"] = True
            turn["heard_ms"] = self.cancelled[event.item_id]
        if event.role == "agent" and event.item_id:
            self._agent_turns[event.item_id] = len(self.transcript)
        self.transcript.append(turn)

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
