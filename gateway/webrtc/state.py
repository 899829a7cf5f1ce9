"""The ``events`` data channel's messages (SPEC12 §4) and the agent state they report. Pure.

Gateway → page, one JSON text message each (built here as dicts; the transport serialises):

* ``{"type": "state", "state": …, "atMs": int}`` from :class:`AgentState`;
* ``{"type": "transcript", "role", "text", "final": true, "atMs", "latencyMs", "interrupted",
  "heardMs", "index"}`` (:func:`transcript_message`): one per transcript turn as the record
  has it. ``index`` is the turn's place in the call's transcript: a later message with the same
  index replaces the turn (a barge-in cut it to what was heard, its latency became known once
  its first audio left, or the model corrected its text);
* ``{"type": "event", "kind", "atMs", "data"}`` (:func:`event_message`): a journal event as
  the record keeps it;
* ``{"type": "ended", "status", "endReason"}`` (:func:`ended_message`).

Times (``atMs``) are ms since the call's start.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AgentState", "transcript_message", "event_message", "ended_message", "QUIET_FRAMES"]

#: Frames (20 ms) of the outbound track without agent audio before ``speaking`` becomes
#: ``listening``: a reply's synthesis may leave short gaps between its chunks (200 ms).
QUIET_FRAMES = 10


class AgentState:
    """What the agent is doing, as the page shows it, from what the transport sees.

    ``listening`` (waiting for the caller) → ``thinking`` (the caller's speech ended, no agent
    audio yet) → ``speaking`` (the outbound track is emitting agent audio) → ``listening`` once
    it has emitted none for :data:`QUIET_FRAMES` frames; a ``clear`` (barge-in) is
    ``interrupted`` then ``listening`` at once. Each method returns the states entered (in
    order; empty: no change).
    """

    __slots__ = ("state", "_quiet")

    def __init__(self) -> None:
        self.state: str | None = None
        self._quiet = 0

    def _to(self, state: str) -> list[str]:
        if state == self.state:
            return []
        self.state = state
        return [state]

    def connected(self) -> list[str]:
        """The call is up: ``listening``."""
        return self._to("listening")

    def emitted(self, agent_audio: bool) -> list[str]:
        """The track emitted one frame, with agent audio in it or not (silence)."""
        if agent_audio:
            self._quiet = 0
            return self._to("speaking")
        if self.state == "speaking":
            self._quiet += 1
            if self._quiet >= QUIET_FRAMES:
                return self._to("listening")
        return []

    def cleared(self) -> list[str]:
        """A barge-in cleared the agent's audio: ``interrupted``, then ``listening``."""
        self._quiet = 0
        self.state = "listening"
        return ["interrupted", "listening"]

    def event(self, kind: str) -> list[str]:
        """A journal event: the end of the caller's speech is ``thinking`` unless the agent speaks."""
        if kind == "caller_speech_end" and self.state != "speaking":
            return self._to("thinking")
        return []


def transcript_message(index: int, turn: dict[str, Any]) -> dict[str, Any]:
    """The ``transcript`` message of turn ``index`` (a session transcript turn's dict)."""
    return {
        "type": "transcript", "role": turn.get("role"), "text": turn.get("text", ""), "final": True,
        "atMs": turn.get("at_ms"), "latencyMs": turn.get("latency_ms"),
        "interrupted": bool(turn.get("interrupted")), "heardMs": turn.get("heard_ms"), "index": index,
    }  # fmt: skip


def event_message(event: dict[str, Any]) -> dict[str, Any]:
    """The ``event`` message of one journal event (``{"kind", "at_ms", "data"}``)."""
    return {"type": "event", "kind": event.get("kind"), "atMs": event.get("at_ms"), "data": event.get("data") or {}}


def ended_message(status: str, end_reason: str) -> dict[str, Any]:
    """The ``ended`` message, sent before the gateway closes the connection."""
    return {"type": "ended", "status": status, "endReason": end_reason}
