"""Gemini Live (``BidiGenerateContent``) client protocol, sans-I/O.

:class:`LiveProtocol` builds client messages (``setup``, ``clientContent``,
``realtimeInput.audio|activityStart|activityEnd``, ``toolResponse``) as dicts and parses server
messages (``setupComplete``, ``serverContent``, ``toolCall``, ``goAway``,
``sessionResumptionUpdate``) into typed :mod:`gateway.llm.base` events. It keeps the latest
resumption handle and, since Gemini has no truncate, its own record of what the caller heard:
a turn's agent transcript released after a barge-in is cut to the share of its audio heard.
Transcripts are released in conversation order once their turn ended. No sockets, no asyncio:
:class:`gateway.llm.gemini_live.GeminiLiveBridge` does the I/O.

Source: ai.google.dev/api/live (message shapes, camelCase on the wire); audio in is L16 16 kHz
(``audio/pcm;rate=16000``), audio out L16 24 kHz.

Barge-in and ``realtimeInputConfig.activityHandling`` (``google.genai.types.ActivityHandling``:
``START_OF_ACTIVITY_INTERRUPTS`` "will interrupt the model's response", ``NO_INTERRUPTION``
"the model's response will not be interrupted"): only in gateway turn mode on an interruptible
call may activity cut a reply, and that activity is the gateway's own ``activityStart``, sent
once its VAD proved a turn. With Gemini's automatic activity detection the setup asks for
``NO_INTERRUPTION``: its detector hears the raw caller leg (echo, backchannels) and the gateway
owns barge-in; a commit cuts the reply locally (:meth:`LiveProtocol.interrupt`: the rest of its
audio dropped, its transcript cut to what was heard) while the model finishes generating it.
Gemini has no item delete and no truncate, so what a backchannel can do is limited: while a
gateway pause is pending the caller's audio is held back (:meth:`LiveProtocol.turn_verdict`)
and, if the pause resumes as a backchannel, replaced by as much silence. The backchannel's
first moments (before the gateway's VAD confirmed it and paused, ~100 ms with cues) still
reach the model: if its detector took them for activity it may answer after its turn, and the
model's memory keeps the whole of a reply the caller cut.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pybase64

from gateway.formats import L16_24K
from gateway.llm.base import (
    AgentConfig,
    AudioOut,
    BridgeEvent,
    Interrupted,
    ResponseDone,
    Transcript,
    holds_server_turns,
)
from gateway.llm.common import cut_heard_text
from gateway.llm.tools import ToolCall, ToolSpec, gemini_function_declaration

__all__ = ["LiveProtocol", "GEMINI_VOICES", "DEFAULT_VOICE", "HOLD_LIMIT_BYTES"]

log = logging.getLogger(__name__)

GEMINI_VOICES = (
    "Puck", "Charon", "Kore", "Fenrir", "Aoede", "Leda", "Orus", "Zephyr", "Achernar", "Achird",
    "Algenib", "Algieba", "Alnilam", "Autonoe", "Callirrhoe", "Despina", "Enceladus", "Erinome",
    "Gacrux", "Iapetus", "Laomedeia", "Pulcherrima", "Rasalgethi", "Sadachbia", "Sadaltager",
    "Schedar", "Sulafat", "Umbriel", "Vindemiatrix", "Zubenelgenubi",
)  # fmt: skip
DEFAULT_VOICE = "Puck"
#: Most caller audio held back while a gateway pause is pending (bytes of L16 16 kHz: 5 s);
#: a pause ends well before (``commit_ms + resume_gap_ms + PAUSE_GRACE_MS``).
HOLD_LIMIT_BYTES = 16000 * 2 * 5
_INPUT_MIME = "audio/pcm;rate=16000"


@dataclass(slots=True)
class _Turn:
    """One model turn: audio delivered, transcript, what the caller heard."""

    turn_id: str
    audio_bytes: int = 0
    parts: list[str] = field(default_factory=list)
    heard_ms: int | None = None
    final: bool = False


@dataclass(slots=True)
class _Entry:
    role: Literal["user", "agent"]
    key: str
    parts: list[str] = field(default_factory=list)  # user text
    ready: bool = False


class LiveProtocol:
    """Sans-I/O Gemini Live client state (no sockets, no asyncio).

    Args:
        config: the call's agent configuration.
        model: model name, with or without the ``models/`` prefix.
        tools: declared tools.
    """

    def __init__(self, config: AgentConfig, model: str, tools: Sequence[ToolSpec] = ()) -> None:
        self.config = config
        self.model = model if model.startswith("models/") else f"models/{model}"
        self.handle: str | None = None
        self.setup_complete = False
        self.go_away = False
        self.in_activity = False  # gateway turn mode: between activityStart and activityEnd
        self.unhandled = 0
        self._tools = list(tools)
        self._ids = itertools.count(1)
        self._turn: _Turn | None = None
        self._turns: dict[str, _Turn] = {}
        self._queue: deque[_Entry] = deque()
        self._user: _Entry | None = None
        self._tool_requests: list[ToolCall] = []
        self._handle_updated = False
        self.holds_turns = holds_server_turns(config)
        self._holding = False  # a gateway pause is pending: caller audio is held back
        self._held_audio: list[bytes] = []
        self._held_bytes = 0

    # ----------------------------------------------------------------- client messages

    def voice(self) -> str:
        """The agent's voice if Gemini has it (case-insensitive), else ``Puck``."""
        wanted = self.config.voice.strip().lower()
        return {v.lower(): v for v in GEMINI_VOICES}.get(wanted, DEFAULT_VOICE)

    def setup_message(self) -> dict[str, Any]:
        """The ``setup`` message; carries the latest resumption handle when there is one."""
        cfg = self.config
        generation: dict[str, Any] = {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.voice()}}},
        }
        if cfg.temperature > 0:
            generation["temperature"] = float(cfg.temperature)
        gateway_turns = cfg.turn_mode == "gateway"
        realtime: dict[str, Any] = {"automaticActivityDetection": {"disabled": gateway_turns}}
        # Only the gateway's own activityStart (a proven turn) may cut a reply; see the class doc.
        realtime["activityHandling"] = (
            "START_OF_ACTIVITY_INTERRUPTS" if cfg.interruptible and gateway_turns else "NO_INTERRUPTION"
        )
        setup: dict[str, Any] = {
            "model": self.model,
            "generationConfig": generation,
            "systemInstruction": {"parts": [{"text": cfg.system_prompt}]},
            "realtimeInputConfig": realtime,
            "sessionResumption": {"handle": self.handle} if self.handle else {},
            "contextWindowCompression": {"slidingWindow": {}},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
        }
        if self._tools:
            setup["tools"] = [
                {"functionDeclarations": [gemini_function_declaration(t) for t in self._tools]}
            ]
        return {"setup": setup}

    def greeting_message(self) -> dict[str, Any] | None:
        """The ``clientContent`` turn asking for the greeting (``None`` without a greeting)."""
        text = self.config.greeting.strip()
        if not text:
            return None
        prompt = f'Greet the caller now by saying exactly: "{text}"'
        return {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": prompt}]}],
                "turnComplete": True,
            }
        }

    @staticmethod
    def say_message(text: str) -> dict[str, Any]:
        """A ``clientContent`` turn asking the model to say ``text`` now."""
        prompt = f'Say exactly this to the caller now: "{text.strip()}"'
        return {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": prompt}]}],
                "turnComplete": True,
            }
        }

    @staticmethod
    def audio_message(audio: bytes) -> dict[str, Any]:
        """``realtimeInput.audio`` for L16 16 kHz caller audio."""
        data = pybase64.b64encode(audio).decode("ascii")
        return {"realtimeInput": {"audio": {"data": data, "mimeType": _INPUT_MIME}}}

    def activity_start(self) -> dict[str, Any] | None:
        """``realtimeInput.activityStart`` (gateway turn mode: the caller started a turn);
        ``None`` if an activity is already open."""
        if self.in_activity:
            return None
        self.in_activity = True
        return {"realtimeInput": {"activityStart": {}}}

    def activity_end(self) -> dict[str, Any] | None:
        """``realtimeInput.activityEnd`` (``None`` if no activity is open)."""
        if not self.in_activity:
            return None
        self.in_activity = False
        return {"realtimeInput": {"activityEnd": {}}}

    @staticmethod
    def tool_response(call: ToolCall, output: str) -> dict[str, Any]:
        """``toolResponse`` for ``call``; ``output`` (JSON text or plain text) goes in
        ``response.output`` (or ``response.error`` for an ``{"error": …}`` output)."""
        try:
            value: Any = orjson.loads(output)
        except orjson.JSONDecodeError:
            value = output
        if isinstance(value, dict) and set(value) == {"error"}:
            response = {"error": value["error"]}
        else:
            response = {"output": value}
        return {
            "toolResponse": {
                "functionResponses": [{"id": call.call_id, "name": call.name, "response": response}]
            }
        }

    def input_audio(self, audio: bytes) -> list[bytes]:
        """Caller audio (L16 16 kHz) to send now: ``[audio]``, or nothing while a gateway pause
        is pending (:meth:`turn_verdict`; at most :data:`HOLD_LIMIT_BYTES`, then all goes)."""
        if not self._holding:
            return [audio]
        self._held_audio.append(audio)
        self._held_bytes += len(audio)
        return self._release_held(silence=False) if self._held_bytes > HOLD_LIMIT_BYTES else []

    def turn_verdict(self, verdict: str) -> list[bytes]:
        """The gateway's verdict on caller speech (server turn modes while the gateway owns
        barge-in; otherwise a no-op); the caller audio to send now.

        ``pending`` starts holding caller audio back; ``turn`` sends it as it was (late by
        the pause's decision, at most the commit threshold); ``backchannel`` sends the same
        length of silence instead, so the model's VAD never hears the bulk of the backchannel.
        """
        if not self.holds_turns:
            return []
        if verdict == "pending":
            self._holding = True
            return []
        return self._release_held(silence=verdict == "backchannel")

    def _release_held(self, *, silence: bool) -> list[bytes]:
        held, self._held_audio, self._held_bytes, self._holding = self._held_audio, [], 0, False
        return [bytes(len(chunk)) for chunk in held] if silence else held

    def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        """Record that the caller heard only ``heard_ms`` of turn ``item_id`` (or the current
        one); the rest of that turn's audio is dropped and its transcript cut."""
        turn = self._turns.get(item_id or "") or self._turn
        if turn is None:
            return
        received = int(L16_24K.ms_for_bytes(turn.audio_bytes))
        heard = max(0, min(int(heard_ms), received))
        if turn.heard_ms is None or heard < turn.heard_ms:
            turn.heard_ms = heard

    def take_tool_calls(self) -> list[ToolCall]:
        """Function calls the model asked for since the last call."""
        out, self._tool_requests = self._tool_requests, []
        return out

    def take_handle_update(self) -> bool:
        """Whether a new resumption handle arrived since the last call."""
        updated, self._handle_updated = self._handle_updated, False
        return updated

    # ------------------------------------------------------------------ server messages

    def receive(self, data: str | bytes) -> list[BridgeEvent]:
        """Parse one server message (text or binary JSON) into typed events."""
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.unhandled += 1
            log.warning("gemini sent a non-JSON frame")
            return []
        if not isinstance(msg, dict):
            self.unhandled += 1
            return []
        out: list[BridgeEvent] = []
        known = False
        if "setupComplete" in msg:
            known = True
            self.setup_complete = True
        if isinstance(msg.get("serverContent"), dict):
            known = True
            out += self._on_content(msg["serverContent"])
        if isinstance(msg.get("toolCall"), dict):
            known = True
            for fc in msg["toolCall"].get("functionCalls") or []:
                call_id, name = str(fc.get("id") or ""), str(fc.get("name") or "")
                self._tool_requests.append(ToolCall(call_id, name, fc.get("args") or {}))
        if "goAway" in msg:
            known = True
            self.go_away = True
            log.info("gemini goAway (time left %s)", (msg["goAway"] or {}).get("timeLeft"))
        if isinstance(msg.get("sessionResumptionUpdate"), dict):
            known = True
            upd = msg["sessionResumptionUpdate"]
            if upd.get("resumable") and upd.get("newHandle"):
                self.handle = str(upd["newHandle"])
                self._handle_updated = True
        if not known and not {"usageMetadata", "toolCallCancellation"} & set(msg):
            self.unhandled += 1
            log.debug("unhandled gemini message %s", sorted(msg))
        return out

    def _new_turn(self) -> _Turn:
        turn = _Turn(f"gemini-turn-{next(self._ids)}")
        self._turns[turn.turn_id] = turn
        self._turn = turn
        self._user = None  # later caller speech is a new user entry
        self._queue.append(_Entry("agent", turn.turn_id))
        return turn

    def _on_content(self, content: dict[str, Any]) -> list[BridgeEvent]:
        out: list[BridgeEvent] = []
        inp = content.get("inputTranscription") or {}
        if inp.get("text"):
            if self._user is None:
                self._user = _Entry("user", f"user-{next(self._ids)}")
                self._queue.append(self._user)
            self._user.parts.append(str(inp["text"]))
        if inp.get("finished") and self._user is not None:
            self._user.ready = True
        model_turn = content.get("modelTurn") or {}
        for part in model_turn.get("parts") or []:
            blob = part.get("inlineData") or {}
            if not blob.get("data") or not str(blob.get("mimeType", "")).startswith("audio/pcm"):
                continue
            turn = self._turn or self._new_turn()
            if turn.heard_ms is not None:
                continue  # cut by a barge-in: the caller must not hear the rest
            audio = pybase64.b64decode(blob["data"])
            turn.audio_bytes += len(audio)
            out.append(AudioOut(turn.turn_id, audio))
        outp = content.get("outputTranscription") or {}
        if outp.get("text"):
            (self._turn or self._new_turn()).parts.append(str(outp["text"]))
        if content.get("interrupted"):
            # The turn's transcript goes first, so a session cutting it on Interrupted has it.
            out += self._end_turn("cancelled")
            return out + self._pump() + [Interrupted()]
        if content.get("turnComplete"):
            out += self._end_turn("completed")
        return out + self._pump()

    def _end_turn(self, status: str) -> list[BridgeEvent]:
        turn, self._turn = self._turn, None
        if turn is None:
            return []
        turn.final = True
        # The caller's words before this turn are complete once the model answered them.
        for entry in self._queue:
            if entry.key == turn.turn_id:
                break
            if entry.role == "user":
                entry.ready = True
        return [ResponseDone(turn.turn_id, status)]

    def abort_turn(self) -> list[BridgeEvent]:
        """End the turn in progress (the connection it came on is gone)."""
        return self._end_turn("incomplete")

    # ------------------------------------------------------------------ transcripts

    def _ready(self, entry: _Entry) -> bool:
        if entry.role == "user":
            return entry.ready
        return self._turns[entry.key].final

    def _release(self, entry: _Entry) -> list[Transcript]:
        if entry.role == "user":
            if entry is self._user:
                self._user = None
            text = "".join(entry.parts).strip()
            return [Transcript("user", " ".join(text.split()))] if text else []
        turn = self._turns[entry.key]
        text = " ".join("".join(turn.parts).split())
        if turn.heard_ms is not None:
            text = cut_heard_text(text, turn.heard_ms, L16_24K.ms_for_bytes(turn.audio_bytes))
        return [Transcript("agent", text, turn.turn_id)] if text else []

    def _pump(self) -> list[BridgeEvent]:
        out: list[BridgeEvent] = []
        while self._queue and self._ready(self._queue[0]):
            out.extend(self._release(self._queue.popleft()))
        return out

    def flush_transcripts(self) -> list[Transcript]:
        """Release every transcript still held (end of call), in conversation order."""
        out: list[Transcript] = []
        while self._queue:
            out.extend(self._release(self._queue.popleft()))
        return out
