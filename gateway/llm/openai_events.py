"""OpenAI Realtime server events, sans-I/O: parsing, response/item state, transcripts.

:class:`RealtimeEvents` is the half of :class:`gateway.llm.openai_protocol.RealtimeProtocol`
that parses one server event (:meth:`RealtimeEvents.receive`) into typed
:mod:`gateway.llm.base` events and keeps the state barge-in needs (the response in progress,
each assistant audio item and its ms of audio, tool calls) and releases transcripts in
conversation order (:meth:`RealtimeEvents.flush_transcripts` at the end of the call). Also the
wire constants: beta → GA event :data:`ALIASES`, ignored events, fatal error codes and
:data:`AUTH_HINTS`. No sockets, no asyncio.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pybase64

from gateway.formats import AudioFormat
from gateway.llm.base import (
    AudioOut,
    BridgeError,
    BridgeEvent,
    ResponseDone,
    SpeechStarted,
    Transcript,
)
from gateway.llm.common import cut_heard_text
from gateway.llm.openai_backends import RealtimeBackend
from gateway.llm.openai_history import Turn
from gateway.llm.tools import ToolCall

__all__ = ["RealtimeEvents", "ALIASES", "AUTH_HINTS"]

# Logged under the facade's name, as before the split.
log = logging.getLogger("gateway.llm.openai_protocol")

#: Beta event names still sent by compatible servers → GA names.
ALIASES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

#: Server events we know and deliberately ignore (not counted as unhandled).
_IGNORED = frozenset({
    "conversation.created", "conversation.item.done", "conversation.item.truncated",
    "conversation.item.deleted", "conversation.item.retrieved",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.segment",
    "input_audio_buffer.cleared",
    "input_audio_buffer.timeout_triggered", "output_audio_buffer.started",
    "output_audio_buffer.stopped", "output_audio_buffer.cleared",
    "response.output_item.done", "response.content_part.added", "response.content_part.done",
    "response.output_audio.done", "response.output_text.delta", "response.output_text.done",
    "response.function_call_arguments.delta", "rate_limits.updated", "session.created",
})  # fmt: skip

#: Error codes / types that end the session.
_FATAL_CODES = frozenset({
    "session_expired", "invalid_api_key", "insufficient_quota", "session_not_found",
    "model_not_found", "invalid_session", "unauthorized", "authentication_error",
})  # fmt: skip
_FATAL_TYPES = frozenset({"authentication_error", "permission_error", "invalid_session_error"})
#: Client events whose failure is never fatal (best effort on self-hosted servers).
_BEST_EFFORT = frozenset({
    "response.cancel", "conversation.item.truncate", "conversation.item.delete",
    "input_audio_buffer.commit", "input_audio_buffer.clear",
})  # fmt: skip
_UNSUPPORTED_HINTS = ("unknown", "unsupported", "not supported", "invalid event", "not implemented")
#: Words in an error message that mean the credentials were refused.
AUTH_HINTS = ("invalid_api_key", "authentication", "unauthorized", "permission", "api key")


@dataclass(slots=True)
class _Item:
    """An assistant message item: audio delivered, transcript, what the caller heard."""

    item_id: str
    response_id: str
    audio_bytes: int = 0  # delivered (not muted by a barge-in): truncate bounds
    generated_bytes: int = 0  # every delta the model sent for it, muted or not
    parts: list[str] = field(default_factory=list)
    transcript: str | None = None
    heard_ms: int | None = None  # set by interrupt: whole ms the caller heard
    removed: bool = False  # truncated or deleted on the server
    final: bool = False  # its response is done
    ended: bool = False  # a ResponseDone was emitted for it


@dataclass(slots=True)
class _Entry:
    """A slot of the conversation, in order: a transcript, a function call or its output."""

    role: Literal["user", "agent", "call", "output"]
    item_id: str
    text: str | None = None  # user: set when transcription completes; output: the output
    call: ToolCall | None = None  # call / output


class RealtimeEvents:
    """Server-event half of the Realtime state machine (a mixin of ``RealtimeProtocol``)."""

    # State set up by RealtimeProtocol.__init__ (shared with RealtimeCommands).
    backend: RealtimeBackend
    audio_format: AudioFormat
    supports_truncate: bool
    supports_cancel: bool
    config: Any
    session_ready: bool
    response_id: str | None
    unhandled: int
    caller_speaking: bool
    history: list[Turn]
    _sent: OrderedDict[str, str]
    _items: dict[str, _Item]
    _audio_order: list[str]
    _muted: set[str]
    _queue: deque[_Entry]
    _user_items: set[str]
    _tool_requests: list[ToolCall]
    _calls_seen: set[str]
    _calls_running: set[str]
    _create_pending: bool
    _server_reply_expected: bool
    holds_turns: bool
    _server_turn_open: bool
    _dropped_users: set[str]
    _server_committed: Callable[[str], bool]
    _handlers: dict[str, Callable[[dict[str, Any]], list[BridgeEvent]]]
    _turn_committed: Callable[[], None]
    _turn_began: Callable[[], None]
    # Uses RealtimeCommands._maybe_respond (a response waits for the running one to end).

    def receive(self, data: str | bytes) -> list[BridgeEvent]:
        """Parse one server event; return the typed events it produces (maybe none)."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.unhandled += 1
            log.warning("realtime server sent a non-JSON frame")
            return []
        if not isinstance(event, dict):
            self.unhandled += 1
            return []
        type_ = event.get("type")
        type_ = ALIASES.get(type_, type_)
        handler = self._handlers.get(type_)
        if handler is None:
            if type_ not in _IGNORED:
                self.unhandled += 1
                log.debug("unhandled realtime event %s", type_)
            return []
        try:
            return handler(event)
        except (KeyError, TypeError, ValueError) as exc:
            self.unhandled += 1
            log.warning("malformed realtime event %s: %s", type_, type(exc).__name__)
            return []

    def _on_session_updated(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        self.session_ready = True
        return []

    def _on_speech_started(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        self._turn_began()
        self._server_turn_open = True
        return [SpeechStarted()]

    def _on_speech_stopped(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        self.caller_speaking = False
        self._server_reply_expected = True  # the server commits the turn and answers it
        return []

    def _add_user(self, item_id: str) -> list[BridgeEvent]:
        if not item_id or item_id in self._user_items or item_id in self._dropped_users:
            return []
        self._user_items.add(item_id)
        # A transcript still missing when the caller's next turn arrives is not waited for (a
        # late one is appended when it comes): it must not hold back the agent's transcripts.
        self._queue = deque(e for e in self._queue if e.role != "user" or e.text is not None)
        if self.backend.transcription_model or self.backend.session_style == "xai":
            self._queue.append(_Entry("user", item_id))
        return self._pump()

    def _on_committed(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item_id = str(ev.get("item_id") or "")
        if self.config.turn_mode != "gateway":  # the server cut the turn (ours: end_of_turn)
            self._turn_committed()
            self._server_reply_expected = True
            if self.holds_turns and not self._server_committed(item_id):
                return self._pump()  # a backchannel: deleted, no transcript
        return self._add_user(item_id)

    def _on_item_added(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item = ev.get("item") or {}
        if item.get("type") == "message" and item.get("role") == "user":
            if any(c.get("type") == "input_audio" for c in item.get("content") or []):
                return self._add_user(str(item.get("id") or ""))
        return []

    def _on_user_transcript(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item_id = str(ev.get("item_id") or "")
        if item_id in self._dropped_users:
            return []  # a backchannel the gateway deleted: not part of the conversation
        for entry in self._queue:
            if entry.role == "user" and entry.item_id == item_id:
                entry.text = str(ev.get("transcript") or "")
                break
        else:  # transcript for an item we never saw committed: place it now
            self._user_items.add(item_id)
            self._queue.append(_Entry("user", item_id, str(ev.get("transcript") or "")))
        return self._pump()

    def _on_user_failed(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item_id = str(ev.get("item_id") or "")
        self._queue = deque(
            e for e in self._queue if not (e.role == "user" and e.item_id == item_id)
        )
        return self._pump()

    def _on_response_created(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        self._create_pending = False
        self._server_reply_expected = False
        self.response_id = str((ev.get("response") or {}).get("id") or "")
        return []

    def _item(self, item_id: str, response_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item(item_id, response_id)
            self._queue.append(_Entry("agent", item_id))
        return item

    def _on_output_item(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item = ev.get("item") or {}
        if item.get("type") == "message" and item.get("role") == "assistant" and item.get("id"):
            self._item(str(item["id"]), str(ev.get("response_id") or self.response_id or ""))
        return []

    def _on_audio_delta(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item_id = str(ev["item_id"])
        response_id = str(ev.get("response_id") or self.response_id or "")
        item = self._item(item_id, response_id)
        b64 = str(ev["delta"])
        item.generated_bytes += len(b64) * 3 // 4 - b64[-2:].count("=")
        if response_id in self._muted or item.heard_ms is not None or item.removed:
            return []  # cancelled by a barge-in: the caller must not hear it
        audio = pybase64.b64decode(b64)
        if not audio:
            return []
        if item_id not in self._audio_order:
            self._audio_order.append(item_id)
        item.audio_bytes += len(audio)
        return [AudioOut(item_id, audio)]

    def _on_transcript_delta(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item = self._item(str(ev["item_id"]), str(ev.get("response_id") or ""))
        item.parts.append(str(ev.get("delta") or ""))
        return []

    def _on_transcript_done(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item = self._item(str(ev["item_id"]), str(ev.get("response_id") or ""))
        item.transcript = str(ev.get("transcript") or "")
        return []

    def _request_call(self, call_id: str, name: str, arguments: str) -> None:
        if not call_id or call_id in self._calls_seen:
            return
        self._calls_seen.add(call_id)
        self._calls_running.add(call_id)
        call = ToolCall(call_id, name, arguments)
        self._tool_requests.append(call)
        self._queue.append(_Entry("call", call_id, call=call))

    def _on_call_arguments(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        self._request_call(str(ev["call_id"]), str(ev["name"]), str(ev.get("arguments") or ""))
        return []

    def _on_response_done(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        resp = ev.get("response") or {}
        rid = str(resp.get("id") or self.response_id or "")
        status = str(resp.get("status") or "completed")
        for out in resp.get("output") or []:
            if out.get("type") == "function_call":
                self._request_call(
                    str(out.get("call_id") or ""), str(out.get("name") or ""),
                    str(out.get("arguments") or ""),
                )  # fmt: skip
            elif out.get("type") == "message" and out.get("id") in self._items:
                item = self._items[out["id"]]
                if item.transcript is None and not item.parts:
                    texts = [c.get("transcript") or "" for c in out.get("content") or []]
                    item.transcript = "".join(texts)
        out: list[BridgeEvent] = []
        for item in self._items.values():
            if item.response_id == rid or not rid:
                item.final = True
        for item_id in self._audio_order:  # each audio item is done too (see module doc)
            item = self._items[item_id]
            if item.final and not item.ended:
                item.ended = True
                out.append(ResponseDone(item_id, status))
        if self.response_id == rid or not rid:
            self.response_id = None
        self._maybe_respond()
        return [*out, ResponseDone(rid, status), *self._pump()]

    def _on_error(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        err = ev.get("error") or {}
        code = str(err.get("code") or "")
        etype = str(err.get("type") or "")
        message = str(err.get("message") or "model error")
        sent_type = self._sent.get(str(err.get("event_id") or ""), "")
        if sent_type == "response.create":
            self._create_pending = False
            self._maybe_respond()
        label = "/".join(x for x in (etype, code) if x)
        text = f"{label}: {message}" if label else message
        lowered = message.lower()
        unsupported = any(h in lowered for h in _UNSUPPORTED_HINTS)
        if code == "response_cancel_not_active" or sent_type == "response.cancel":
            if code != "response_cancel_not_active" and unsupported:
                self.supports_cancel = False  # a server without cancel: stop sending it
            log.debug("cancel failed (normal when nothing is running): %s", text)
            return []
        if sent_type in _BEST_EFFORT or code in {
            "input_audio_buffer_commit_empty", "conversation_already_has_active_response",
        }:  # fmt: skip
            truncating = sent_type in ("conversation.item.truncate", "conversation.item.delete")
            if truncating and unsupported:
                self.supports_truncate = False
            return [BridgeError("model_error", text, fatal=False)]
        if code == "session_expired":
            return [BridgeError("model_session_limit", text, fatal=True)]
        fatal = sent_type == "session.update" or code in _FATAL_CODES or etype in _FATAL_TYPES
        return [BridgeError("model_error", text, fatal=fatal)]

    # ------------------------------------------------------------------ transcripts

    def _agent_text(self, item: _Item) -> str:
        text = item.transcript if item.transcript is not None else "".join(item.parts)
        if item.heard_ms is None:
            return text.strip()
        return cut_heard_text(text, item.heard_ms, self.generated_ms(item))

    def generated_ms(self, item: _Item) -> int:
        """Whole ms of audio the model made for ``item``: what its transcript spans (muted
        deltas after a barge-in included; whole ms as ``heard_ms``, clamped by ``item_ms``)."""
        return int(self.audio_format.ms_for_bytes(max(item.generated_bytes, item.audio_bytes)))

    def _ready(self, entry: _Entry) -> bool:
        if entry.role == "user":
            return entry.text is not None
        if entry.role != "agent":
            return True
        return self._items[entry.item_id].final

    def _pump(self) -> list[BridgeEvent]:
        out: list[BridgeEvent] = []
        while self._queue and self._ready(self._queue[0]):
            out.extend(self._release(self._queue.popleft()))
        return out

    def _release(self, entry: _Entry) -> list[BridgeEvent]:
        """Release one slot: its transcript (if any), and its turn into :attr:`history`."""
        if entry.role == "user":
            text = (entry.text or "").strip()
            if text:
                self.history.append(Turn("user", text))
            return [Transcript("user", text, entry.item_id)] if text else []
        if entry.role != "agent":
            self.history.append(Turn(entry.role, entry.text or "", call=entry.call))
            return []
        item = self._items[entry.item_id]
        self.history.append(Turn("agent", source_id=item.item_id, item=item))
        text = self._agent_text(item)
        return [Transcript("agent", text, entry.item_id)] if text else []

    def flush_transcripts(self) -> list[Transcript]:
        """Release every transcript still held (end of call), in conversation order."""
        out: list[Transcript] = []
        while self._queue:
            out.extend(e for e in self._release(self._queue.popleft()) if isinstance(e, Transcript))
        return out
