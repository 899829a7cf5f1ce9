"""OpenAI Realtime (GA) client protocol, sans-I/O: client events out, typed events in.

:class:`RealtimeProtocol` is the state machine, as python-websockets' ``protocol.py``: client
commands (``session_update``, ``append_audio``, ``end_of_turn``, ``interrupt``,
``tool_output`` …) append client events (dicts) to an outbox read by
:meth:`RealtimeProtocol.data_to_send`; :meth:`RealtimeProtocol.receive` parses one server event
into typed :mod:`gateway.llm.base` events and keeps the state barge-in needs: the response in
progress, every assistant audio item with the ms of audio it delivered, and the transcripts,
released in conversation order once final. No sockets, no asyncio:
:class:`gateway.llm.openai_realtime.OpenAIRealtimeBridge` does the I/O.

Wire protocol: platform.openai.com/docs/guides/realtime (GA, no ``OpenAI-Beta`` header);
client events ``session.update``, ``input_audio_buffer.append|commit``, ``response.create``,
``response.cancel``, ``conversation.item.create|truncate|delete``. Beta server event names
(``response.audio.delta`` …) are accepted as aliases of the GA ones.

Barge-in (:meth:`RealtimeProtocol.interrupt`): ``response.cancel`` (the error
``response_cancel_not_active`` is normal), then ``conversation.item.truncate`` of the item the
caller was hearing at the whole ms heard, clamped to the ms of audio received for it, or
``conversation.item.delete`` when nothing was heard; later audio items of that response, never
heard, are deleted.

Transcripts are released in conversation order (an agent item waits for the caller's
transcript before it, which OpenAI delivers late), each once its response is done. An agent
transcript released after :meth:`RealtimeProtocol.interrupt` is cut to the share of its audio
the caller heard (at a word boundary) and ends with ``…``; one released before was whole when
released, and the session cuts its stored copy on barge-in.

``response.done`` yields one :class:`ResponseDone` per audio item of the response
(``response_id`` = the item id, the unit of :class:`AudioOut`), then one for the response
itself (the server's response id), so a consumer keyed by either sees the end.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pybase64

from gateway.formats import AudioFormat
from gateway.llm.base import (
    AgentConfig,
    AudioOut,
    BridgeError,
    BridgeEvent,
    ResponseDone,
    SpeechStarted,
    Transcript,
)
from gateway.llm.common import cut_heard_text
from gateway.llm.openai_backends import RealtimeBackend
from gateway.llm.tools import ToolCall, ToolSpec, openai_tool

__all__ = ["RealtimeProtocol", "ALIASES", "AUTH_HINTS"]

log = logging.getLogger(__name__)

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
    "input_audio_buffer.speech_stopped", "input_audio_buffer.cleared",
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
_MIN_COMMIT_MS = 100  # OpenAI rejects commits of less than 100 ms of audio


@dataclass(slots=True)
class _Item:
    """An assistant message item: audio delivered, transcript, what the caller heard."""

    item_id: str
    response_id: str
    audio_bytes: int = 0
    parts: list[str] = field(default_factory=list)
    transcript: str | None = None
    heard_ms: int | None = None  # set by interrupt: whole ms the caller heard
    removed: bool = False  # truncated or deleted on the server
    final: bool = False  # its response is done
    ended: bool = False  # a ResponseDone was emitted for it


@dataclass(slots=True)
class _Entry:
    """A transcript slot in conversation order."""

    role: Literal["user", "agent"]
    item_id: str
    text: str | None = None  # user: set when transcription completes


class RealtimeProtocol:
    """Sans-I/O OpenAI Realtime client state machine (no sockets, no asyncio).

    Args:
        backend: the server and its switches.
        config: the call's agent configuration.
        wire_format: the ``audio.*.format`` object sent in ``session.update``.
        audio_format: the same as an :class:`AudioFormat` (for ms accounting).
        tools: declared tools.
    """

    def __init__(
        self,
        backend: RealtimeBackend,
        config: AgentConfig,
        *,
        wire_format: dict[str, Any],
        audio_format: AudioFormat,
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        self.backend = backend
        self.config = config
        self.audio_format = audio_format
        self.supports_truncate = backend.supports_truncate
        self.supports_cancel = backend.supports_cancel
        self.session_ready = False
        self.response_id: str | None = None
        self.unhandled = 0
        self._wire_format = wire_format
        self._tools = list(tools)
        self._outbox: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._sent: OrderedDict[str, str] = OrderedDict()  # event_id -> type
        self._items: dict[str, _Item] = {}
        self._audio_order: list[str] = []
        self._muted: set[str] = set()
        self._queue: deque[_Entry] = deque()
        self._user_items: set[str] = set()
        self._tool_requests: list[ToolCall] = []
        self._calls_seen: set[str] = set()
        self._calls_running: set[str] = set()
        self._outputs_waiting = False
        self._response_wanted = False
        self._create_pending = False  # a response.create not yet answered by response.created
        self._say_wanted = ""  # instructions of a say() waiting for the running response
        self._uncommitted_bytes = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], list[BridgeEvent]]] = {
            "session.updated": self._on_session_updated,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.committed": self._on_committed,
            "conversation.item.added": self._on_item_added,
            "conversation.item.input_audio_transcription.completed": self._on_user_transcript,
            "conversation.item.input_audio_transcription.failed": self._on_user_failed,
            "response.created": self._on_response_created,
            "response.output_item.added": self._on_output_item,
            "response.output_audio.delta": self._on_audio_delta,
            "response.output_audio_transcript.delta": self._on_transcript_delta,
            "response.output_audio_transcript.done": self._on_transcript_done,
            "response.function_call_arguments.done": self._on_call_arguments,
            "response.done": self._on_response_done,
            "error": self._on_error,
        }

    # ----------------------------------------------------------------- client commands

    def _send(self, type_: str, **fields: Any) -> dict[str, Any]:
        event_id = f"gw_{next(self._ids)}"
        event = {"type": type_, "event_id": event_id, **fields}
        self._sent[event_id] = type_
        while len(self._sent) > 512:
            self._sent.popitem(last=False)
        self._outbox.append(event)
        return event

    def data_to_send(self) -> list[dict[str, Any]]:
        """Client events queued since the last call, in order (the caller sends them)."""
        out, self._outbox = self._outbox, []
        return out

    def voice(self) -> str:
        """The voice to ask for: the agent's if the backend knows it, else its default."""
        known = self.backend.voices
        wanted = self.config.voice.strip()
        if known is None:
            return wanted or self.backend.default_voice
        return {v.lower(): v for v in known}.get(wanted.lower(), self.backend.default_voice)

    def _turn_detection(self) -> dict[str, Any] | None:
        mode = self.config.turn_mode
        if mode == "gateway":
            return None
        if self.backend.session_style == "xai":
            return {"type": "server_vad"}
        return {
            "type": mode,
            "create_response": True,
            "interrupt_response": bool(self.config.interruptible),
        }

    def session_update(self) -> dict[str, Any]:
        """Queue the ``session.update`` that configures the whole session."""
        fmt = self._wire_format
        session: dict[str, Any]
        if self.backend.session_style == "xai":
            session = {
                "instructions": self.config.system_prompt,
                "voice": self.voice(),
                "turn_detection": self._turn_detection(),
                "audio": {"input": {"format": fmt}, "output": {"format": fmt}},
            }
        else:
            audio_in: dict[str, Any] = {"format": fmt, "turn_detection": self._turn_detection()}
            if self.backend.transcription_model:
                transcription = {"model": self.backend.transcription_model}
                lang = self.config.language.split("-")[0].lower()
                if len(lang) == 2:
                    transcription["language"] = lang
                audio_in["transcription"] = transcription
            session = {
                "type": "realtime",
                "instructions": self.config.system_prompt,
                "output_modalities": ["audio"],
                "audio": {"input": audio_in, "output": {"format": fmt, "voice": self.voice()}},
            }
        if self._tools:
            session["tools"] = [openai_tool(t) for t in self._tools]
            session["tool_choice"] = "auto"
        return self._send("session.update", session=session)

    def greeting(self) -> None:
        """Queue the agent's greeting (``first_speaker == "agent"``)."""
        text = self.config.greeting.strip()
        if not text:
            return
        instructions = f'Greet the caller now by saying exactly: "{text}"'
        if self.backend.greeting_mode == "item":
            self._send(
                "conversation.item.create",
                item={
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": instructions}],
                },
            )
            self._create_response()
        else:
            self._create_response(response={"instructions": instructions})

    def say(self, text: str) -> None:
        """Queue a response that speaks ``text`` (e.g. an inactivity prompt); it waits for a
        running response to finish."""
        text = text.strip()
        if text:
            self._say_wanted = f'Say exactly this to the caller now: "{text}"'
            self._maybe_respond()

    def _create_response(self, **fields: Any) -> None:
        self._create_pending = True
        self._send("response.create", **fields)

    def append_audio(self, audio: bytes) -> None:
        """Queue caller audio (bytes in :attr:`audio_format`)."""
        if not audio:
            return
        self._uncommitted_bytes += len(audio)
        self._send("input_audio_buffer.append", audio=pybase64.b64encode(audio).decode("ascii"))

    def end_of_turn(self) -> None:
        """Gateway turn mode: commit the caller's audio and ask for a response.

        Turns shorter than 100 ms of audio are dropped (the server rejects such commits).
        If a response is still running, ``response.create`` waits for its ``response.done``.
        """
        if self.config.turn_mode != "gateway":
            return
        if self.audio_format.ms_for_bytes(self._uncommitted_bytes) < _MIN_COMMIT_MS:
            return
        self._uncommitted_bytes = 0
        self._send("input_audio_buffer.commit")
        self._response_wanted = True
        self._maybe_respond()

    def _maybe_respond(self) -> None:
        if self.response_id is not None or self._create_pending or self._calls_running:
            return
        if self._say_wanted:
            instructions, self._say_wanted = self._say_wanted, ""
            if self.backend.greeting_mode == "item":
                self._send(
                    "conversation.item.create",
                    item={
                        "type": "message",
                        "role": "system",
                        "content": [{"type": "input_text", "text": instructions}],
                    },
                )
                self._create_response()
            else:
                self._create_response(response={"instructions": instructions})
            return
        if self._response_wanted or self._outputs_waiting:
            self._response_wanted = self._outputs_waiting = False
            self._create_response()

    def item_ms(self, item_id: str) -> int:
        """Whole ms of audio received for ``item_id`` (0 if unknown)."""
        item = self._items.get(item_id)
        return int(self.audio_format.ms_for_bytes(item.audio_bytes)) if item else 0

    def latest_audio_item(self) -> str | None:
        """The most recent assistant item that carried audio."""
        return self._audio_order[-1] if self._audio_order else None

    def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        """Barge-in: cancel, then truncate (or delete) what the caller did not hear.

        Args:
            item_id: the item the caller was hearing; ``None`` means the latest audio item.
            heard_ms: whole ms of it the caller heard; clamped to the ms received.
        """
        if self.supports_cancel:
            self._send("response.cancel")
        if self.response_id is not None:
            self._muted.add(self.response_id)
        target = item_id if item_id in self._items else self.latest_audio_item()
        if target is None:
            return
        item = self._items[target]
        self._muted.add(item.response_id)
        heard = max(0, min(int(heard_ms), self.item_ms(target)))
        later = self._audio_order[self._audio_order.index(target) + 1 :] if (
            target in self._audio_order
        ) else []
        self._cut(item, heard)
        for other in later:
            self._cut(self._items[other], 0)

    def _cut(self, item: _Item, heard: int) -> None:
        if item.heard_ms is not None and item.heard_ms <= heard:
            return  # already cut at least this far
        item.heard_ms = heard
        if not self.supports_truncate or item.removed:
            return
        if heard == 0:
            item.removed = True
            self._send("conversation.item.delete", item_id=item.item_id)
        else:
            self._send(
                "conversation.item.truncate",
                item_id=item.item_id,
                content_index=0,
                audio_end_ms=int(heard),
            )

    def take_tool_calls(self) -> list[ToolCall]:
        """Function calls the model asked for since the last call (each once)."""
        out, self._tool_requests = self._tool_requests, []
        return out

    def tool_output(self, call_id: str, output: str) -> None:
        """Queue a function call's output; ``response.create`` once all calls are answered."""
        self._send(
            "conversation.item.create",
            item={"type": "function_call_output", "call_id": call_id, "output": output},
        )
        self._calls_running.discard(call_id)
        self._outputs_waiting = True
        self._maybe_respond()

    # ------------------------------------------------------------------ server events

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
        return [SpeechStarted()]

    def _add_user(self, item_id: str) -> list[BridgeEvent]:
        if not item_id or item_id in self._user_items:
            return []
        self._user_items.add(item_id)
        # A transcript still missing when the caller's next turn arrives is not waited for (a
        # late one is appended when it comes): it must not hold back the agent's transcripts.
        self._queue = deque(e for e in self._queue if e.role == "agent" or e.text is not None)
        if self.backend.transcription_model or self.backend.session_style == "xai":
            self._queue.append(_Entry("user", item_id))
        return self._pump()

    def _on_committed(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        return self._add_user(str(ev.get("item_id") or ""))

    def _on_item_added(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item = ev.get("item") or {}
        if item.get("type") == "message" and item.get("role") == "user":
            if any(c.get("type") == "input_audio" for c in item.get("content") or []):
                return self._add_user(str(item.get("id") or ""))
        return []

    def _on_user_transcript(self, ev: dict[str, Any]) -> list[BridgeEvent]:
        item_id = str(ev.get("item_id") or "")
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
        if response_id in self._muted or item.heard_ms is not None or item.removed:
            return []  # cancelled by a barge-in: the caller must not hear it
        audio = pybase64.b64decode(ev["delta"])
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
        self._tool_requests.append(ToolCall(call_id, name, arguments))

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
        return cut_heard_text(text, item.heard_ms, self.audio_format.ms_for_bytes(item.audio_bytes))

    def _ready(self, entry: _Entry) -> bool:
        if entry.role == "user":
            return entry.text is not None
        return self._items[entry.item_id].final

    def _pump(self) -> list[BridgeEvent]:
        out: list[BridgeEvent] = []
        while self._queue and self._ready(self._queue[0]):
            out.extend(self._release(self._queue.popleft()))
        return out

    def _release(self, entry: _Entry) -> list[BridgeEvent]:
        if entry.role == "user":
            text = (entry.text or "").strip()
            return [Transcript("user", text, entry.item_id)] if text else []
        text = self._agent_text(self._items[entry.item_id])
        return [Transcript("agent", text, entry.item_id)] if text else []

    def flush_transcripts(self) -> list[Transcript]:
        """Release every transcript still held (end of call), in conversation order."""
        out: list[Transcript] = []
        while self._queue:
            out.extend(e for e in self._release(self._queue.popleft()) if isinstance(e, Transcript))
        return out
