"""Loopback servers speaking the OpenAI Realtime and Gemini Live wire protocols.

Both are real ``websockets`` servers on 127.0.0.1 that check the handshake (path and key header
as the vendors do), record every client message, and answer with scripted replies whose audio
is real recorded speech from ``../shared/audio`` streamed as deltas. They keep the server-side
state a bridge must stay in step with: the audio sent per item (truncate bounds), the active
response (cancel), the resumption handles and the caller audio each handle's state contains.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.conftest import SHARED_AUDIO, load_wav

SERVER_LOG = logging.getLogger("tests.fake_server")
GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


# ---------------------------------------------------------------------------- audio helpers


def speech(name: str, rate: int) -> np.ndarray:
    """A real recording (``caller/hello`` or ``speech/cards-001``) as int16 at ``rate`` Hz."""
    pcm, sr = load_wav(Path(SHARED_AUDIO) / f"{name}.wav")
    if sr == rate:
        return pcm
    n = int(round(len(pcm) * rate / sr))
    t = np.arange(n) * (sr / rate)
    return np.clip(np.round(np.interp(t, np.arange(len(pcm)), pcm.astype(np.float64))), -32768, 32767).astype("<i2")


def transcript_of(name: str) -> str:
    path = Path(SHARED_AUDIO) / f"{name}.txt"
    return path.read_text().strip() if path.exists() else name


def encode(pcm: np.ndarray, fmt: dict[str, Any]) -> tuple[bytes, int]:
    """``pcm`` (int16) in the session's wire format: (bytes, bytes per ms)."""
    kind = fmt.get("type")
    if kind in ("audio/pcmu", "audio/pcma"):
        try:
            from gateway.codecs import g711

            data = g711.ulaw_encode(pcm) if kind == "audio/pcmu" else g711.alaw_encode(pcm)
        except ImportError:  # pragma: no cover - codec layer not there yet
            import audioop

            raw = pcm.astype("<i2").tobytes()
            data = audioop.lin2ulaw(raw, 2) if kind == "audio/pcmu" else audioop.lin2alaw(raw, 2)
        return data, 8
    return pcm.astype("<i2").tobytes(), 2 * int(fmt.get("rate", 24000)) // 1000


