"""OpenAI Realtime conversation carry-over, sans-I/O: the history one session hands the next.

A hosted Realtime session ends after 60 minutes, and a socket can drop mid-call. Either way the
bridge (:class:`gateway.llm.openai_realtime.OpenAIRealtimeBridge`) opens a new session and moves
the call there; :class:`RealtimeHandover`, the third part of
:class:`gateway.llm.openai_protocol.RealtimeProtocol`, keeps what that takes:

* :attr:`RealtimeHandover.history`: the conversation in order, as released transcripts (user
  text, agent text cut to what the caller heard), function calls and their outputs;
* :attr:`RealtimeHandover.idle`: no response running or owed, no caller speech, no tool call
  running, no transcript held: a moment to switch at without losing anything;
* :meth:`RealtimeHandover.abort`: the old session is gone: end its response in progress
  (``ResponseDone`` status ``incomplete``) and release every transcript it held;
* :meth:`RealtimeHandover.carry_from`: queue the old session's conversation into this fresh one
  as ``conversation.item.create`` events (user ``input_text``, assistant ``output_text``,
  ``function_call``, ``function_call_output``), replay the caller's turn in progress (or the last
  one, if its answer and its transcript were lost with the socket) and ask for the answer owed;
* a barge-in on an agent item of an earlier session (still playing at the switch) replaces its
  carried text with the share the caller heard (``conversation.item.delete``, then ``create``
  after the item before it: ``previous_item_id``).

Item shapes: ``openai.types.realtime.ConversationItem`` (GA): assistant text content is
``output_text`` (a client cannot create ``output_audio``: "it cannot populate assistant audio
messages", ``ConversationItemCreateEvent``). No sockets, no asyncio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from gateway.llm.base import BridgeEvent, ResponseDone
from gateway.llm.common import cut_heard_text
from gateway.llm.tools import ToolCall

if TYPE_CHECKING:
    from gateway.llm.openai_events import _Entry, _Item

__all__ = ["Turn", "RealtimeHandover", "CARRY_LIMIT_CHARS", "CONTINUING_NOTE", "PRE_ROLL_MS"]

#: Most text carried into a new session (newest turns kept): ~25k tokens.
CARRY_LIMIT_CHARS = 100_000
#: Caller audio before the start of a turn kept for a replay (covers the VAD's confirm delay).
PRE_ROLL_MS = 1000
#: Appended to the instructions of a session that continues a call.
CONTINUING_NOTE = (
    "This phone call is already in progress: the conversation so far is in your context. "
    "Do not greet the caller again; carry on from where the conversation left off."
)


@dataclass(slots=True)
class Turn:
    """One entry of the conversation, in order.

    Attributes:
        role: ``user`` / ``agent`` (a message), ``call`` (a function call), ``output`` (its
            output).
        text: user text; agent text in full (see :attr:`heard_ms`); a call's output.
        source_id: agent: the item id the call session knows the audio by (first session's).
        item: agent turns of the live session: their text is read when carried (a barge-in
            after the transcript was released still cuts it).
        audio_ms: agent: ms of audio the item delivered (to cut :attr:`text` at heard ms).
        heard_ms: agent: ms the caller heard, if a barge-in cut it.
        call: ``call`` / ``output``: the function call.
        wire_id: the item's id in the session it was carried into.
    """

    role: Literal["user", "agent", "call", "output"]
    text: str = ""
    source_id: str = ""
    item: _Item | None = None
    audio_ms: float = 0.0
    heard_ms: int | None = None
    call: ToolCall | None = None
    wire_id: str = ""

    def spoken(self) -> str:
        """Agent text as the caller heard it (the whole text for other roles)."""
        if self.role != "agent" or self.heard_ms is None:
            return self.text.strip()
        return cut_heard_text(self.text, self.heard_ms, self.audio_ms)

    def frozen(self, generated_ms: Any) -> Turn:
        """A copy whose text no longer follows a live item (what a new session carries)."""
        if self.item is None:
            return Turn(self.role, self.text, self.source_id, None, self.audio_ms, self.heard_ms, self.call)
        item = self.item
        text = item.transcript if item.transcript is not None else "".join(item.parts)
        return Turn("agent", text, self.source_id, None, generated_ms(item), item.heard_ms)

    def wire_item(self) -> dict[str, Any] | None:
        """The ``conversation.item.create`` item for this turn; ``None`` if there is nothing."""
        text = self.spoken()
        if self.role == "user" and text:
            return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        if self.role == "agent" and text:
            return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
        if self.role == "call" and self.call is not None:
            args = self.call.arguments
            args = args if isinstance(args, str) else orjson.dumps(args).decode()
            return {"type": "function_call", "call_id": self.call.call_id, "name": self.call.name, "arguments": args}
        if self.role == "output" and self.call is not None:
            return {"type": "function_call_output", "call_id": self.call.call_id, "output": self.text}
        return None


def bounded(turns: Sequence[Turn], limit_chars: int) -> list[Turn]:
    """The newest ``turns`` whose text fits ``limit_chars``; outputs whose call fell off go too."""
    kept: list[Turn] = []
    total = 0
    for turn in reversed(turns):
        total += len(turn.text) + (len(str(turn.call.arguments)) if turn.call else 0)
        if total > limit_chars:
            break
        kept.append(turn)
    kept.reverse()
    calls = {t.call.call_id for t in kept if t.role == "call" and t.call}
    return [t for t in kept if t.role != "output" or (t.call and t.call.call_id in calls)]


class RealtimeHandover:
    """Carry-over state of the Realtime state machine (a mixin of ``RealtimeProtocol``).

    Caller audio is kept per turn (bounded by :attr:`replay_limit_bytes`, oldest dropped) so a
    turn cut by a lost socket can be replayed to the next session.
    """

    # State set up by RealtimeProtocol.__init__ (shared with the other two parts).
    config: Any
    audio_format: Any
    supports_truncate: bool
    response_id: str | None
    history: list[Turn]
    caller_speaking: bool
    replay_limit_bytes: int
    _items: dict[str, _Item]
    _audio_order: list[str]
    _queue: deque[_Entry]
    _muted: set[str]
    _create_pending: bool
    _server_reply_expected: bool
    _held_users: list[str]
    _gate_pending: bool
    _response_wanted: bool
    _outputs_waiting: bool
    _say_wanted: str
    _calls_seen: set[str]
    _calls_running: set[str]
    _carried: dict[str, Turn]
    _turn_audio: deque[bytes]
    _turn_audio_bytes: int
    _last_turn_audio: list[bytes]
    _user_missing: bool
    replayed_bytes: int
    generated_ms: Any

    @property
    def response_owed(self) -> bool:
        """A response is running, asked for, or due (after a turn, a tool output, a ``say``, or
        a turn the server's VAD ended: it answers that itself)."""
        return bool(
            self.response_id is not None or self._create_pending or self._response_wanted
            or self._say_wanted or self._outputs_waiting or self._calls_running
            or self._server_reply_expected or self._held_users
        )  # fmt: skip

    @property
    def idle(self) -> bool:
        """Between turns: nothing owed, the caller silent, every transcript released."""
        return not (self.caller_speaking or self.response_owed or self._queue)

    def _keep_turn_audio(self, audio: bytes) -> None:
        self._turn_audio.append(audio)
        self._turn_audio_bytes += len(audio)
        while self._turn_audio_bytes > self.replay_limit_bytes and len(self._turn_audio) > 1:
            self._turn_audio_bytes -= len(self._turn_audio.popleft())

    def _turn_began(self) -> None:
        """The caller started talking: keep only :data:`PRE_ROLL_MS` of the audio before (a
        replay sends the turn, not the silence since the last one)."""
        self.caller_speaking = True
        keep = self.audio_format.bytes_for_ms(PRE_ROLL_MS)
        while self._turn_audio and self._turn_audio_bytes - len(self._turn_audio[0]) >= keep:
            self._turn_audio_bytes -= len(self._turn_audio.popleft())

    def _turn_committed(self) -> None:
        self._last_turn_audio = list(self._turn_audio)
        self._turn_audio.clear()
        self._turn_audio_bytes = 0
        self.caller_speaking = False

    def abort(self) -> list[BridgeEvent]:
        """This session is over: end its response (``incomplete``), release every transcript.

        Returns the :class:`ResponseDone` events for audio items (and the response) cut short,
        then the transcripts still held, in conversation order.
        """
        out: list[BridgeEvent] = []
        for item_id in self._audio_order:
            item = self._items[item_id]
            if not item.ended:
                item.ended = True
                out.append(ResponseDone(item_id, "incomplete"))
        for item in self._items.values():
            item.final = True
        if self.response_id is not None:
            out.append(ResponseDone(self.response_id, "incomplete"))
        self._user_missing = any(e.role == "user" and e.text is None for e in self._queue)
        out.extend(self.flush_transcripts())  # type: ignore[attr-defined]
        return out

    def carry_from(self, old: RealtimeHandover, *, limit_chars: int = CARRY_LIMIT_CHARS) -> int:
        """Queue ``old``'s conversation (after its :meth:`abort`) into this new session.

        Call it right after :meth:`session_update`. Returns the number of items carried.
        """
        carried = 0
        for turn in bounded([t.frozen(old.generated_ms) for t in old.history], limit_chars):
            item = turn.wire_item()
            if item is None:
                continue
            turn.wire_id = item["id"] = self._carry_id()
            self._send("conversation.item.create", item=item)  # type: ignore[attr-defined]
            self.history.append(turn)
            if turn.role == "agent":
                self._carried[turn.source_id] = turn
            carried += 1
        self._calls_seen |= old._calls_seen
        self._calls_running = set(old._calls_running)
        self._say_wanted = old._say_wanted
        self._gate_pending = old._gate_pending  # a pause still undecided holds this session's turns too
        server_vad = self.config.turn_mode != "gateway"
        owed = old.response_owed and not old._calls_running
        if old.caller_speaking:
            self._replay(old._turn_audio)
            self.caller_speaking = not server_vad  # the server's VAD hears it anew
        elif owed and old._last_turn_audio and (old._user_missing or not self._has_user_entries()):
            self._replay(old._last_turn_audio)  # the caller's words were lost with the session
            if server_vad:
                owed = False  # its VAD commits the replayed turn and answers it
            else:
                self._send("input_audio_buffer.commit")  # type: ignore[attr-defined]
                self._uncommitted_bytes = 0
                self._turn_committed()
        self._response_wanted = owed
        self._maybe_respond()  # type: ignore[attr-defined]
        return carried

    def _has_user_entries(self) -> bool:
        backend = self.backend  # type: ignore[attr-defined]
        return bool(backend.transcription_model or backend.session_style == "xai")

    def _replay(self, chunks: Sequence[bytes] | deque[bytes]) -> None:
        for chunk in list(chunks):
            self.append_audio(chunk)  # type: ignore[attr-defined]
            self.replayed_bytes += len(chunk)

    def _carry_id(self) -> str:
        return f"gwc_{next(self._ids)}"  # type: ignore[attr-defined]

    def recut_carried(self, source_id: str, heard_ms: int) -> bool:
        """Barge-in on an agent item of an earlier session: carry only what was heard.

        Returns False if ``source_id`` is not a carried agent item.
        """
        turn = self._carried.get(source_id)
        if turn is None:
            return False
        heard = max(0, int(heard_ms))
        if turn.heard_ms is not None and turn.heard_ms <= heard:
            return True
        turn.heard_ms = heard
        if not self.supports_truncate:
            return True  # the history still carries the cut text into later sessions
        self._send("conversation.item.delete", item_id=turn.wire_id)  # type: ignore[attr-defined]
        item = turn.wire_item()
        if item is None:
            turn.wire_id = ""
            return True
        index = self.history.index(turn)
        before = next((t.wire_id for t in reversed(self.history[:index]) if t.wire_id), "root")
        turn.wire_id = item["id"] = self._carry_id()
        self._send("conversation.item.create", previous_item_id=before, item=item)  # type: ignore[attr-defined]
        return True
