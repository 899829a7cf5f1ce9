"""OpenAI Realtime client commands, sans-I/O: the client events the protocol sends.

:class:`RealtimeCommands` is the half of :class:`gateway.llm.openai_protocol.RealtimeProtocol`
that builds client events (``session.update`` and its session config, ``input_audio_buffer.*``,
``response.create|cancel``, ``conversation.item.create|truncate|delete``) into the outbox read
by :meth:`RealtimeCommands.data_to_send`, including barge-in (:meth:`RealtimeCommands.interrupt`)
and tool outputs. The state it shares with the server-event half is created by
:class:`~gateway.llm.openai_protocol.RealtimeProtocol`. No sockets, no asyncio.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import pybase64

from gateway.formats import AudioFormat
from gateway.llm.base import AgentConfig
from gateway.llm.openai_backends import RealtimeBackend
from gateway.llm.openai_events import _Entry, _Item
from gateway.llm.openai_history import CONTINUING_NOTE
from gateway.llm.tools import ToolCall, ToolSpec, openai_tool

__all__ = ["RealtimeCommands"]

_MIN_COMMIT_MS = 100  # OpenAI rejects commits of less than 100 ms of audio


class RealtimeCommands:
    """Client commands of the Realtime state machine (a mixin of ``RealtimeProtocol``)."""

    # State set up by RealtimeProtocol.__init__ (shared with RealtimeEvents).
    backend: RealtimeBackend
    config: AgentConfig
    audio_format: AudioFormat
    supports_truncate: bool
    supports_cancel: bool
    response_id: str | None
    _wire_format: dict[str, Any]
    _tools: list[ToolSpec]
    _outbox: list[dict[str, Any]]
    _ids: itertools.count[int]
    _sent: OrderedDict[str, str]
    _items: dict[str, _Item]
    _audio_order: list[str]
    _muted: set[str]
    _tool_requests: list[ToolCall]
    _calls_running: set[str]
    _outputs_waiting: bool
    _response_wanted: bool
    _create_pending: bool
    _say_wanted: str
    _uncommitted_bytes: int
    holds_turns: bool
    _gate_pending: bool
    _server_turn_open: bool
    _backchannel: bool
    _unheard: bool
    _held_users: list[str]
    _dropped_users: set[str]
    _user_items: set[str]
    _server_reply_expected: bool
    caller_speaking: bool
    _queue: deque[_Entry]
    _keep_turn_audio: Callable[[bytes], None]
    _turn_committed: Callable[[], None]
    _turn_began: Callable[[], None]
    recut_carried: Callable[[str, int], bool]

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
        """``audio.input.turn_detection``: ``None`` in gateway turn mode, else the server's VAD.

        ``interrupt_response`` is always ``false``: barge-in is the gateway's (its echo-aware
        VAD, pause-then-commit), never the server VAD's, which hears the raw caller leg (the
        agent's echo, backchannels) and would cut the reply at once. ``create_response`` is
        ``false`` when the gateway owns barge-in (:attr:`holds_turns`): the bridge asks for the
        answer itself once the gateway judged the turn (:meth:`turn_verdict`). Fields: OpenAI
        ``RealtimeAudioInputTurnDetection`` (``openai.types.realtime``; "if both are false,
        the model will never respond automatically but VAD events will still be emitted"),
        developers.openai.com/api/reference/resources/realtime/client-events (session.update).
        xAI takes a bare ``{"type": "server_vad"}``: its model answers and interrupts itself
        (:attr:`~gateway.llm.base.ModelBridge.model_interrupts`).
        """
        mode = self.config.turn_mode
        if mode == "gateway":
            return None
        if self.backend.session_style == "xai":
            return {"type": "server_vad"}
        return {"type": mode, "create_response": not self.holds_turns, "interrupt_response": False}

    def session_update(self, *, continuing: bool = False) -> dict[str, Any]:
        """Queue the ``session.update`` that configures the whole session.

        Args:
            continuing: the session takes over a call in progress (its instructions say so).
        """
        fmt = self._wire_format
        instructions = self.config.system_prompt
        if continuing:
            instructions = f"{instructions}\n\n{CONTINUING_NOTE}".strip()
        session: dict[str, Any]
        if self.backend.session_style == "xai":
            session = {
                "instructions": instructions,
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
                "instructions": instructions,
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
        self._keep_turn_audio(audio)
        self._send("input_audio_buffer.append", audio=pybase64.b64encode(audio).decode("ascii"))

    def speech_started(self) -> None:
        """Gateway turn mode: the gateway's VAD heard the caller start a turn."""
        if self.config.turn_mode == "gateway":
            self._turn_began()

    def end_of_turn(self) -> None:
        """Gateway turn mode: commit the caller's audio and ask for a response.

        Turns shorter than 100 ms of audio are dropped (the server rejects such commits).
        If a response is still running, ``response.create`` waits for its ``response.done``.
        """
        if self.config.turn_mode != "gateway":
            return
        self.caller_speaking = False
        if self.audio_format.ms_for_bytes(self._uncommitted_bytes) < _MIN_COMMIT_MS:
            return
        self._uncommitted_bytes = 0
        self._turn_committed()
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
        if item_id is not None and item_id not in self._items and self.recut_carried(item_id, heard_ms):
            for later in self._audio_order:  # everything this session said came after it
                self._muted.add(self._items[later].response_id)
                self._cut(self._items[later], 0)
            return
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

    # ------------------------------------------------------------------ held server turns
    def turn_verdict(self, verdict: str) -> None:
        """The gateway's verdict on caller speech (:meth:`~gateway.llm.base.ModelBridge.turn_verdict`);
        a no-op unless :attr:`holds_turns`.

        ``pending`` holds every user turn the server commits until the verdict; ``turn``
        answers the held ones (``response.create``, after any response still running);
        ``backchannel`` deletes them (``conversation.item.delete``) or, if none was committed
        yet, the server's user turn still open (speech started, not committed) when it commits.
        A backchannel the server's VAD did not hear leaves nothing behind. ``unheard`` marks
        the open server turn as speech the gateway's VAD did not hear over agent audio: deleted
        at its commit unless another verdict comes first.
        """
        if not self.holds_turns:
            return
        if verdict == "unheard":
            self._unheard = self._server_turn_open and not self._gate_pending
            return
        self._unheard = False
        if verdict == "pending":
            self._gate_pending = True
            return
        self._gate_pending = False
        held, self._held_users = self._held_users, []
        if verdict == "backchannel":
            for item_id in held:
                self._drop_user(item_id)
            self._backchannel = self._server_turn_open and not held
            return
        self._backchannel = False
        if held:
            self._response_wanted = True
            self._maybe_respond()

    def _server_committed(self, item_id: str) -> bool:
        """A user turn the server's VAD committed while :attr:`holds_turns`: answer it now,
        hold it for the gateway's verdict, or delete it (an open backchannel). Whether it is
        kept (False: deleted)."""
        self._server_turn_open = False
        self._server_reply_expected = False  # the server does not answer (create_response false)
        if self._gate_pending:
            self._held_users.append(item_id)
        elif self._backchannel or self._unheard:
            self._backchannel = self._unheard = False
            self._drop_user(item_id)
            return False
        else:
            self._response_wanted = True
            self._maybe_respond()
        return True

    def _drop_user(self, item_id: str) -> None:
        """Forget a backchannel's user item here and on the server (best effort)."""
        if not item_id or item_id in self._dropped_users:
            return
        self._dropped_users.add(item_id)
        self._user_items.discard(item_id)
        self._queue = deque(e for e in self._queue if not (e.role == "user" and e.item_id == item_id))
        if self.supports_truncate:  # a server without delete keeps it, unanswered
            self._send("conversation.item.delete", item_id=item_id)

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
        self._queue.append(_Entry("output", call_id, output, ToolCall(call_id, "", "")))
        self._outputs_waiting = True
        self._maybe_respond()