class _Recorder:
    """Shared bits: client message log, change notification, lifecycle."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.handshakes: list[tuple[str, dict[str, str]]] = []
        self._changed = asyncio.Condition()
        self._server: Any = None
        self.port = 0

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every message in or out)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == type_]


# ---------------------------------------------------------------------------- OpenAI Realtime


@dataclass
class Say:
    """One assistant audio item: a recording name and its transcript."""

    recording: str
    text: str | None = None


@dataclass
class Reply:
    """What the fake model answers to one ``response.create``."""

    items: list[Say] = field(default_factory=list)
    call: tuple[str, dict[str, Any]] | None = None  # (function name, arguments)
    hold_open: bool = False  # stay in progress after the audio until cancelled


_BETA = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}


class FakeRealtimeServer(_Recorder):
    """An OpenAI Realtime (GA) server on loopback.

    Args:
        api_key: the key the handshake must carry.
        auth: ``bearer`` (``Authorization``) or ``api-key`` (Azure).
        path: the upgrade path (``/v1/realtime``; Azure ``/openai/v1/realtime``).
        replies: answers to successive ``response.create`` events.
        user_transcripts: transcripts of successive committed caller turns.
        chunk_ms: audio per delta; pace_s: pause between deltas (0: as fast as possible).
        beta_names: send beta event names (``response.audio.delta`` …).
        truncate: support ``conversation.item.truncate`` / ``delete`` (else "unknown event").
        server_vad: emulate the server's turn detection when the session asks for it
            (``turn_detection`` of type ``server_vad`` / ``semantic_vad``, under
            ``audio.input`` or, xAI's shape, at the session's top level): an energy detector
            over the appended audio sends ``input_audio_buffer.speech_started`` after
            ``vad_start_ms`` of speech (and cancels the response in progress when
            ``interrupt_response``), then after the turn's ``silence_duration_ms`` (default
            500) of silence ``speech_stopped``, commits the turn and, with ``create_response``,
            starts the next reply, as OpenAI does. Off: the detector never runs.
        vad_threshold_dbfs / vad_start_ms: the detector's 20 ms frame energy threshold and the
            speech it needs before ``speech_started``.
    """

    def __init__(
        self,
        *,
        api_key: str = "test",
        auth: str = "bearer",
        path: str = "/v1/realtime",
        replies: list[Reply] | None = None,
        user_transcripts: list[str] | None = None,
        chunk_ms: int = 100,
        pace_s: float = 0.0,
        beta_names: bool = False,
        truncate: bool = True,
        server_vad: bool = False,
        vad_threshold_dbfs: float = -40.0,
        vad_start_ms: int = 60,
    ) -> None:
        super().__init__()
        self.server_vad = server_vad
        self.vad_threshold_dbfs = vad_threshold_dbfs
        self.vad_start_ms = vad_start_ms
        #: (event type, ms into the input audio) of every VAD event the server sent.
        self.vad_events: list[tuple[str, int]] = []
        self._vad_rest = b""  # input audio not yet a whole 20 ms frame
        self._vad_pos_ms = 0  # input audio the detector has seen (ms)
        self._vad_run_ms = 0  # current run of speech (not speaking) or silence (speaking)
        self._vad_onset_ms = 0
        self._vad_speaking = False
        self._vad_item = ""
        self.api_key = api_key
        self.auth = auth
        self.path = path
        self.replies = list(replies or [])
        self.user_transcripts = list(user_transcripts or [])
        self.chunk_ms = chunk_ms
        self.pace_s = pace_s
        self.beta_names = beta_names
        self.truncate = truncate
        self.session: dict[str, Any] = {}
        self.input_audio = bytearray()  # every appended byte, in order
        self.item_audio: dict[str, bytes] = {}  # item id -> audio bytes sent
        self.item_ms: dict[str, int] = {}  # item id -> ms of audio sent
        self.truncated: dict[str, int] = {}
        self.deleted: list[str] = []
        self.function_outputs: list[dict[str, Any]] = []
        self.responses_started = 0
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._conn: ServerConnection | None = None
        self._active: asyncio.Task[None] | None = None
        self._active_id: str | None = None
        self._cancel = asyncio.Event()

    # lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeRealtimeServer:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._check, logger=SERVER_LOG)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._active:
            self._active.cancel()
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        """What ``openai.AsyncOpenAI(websocket_base_url=…)`` takes."""
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.handshakes.append((request.path, headers))
        parts = urlsplit(request.path)
        if parts.path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if not parse_qs(parts.query).get("model"):
            return connection.respond(HTTPStatus.BAD_REQUEST, "model is required\n")
        if self.auth == "api-key":
            ok = headers.get("api-key") == self.api_key
        else:
            ok = headers.get("authorization") == f"Bearer {self.api_key}"
        if not ok:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided\n")
        return None

    # server → client -------------------------------------------------------------------

    def _eid(self) -> str:
        return f"event_{next(self._ids)}"

    async def push(self, event: dict[str, Any]) -> None:
        """Send one server event (GA name; renamed to beta when asked)."""
        event = {"event_id": self._eid(), **event}
        self.sent.append(event)
        wire = dict(event)
        if self.beta_names:
            wire["type"] = _BETA.get(wire["type"], wire["type"])
        if self._conn is not None:
            try:
                await self._conn.send(json.dumps(wire))
            except ConnectionClosed:
                pass
        await self._notify()

    async def error(self, message: str, code: str | None = None, *, type_: str = "invalid_request_error", event_id: str | None = None) -> None:
        await self.push({
            "type": "error",
            "error": {"type": type_, "code": code, "message": message, "event_id": event_id},
        })  # fmt: skip

    def drop(self) -> None:
        """Cut the TCP connection without a close frame."""
        if self._conn is not None:
            self._conn.transport.abort()

    # client → server -------------------------------------------------------------------

    async def _handler(self, conn: ServerConnection) -> None:
        self._conn = conn
        await self.push({
            "type": "session.created",
            "session": {"type": "realtime", "object": "realtime.session", "id": "sess_fake",
                        "model": "gpt-realtime", "output_modalities": ["audio"]},
        })  # fmt: skip
        try:
            async for raw in conn:
                msg = json.loads(raw)
                self.received.append(msg)
                await self._on(msg)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            if self._active:
                self._active.cancel()

    async def _on(self, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        eid = msg.get("event_id")
        if t == "session.update":
            self.session = msg["session"]
            await self.push({
                "type": "session.updated",
                "session": {"object": "realtime.session", "id": "sess_fake",
                            "model": "gpt-realtime", **self.session},
            })  # fmt: skip
        elif t == "input_audio_buffer.append":
            data = base64.b64decode(msg["audio"])
            self._buffer += data
            self.input_audio += data
            if self.server_vad and self.turn_detection() is not None:
                await self._vad_feed(data)
        elif t == "input_audio_buffer.commit":
            _, per_ms = encode(np.zeros(0, np.int16), self._in_format())
            if len(self._buffer) < 100 * per_ms:
                await self.error("buffer too small", "input_audio_buffer_commit_empty", event_id=eid)
                return
            await self._commit()
        elif t == "response.create":
            if self._active is not None and not self._active.done():
                await self.error("Conversation already has an active response in progress",
                                 "conversation_already_has_active_response", event_id=eid)  # fmt: skip
                return
            self._start_response()
        elif t == "response.cancel":
            if self._active is None or self._active.done():
                await self.error("Cancellation failed: no active response found",
                                 "response_cancel_not_active", event_id=eid)  # fmt: skip
            else:
                self._cancel.set()
                await self._active
        else:
            await self._on_item_event(t, msg, eid)

    async def _commit(self, item_id: str | None = None) -> None:
        """Commit the input buffer as a user item: committed, item added, its transcript."""
        _, per_ms = encode(np.zeros(0, np.int16), self._in_format())
        seconds = len(self._buffer) / per_ms / 1000
        self._buffer.clear()
        item_id = item_id or f"item_user_{next(self._ids)}"
        await self.push({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None})
        await self.push({
            "type": "conversation.item.added", "previous_item_id": None,
            "item": {"id": item_id, "type": "message", "role": "user", "object": "realtime.item",
                     "status": "completed", "content": [{"type": "input_audio", "transcript": None}]},
        })  # fmt: skip
        text = self.user_transcripts.pop(0) if self.user_transcripts else ""
        await self.push({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id, "content_index": 0, "transcript": text,
            "usage": {"type": "duration", "seconds": round(seconds, 3)},
        })  # fmt: skip

    def _start_response(self) -> None:
        reply = self.replies.pop(0) if self.replies else Reply([Say("speech/cards-001")])
        self.responses_started += 1
        self._cancel = asyncio.Event()
        self._active = asyncio.create_task(self._respond(reply))

    async def _on_item_event(self, t: Any, msg: dict[str, Any], eid: Any) -> None:
        if t in ("conversation.item.truncate", "conversation.item.delete") and not self.truncate:
            await self.error(f"Unknown event type: {t}", "unknown_event", event_id=eid)
        elif t == "conversation.item.truncate":
            item, end = msg["item_id"], msg["audio_end_ms"]
            if item not in self.item_ms or end > self.item_ms[item]:
                await self.error("audio_end_ms is longer than the audio", "invalid_value", event_id=eid)
                return
            self.truncated[item] = end
            await self.push({"type": "conversation.item.truncated", "item_id": item,
                             "content_index": 0, "audio_end_ms": end})  # fmt: skip
        elif t == "conversation.item.delete":
            self.deleted.append(msg["item_id"])
            await self.push({"type": "conversation.item.deleted", "item_id": msg["item_id"]})
        elif t == "conversation.item.create":
            item = dict(msg["item"])
            item.setdefault("id", f"item_{next(self._ids)}")
            if item.get("type") == "function_call_output":
                self.function_outputs.append(item)
            await self.push({"type": "conversation.item.added", "item": item, "previous_item_id": None})

    # server-side turn detection -------------------------------------------------------

    def turn_detection(self) -> dict[str, Any] | None:
        """The session's ``turn_detection`` (GA: under ``audio.input``; xAI: top level)."""
        td = ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        if td is None:
            td = self.session.get("turn_detection")
        return td if isinstance(td, dict) and td.get("type") in ("server_vad", "semantic_vad") else None

    async def _vad_feed(self, data: bytes) -> None:
        """Run the energy detector over newly appended audio, 20 ms at a time."""
        fmt = self._in_format()
        td = self.turn_detection() or {}
        _, per_ms = encode(np.zeros(0, np.int16), fmt)
        frame = 20 * per_ms
        buf = self._vad_rest + data
        whole = len(buf) - len(buf) % frame
        self._vad_rest = buf[whole:]
        for i in range(0, whole, frame):
            chunk = buf[i : i + frame]
            if fmt.get("type") in ("audio/pcmu", "audio/pcma"):
                from gateway.codecs import g711

                pcm = (g711.ulaw_decode if fmt["type"] == "audio/pcmu" else g711.alaw_decode)(chunk)
            else:
                pcm = np.frombuffer(chunk, "<i2")
            power = float(np.mean(pcm.astype(np.float64) ** 2)) / 32768.0**2
            loud = 10 * np.log10(power + 1e-12) > self.vad_threshold_dbfs
            self._vad_pos_ms += 20
            if not self._vad_speaking:
                self._vad_run_ms = self._vad_run_ms + 20 if loud else 0
                if self._vad_run_ms >= self.vad_start_ms:
                    await self._vad_start(self._vad_pos_ms - self._vad_run_ms, td)
            else:
                self._vad_run_ms = 0 if loud else self._vad_run_ms + 20
                if self._vad_run_ms >= int(td.get("silence_duration_ms") or 500):
                    await self._vad_stop(self._vad_pos_ms - self._vad_run_ms, td)

    async def _vad_start(self, onset_ms: int, td: dict[str, Any]) -> None:
        self._vad_speaking, self._vad_run_ms, self._vad_onset_ms = True, 0, onset_ms
        self._vad_item = f"item_user_{next(self._ids)}"
        self.vad_events.append(("speech_started", onset_ms))
        await self.push({"type": "input_audio_buffer.speech_started", "audio_start_ms": onset_ms, "item_id": self._vad_item})
        if td.get("interrupt_response", True) and self._active is not None and not self._active.done():
            self._cancel.set()  # the server stops its own reply; the client truncates
            await self._active

    async def _vad_stop(self, end_ms: int, td: dict[str, Any]) -> None:
        self._vad_speaking, self._vad_run_ms = False, 0
        self.vad_events.append(("speech_stopped", end_ms))
        await self.push({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": self._vad_item})
        await self._commit(self._vad_item)
        if td.get("create_response", True) and (self._active is None or self._active.done()):
            self._start_response()

    def _in_format(self) -> dict[str, Any]:
        return ((self.session.get("audio") or {}).get("input") or {}).get("format") or {"type": "audio/pcm", "rate": 24000}

    def _out_format(self) -> dict[str, Any]:
        return ((self.session.get("audio") or {}).get("output") or {}).get("format") or {"type": "audio/pcm", "rate": 24000}

    async def _respond(self, reply: Reply) -> None:
        rid = f"resp_{next(self._ids)}"
        self._active_id = rid
        outputs: list[dict[str, Any]] = []
        status = "completed"
        await self.push({"type": "response.created",
                         "response": {"id": rid, "object": "realtime.response", "status": "in_progress", "output": []}})  # fmt: skip
        for index, say in enumerate(reply.items):
            item_id = f"item_{next(self._ids)}"
            text = say.text if say.text is not None else transcript_of(say.recording)
            fmt = self._out_format()
            audio, per_ms = encode(speech(say.recording, 8000 if fmt.get("type") != "audio/pcm" else int(fmt.get("rate", 24000))), fmt)
            base = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
            item = {"id": item_id, "type": "message", "role": "assistant", "object": "realtime.item",
                    "status": "in_progress", "content": []}  # fmt: skip
            await self.push({"type": "response.output_item.added", "response_id": rid, "output_index": index, "item": item})
            await self.push({"type": "response.content_part.added", **base, "part": {"type": "audio", "transcript": ""}})
            words = text.split()
            step = self.chunk_ms * per_ms
            chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
            sent_words = 0
            self.item_audio[item_id] = b""
            self.item_ms[item_id] = 0
            for n, chunk in enumerate(chunks, 1):
                if self._cancel.is_set():
                    status = "cancelled"
                    break
                await self.push({"type": "response.output_audio.delta", **base, "delta": base64.b64encode(chunk).decode()})
                self.item_audio[item_id] += chunk
                self.item_ms[item_id] = len(self.item_audio[item_id]) // per_ms
                upto = len(words) * n // len(chunks)
                if upto > sent_words:
                    delta = " ".join(words[sent_words:upto]) + ("" if upto == len(words) else " ")
                    await self.push({"type": "response.output_audio_transcript.delta", **base, "delta": delta})
                    sent_words = upto
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)
                else:
                    await asyncio.sleep(0)
            spoken = " ".join(words[:sent_words])
            if status == "cancelled":
                outputs.append({**item, "status": "incomplete", "content": [{"type": "output_audio", "transcript": spoken}]})
                break
            await self.push({"type": "response.output_audio.done", **base})
            await self.push({"type": "response.output_audio_transcript.done", **base, "transcript": text})
            await self.push({"type": "response.content_part.done", **base, "part": {"type": "audio", "transcript": text}})
            done_item = {**item, "status": "completed", "content": [{"type": "output_audio", "transcript": text}]}
            await self.push({"type": "response.output_item.done", "response_id": rid, "output_index": index, "item": done_item})
            outputs.append(done_item)
        if reply.call is not None and status == "completed":
            name, args = reply.call
            item_id, call_id = f"item_{next(self._ids)}", f"call_{next(self._ids)}"
            index = len(outputs)
            arguments = json.dumps(args)
            item = {"id": item_id, "type": "function_call", "object": "realtime.item", "status": "in_progress",
                    "name": name, "call_id": call_id, "arguments": ""}  # fmt: skip
            await self.push({"type": "response.output_item.added", "response_id": rid, "output_index": index, "item": item})
            await self.push({"type": "response.function_call_arguments.done", "response_id": rid, "item_id": item_id,
                             "output_index": index, "call_id": call_id, "name": name, "arguments": arguments})  # fmt: skip
            outputs.append({**item, "status": "completed", "arguments": arguments})
        if reply.hold_open and status == "completed":
            await self._cancel.wait()
            status = "cancelled"
        await self.push({"type": "response.done",
                         "response": {"id": rid, "object": "realtime.response", "status": status, "output": outputs}})  # fmt: skip
        self._active_id = None


# ---------------------------------------------------------------------------- Gemini Live


@dataclass
class _LiveSession:
    """Server-side session state: what a resumption handle restores."""

    audio: bytearray = field(default_factory=bytearray)
    messages: int = 0


class FakeLiveServer(_Recorder):
    """A Gemini Live ``BidiGenerateContent`` server on loopback.

    Args:
        api_key: the key ``x-goog-api-key`` must carry; a wrong key gets a 1008 close after
            ``setup`` as Google does ("API key not valid").
        replies: recordings the model speaks for successive turns (greeting first).
        user_transcripts: input transcriptions of successive caller turns.
        chunk_ms / pace_s: audio per ``inlineData`` part and pause between parts.
        handle_after_turn: issue a ``sessionResumptionUpdate`` after every ``turnComplete``.
        handle_with_input: defer those updates (and issue one after an ``interrupted`` turn
            too) until right after the next caller input message is processed, as a server
            that cuts its resumable state between two input messages: no caller input is then
            in flight when the handle is taken, so a resumption can be checked byte for byte
            while a caller streams audio without pause (the end-to-end tests do).
    """

    def __init__(
        self,
        *,
        api_key: str = "test",
        replies: list[str] | None = None,
        user_transcripts: list[str] | None = None,
        chunk_ms: int = 100,
        pace_s: float = 0.0,
        handle_after_turn: bool = True,
        tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
        reject_status: int | None = None,
        handle_with_input: bool = False,
    ) -> None:
        super().__init__()
        self.handle_with_input = handle_with_input
        self._handle_due = False
        self.api_key = api_key
        self.reject_status = reject_status
        self.replies = list(replies or [])
        self.user_transcripts = list(user_transcripts or [])
        self.chunk_ms = chunk_ms
        self.pace_s = pace_s
        self.handle_after_turn = handle_after_turn
        self.tool_calls = list(tool_calls or [])
        self.setups: list[dict[str, Any]] = []
        self.greetings = 0
        self.tool_responses: list[dict[str, Any]] = []
        self.handles: dict[str, bytes] = {}  # handle -> caller audio its state holds
        self.session = _LiveSession()
        self.turn_audio: dict[int, int] = {}  # turn number -> bytes of audio sent
        self.turn_text: dict[int, str] = {}
        self.connections = 0
        self._conn: ServerConnection | None = None
        self._speaking: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._turns = 0

    async def __aenter__(self) -> FakeLiveServer:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._check, logger=SERVER_LOG)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._speaking:
            self._speaking.cancel()
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{GEMINI_PATH}"

    def _check(self, connection: ServerConnection, request: Any) -> Any:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.handshakes.append((request.path, headers))
        if urlsplit(request.path).path != GEMINI_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.reject_status:
            return connection.respond(HTTPStatus(self.reject_status), "rejected\n")
        return None

    async def push(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)
        if self._conn is not None:
            try:
                await self._conn.send(json.dumps(msg).encode())  # Google sends binary frames
            except ConnectionClosed:
                pass
        await self._notify()

    async def go_away(self, time_left: str = "5s") -> None:
        await self.push({"goAway": {"timeLeft": time_left}})

    async def issue_handle(self) -> str:
        handle = f"handle-{next(self._ids)}"
        self.handles[handle] = bytes(self.session.audio)
        await self.push({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
        return handle

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.transport.abort()

    async def _handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        try:
            setup = json.loads(await conn.recv())
            self.received.append(setup)
            self.setups.append(setup)
            headers = {k.lower(): v for k, v in conn.request.headers.raw_items()}
            if headers.get("x-goog-api-key") != self.api_key:
                await conn.close(1008, "API key not valid. Please pass a valid API key.")
                return
            handle = (setup.get("setup", {}).get("sessionResumption") or {}).get("handle")
            if handle:
                if handle not in self.handles:
                    await conn.close(1008, "Invalid session resumption handle")
                    return
                self.session = _LiveSession(bytearray(self.handles[handle]))
            else:
                self.session = _LiveSession()
            if self._conn is not None and self._conn is not conn:
                await self._conn.close()  # one live connection per session
            self._conn = conn
            await self.push({"setupComplete": {}})
            async for raw in conn:
                msg = json.loads(raw)
                self.received.append(msg)
                await self._on(msg)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            if self._conn is conn:
                if self._speaking:
                    self._speaking.cancel()
                self._conn = None
            await self._notify()

    async def _on(self, msg: dict[str, Any]) -> None:
        self.session.messages += 1
        if "clientContent" in msg:
            self.greetings += 1
            self._start_turn()
        elif "toolResponse" in msg:
            self.tool_responses.append(msg["toolResponse"])
            self._start_turn()
        elif "realtimeInput" in msg:
            ri = msg["realtimeInput"]
            if "audio" in ri:
                self.session.audio += base64.b64decode(ri["audio"]["data"])
            if "activityStart" in ri and self._speaking and not self._speaking.done():
                self._speaking.cancel()
                await self.push({"serverContent": {"interrupted": True}})
                if self.handle_after_turn and self.handle_with_input:
                    self._handle_due = True
            if "activityEnd" in ri:
                if self.user_transcripts:
                    await self.push({"serverContent": {"inputTranscription": {"text": self.user_transcripts.pop(0)}}})
                if self.tool_calls:
                    name, args = self.tool_calls.pop(0)
                    await self.push({"toolCall": {"functionCalls": [{"id": f"fc-{next(self._ids)}", "name": name, "args": args}]}})
                else:
                    self._start_turn()
            if self._handle_due:
                self._handle_due = False
                await self.issue_handle()

    def _start_turn(self) -> None:
        recording = self.replies.pop(0) if self.replies else "speech/cards-001"
        self._turns += 1
        self._speaking = asyncio.create_task(self._speak(self._turns, recording))

    async def _speak(self, turn: int, recording: str) -> None:
        pcm = speech(recording, 24000).tobytes()
        words = transcript_of(recording).split()
        step = self.chunk_ms * 48
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        self.turn_audio[turn] = 0
        self.turn_text[turn] = " ".join(words)
        sent = 0
        for n, chunk in enumerate(chunks, 1):
            part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(chunk).decode()}}
            await self.push({"serverContent": {"modelTurn": {"parts": [part]}}})
            self.turn_audio[turn] += len(chunk)
            upto = len(words) * n // len(chunks)
            if upto > sent:
                text = " ".join(words[sent:upto]) + " "
                await self.push({"serverContent": {"outputTranscription": {"text": text}}})
                sent = upto
            await asyncio.sleep(self.pace_s)
        await self.push({"serverContent": {"generationComplete": True}})
        await self.push({"serverContent": {"turnComplete": True}})
        if self.handle_after_turn and self.handle_with_input:
            self._handle_due = True
        elif self.handle_after_turn:
            await self.issue_handle()


# ---------------------------------------------------------------------------- bridge side


class Collector:
    """Runs ``bridge.events()`` in a task (as the call session does) and records the events.

    ``async with Collector(bridge) as c`` closes the bridge and waits for the events to end.
    """

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.events: list[Any] = []
        self.finished = False
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for ev in self.bridge.events():
                self.events.append(ev)
                async with self._cond:
                    self._cond.notify_all()
        finally:
            self.finished = True
            async with self._cond:
                self._cond.notify_all()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bridge.close()
        assert self._task is not None
        async with asyncio.timeout(5):
            await self._task

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(lambda: predicate() or self.finished)
        assert predicate(), f"events ended first: {[e for e in self.events if type(e).__name__ != 'AudioOut']}"

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def audio(self, item_id: str | None = None) -> bytes:
        return b"".join(e.audio for e in self.events if type(e).__name__ == "AudioOut" and (item_id is None or e.item_id == item_id))

    def items(self) -> list[str]:
        return list(dict.fromkeys(e.item_id for e in self.events if type(e).__name__ == "AudioOut"))
