"""A loopback server speaking the OpenAI Realtime wire protocol (GA, or beta event names).

A real ``websockets`` server on 127.0.0.1 that checks the handshake (path, ``model`` query and
key header as OpenAI and Azure do), records every client message, and answers with scripted
replies whose audio is real recorded speech from ``../shared/audio`` streamed as deltas. It keeps
the server-side state a bridge must stay in step with: the audio sent per item (truncate
bounds) and the active response (cancel); optionally it emulates server-side turn detection.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.llm.fake_common import _Recorder, encode, speech, transcript_of

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


@dataclass
class SessionLog:
    """One connection (one model session): what the client sent on it."""

    received: list[dict[str, Any]] = field(default_factory=list)
    input_audio: bytearray = field(default_factory=bytearray)
    closed: bool = False
    response_active_at_close: bool = False  # a reply was still streaming when it ended
    commits: list[int] = field(default_factory=list)  # len(input_audio) at each commit

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == type_]


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
        session_limit_s: end each session this long after it opened as OpenAI does at 60 min
            (``error`` ``session_expired``, then close 1000); ``None``: never.

    Every connection is one session: :attr:`sessions` logs each one's messages and audio;
    :attr:`refuse_status` (e.g. 503) makes later handshakes fail with that HTTP status;
    :attr:`reopen_delay_s` delays the handshakes after the first (a slow reconnect).
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
        session_limit_s: float | None = None,
    ) -> None:
        super().__init__()
        self.session_limit_s = session_limit_s
        self.sessions: list[SessionLog] = []
        self.refuse_status: int | None = None
        self.reopen_delay_s = 0.0
        self.expired = 0  # sessions the server ended at its limit
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
        self._active: asyncio.Task[None] | None = None
        self._active_id: str | None = None
        self._cancel = asyncio.Event()

    # lifecycle -------------------------------------------------------------------------

    def _cancel_tasks(self) -> None:
        if self._active:
            self._active.cancel()

    @property
    def base_url(self) -> str:
        """What ``openai.AsyncOpenAI(websocket_base_url=…)`` takes."""
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    async def _check(self, connection: ServerConnection, request: Any) -> Any:
        reopening = bool(self.handshakes)
        headers = self._record_handshake(request)
        if self.reopen_delay_s and reopening:
            await asyncio.sleep(self.reopen_delay_s)
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
        if self.refuse_status is not None:
            return connection.respond(HTTPStatus(self.refuse_status), "unavailable\n")
        return None

    # server → client -------------------------------------------------------------------

    def _eid(self) -> str:
        return f"event_{next(self._ids)}"

    async def push(self, event: dict[str, Any]) -> None:
        """Send one server event (GA name; renamed to beta when asked)."""
        event = {"event_id": self._eid(), **event}
        wire = dict(event)
        if self.beta_names:
            wire["type"] = _BETA.get(wire["type"], wire["type"])
        await self._send(event, json.dumps(wire))

    async def error(self, message: str, code: str | None = None, *, type_: str = "invalid_request_error", event_id: str | None = None) -> None:
        await self.push({
            "type": "error",
            "error": {"type": type_, "code": code, "message": message, "event_id": event_id},
        })  # fmt: skip

    # client → server -------------------------------------------------------------------

    async def _handler(self, conn: ServerConnection) -> None:
        self._conn = conn
        log = SessionLog()
        self.sessions.append(log)
        self._buffer.clear()  # a new session: its own input buffer and turn detection
        self._vad_rest, self._vad_run_ms, self._vad_speaking = b"", 0, False
        await self.push({
            "type": "session.created",
            "session": {"type": "realtime", "object": "realtime.session", "id": "sess_fake",
                        "model": "gpt-realtime", "output_modalities": ["audio"]},
        })  # fmt: skip
        expiry = None
        if self.session_limit_s is not None:
            expiry = asyncio.get_running_loop().call_later(
                self.session_limit_s, lambda: asyncio.ensure_future(self._expire(conn))
            )
        try:
            async for raw in conn:
                msg = json.loads(raw)
                self.received.append(msg)
                log.received.append(msg)
                if msg.get("type") == "input_audio_buffer.append":
                    log.input_audio += base64.b64decode(msg["audio"])
                elif msg.get("type") == "input_audio_buffer.commit":
                    log.commits.append(len(log.input_audio))
                await self._on(msg)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            log.closed = True
            if self._conn is conn:
                log.response_active_at_close = self._active is not None and not self._active.done()
            if expiry is not None:
                expiry.cancel()
            if self._conn is conn:
                self._cancel_tasks()
            await self._notify()

    async def _expire(self, conn: ServerConnection) -> None:
        """The session limit: ``session_expired``, then a normal close (as OpenAI ends it)."""
        if conn is not self._conn:
            return
        self.expired += 1
        await self.error("Your session hit the maximum duration of 60 minutes.", "session_expired")
        await conn.close(1000, "session expired")

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
